/**
 * One TenantLimiter Durable Object per tenant holds the authoritative state of
 * its limits in SQLite, over a sliding one-minute window:
 *
 *   grants(id, at, tokens, open)   one row per admitted request
 *   requests in window = rows with at > now - 60 s
 *   tokens in window   = sum(tokens) of those rows
 *   concurrent streams = rows still open (a lease; stale after LEASE_MS)
 *
 * `admit` reserves prompt tokens + max_tokens up front; `settle` replaces the
 * reservation with the tokens actually used (refunding the rest, or charging
 * the difference when the prompt estimate was low) and closes the lease. A Durable Object handles one call at a time, so 50 parallel
 * admissions against a limit of 10 admit exactly 10.
 *
 * It also keeps the tenant's uploads (file-index.ts): the storage quota, and
 * their expiry, which an alarm enforces by deleting expired files from R2.
 */
import { DurableObject } from "cloudflare:workers";
import type { TenantLimits } from "../auth/store.js";
import { FileIndex, type FileRecord, type Reservation, type StorageQuota, type StorageUse } from "./file-index.js";

export const WINDOW_MS = 60_000;
/** An open lease older than this counts as closed (its settle was lost). */
export const LEASE_MS = 15 * 60_000;

export interface Budget {
  limit: number;
  remaining: number;
  /** Milliseconds until the window holds none of today's use again. */
  resetMs: number;
}

export interface Admission {
  ok: boolean;
  /** Which limit refused the request. */
  refusedBy?: "requests" | "tokens" | "concurrency" | "request_too_large";
  /** When refused: milliseconds until a retry can succeed. */
  retryAfterMs: number;
  requests: Budget;
  tokens: Budget;
  concurrency: { limit: number; open: number };
}

interface GrantRow extends Record<string, SqlStorageValue> {
  at: number;
  tokens: number;
}

export class TenantLimiter extends DurableObject {
  private readonly sql: SqlStorage;
  private readonly files: FileIndex;
  /** Where the uploads' bytes are (the Worker's R2 binding). */
  private readonly bucket: R2Bucket;

  /** Of the Worker's bindings it reads only FILES (typed here: env.ts names this class, so it does not import env.ts). */
  constructor(ctx: DurableObjectState, env: { FILES: R2Bucket }) {
    super(ctx, env as never);
    this.bucket = env.FILES;
    this.sql = ctx.storage.sql;
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS grants (
         id TEXT PRIMARY KEY, at INTEGER NOT NULL, tokens INTEGER NOT NULL, open INTEGER NOT NULL)`,
    );
    this.files = new FileIndex(this.sql);
  }

  /** Admits a request reserving `tokens`, or says which limit refuses it and for how long. */
  admit(id: string, tokens: number, limits: TenantLimits, now = Date.now()): Admission {
    this.sql.exec("DELETE FROM grants WHERE at <= ? AND open = 0", now - WINDOW_MS);
    const window = this.sql
      .exec<GrantRow>("SELECT at, tokens FROM grants WHERE at > ? ORDER BY at", now - WINDOW_MS)
      .toArray();
    const open = this.sql
      .exec<{ n: number }>("SELECT count(*) AS n FROM grants WHERE open = 1 AND at > ?", now - LEASE_MS)
      .one().n;
    const usedTokens = window.reduce((s, g) => s + g.tokens, 0);
    let refusedBy: Admission["refusedBy"];
    let retryAfterMs = 0;
    if (window.length >= limits.requestsPerMinute) {
      refusedBy = "requests";
      retryAfterMs = window[window.length - limits.requestsPerMinute].at + WINDOW_MS - now;
    } else if (tokens > limits.tokensPerMinute) {
      refusedBy = "request_too_large";
      retryAfterMs = WINDOW_MS;
    } else if (usedTokens + tokens > limits.tokensPerMinute) {
      refusedBy = "tokens";
      retryAfterMs = freedAfter(window, usedTokens + tokens - limits.tokensPerMinute, now);
    } else if (open >= limits.concurrentStreams) {
      refusedBy = "concurrency";
      retryAfterMs = 1000;
    }
    const ok = refusedBy === undefined;
    if (ok) {
      this.sql.exec("INSERT OR REPLACE INTO grants (id, at, tokens, open) VALUES (?, ?, ?, 1)", id, now, tokens);
      window.push({ at: now, tokens });
    }
    const lastAt = window.length > 0 ? window[window.length - 1].at : now - WINDOW_MS;
    const resetMs = Math.max(0, lastAt + WINDOW_MS - now);
    return {
      ok,
      refusedBy,
      retryAfterMs: Math.max(0, retryAfterMs),
      requests: {
        limit: limits.requestsPerMinute,
        remaining: Math.max(0, limits.requestsPerMinute - window.length),
        resetMs,
      },
      tokens: {
        limit: limits.tokensPerMinute,
        remaining: Math.max(0, limits.tokensPerMinute - usedTokens - (ok ? tokens : 0)),
        resetMs,
      },
      concurrency: { limit: limits.concurrentStreams, open: open + (ok ? 1 : 0) },
    };
  }

  /** Ends a request: records the tokens it really used in place of its reservation, closes its lease. */
  settle(id: string, usedTokens: number): void {
    this.sql.exec("UPDATE grants SET tokens = ?, open = 0 WHERE id = ?", Math.max(0, Math.round(usedTokens)), id);
  }

  /** The tenant's current use (for tests and operators). */
  usage(now = Date.now()): { requests: number; tokens: number; open: number; storage: StorageUse } {
    const r = this.sql
      .exec<{ n: number; t: number | null }>(
        "SELECT count(*) AS n, sum(tokens) AS t FROM grants WHERE at > ?",
        now - WINDOW_MS,
      )
      .one();
    const open = this.sql
      .exec<{ n: number }>("SELECT count(*) AS n FROM grants WHERE open = 1 AND at > ?", now - LEASE_MS)
      .one().n;
    return { requests: r.n, tokens: r.t ?? 0, open, storage: this.files.use(now) };
  }

  /** Reserves room for an upload of `bytes` under the quota, or says why not (see FileIndex.reserve). */
  reserveUpload(id: string, bytes: number, quota: StorageQuota, sha256?: string, now = Date.now()): Reservation {
    return this.files.reserve(id, bytes, quota, now, sha256);
  }

  /** Records a stored upload in place of its reservation, and makes sure the alarm will expire it. */
  async commitUpload(id: string, file: Omit<FileRecord, "expiresAt">, ttlMs: number): Promise<FileRecord> {
    const record = this.files.commit(id, file, ttlMs);
    await this.scheduleExpiry();
    return record;
  }

  /** Gives back the reservation of an upload that failed. */
  releaseUpload(id: string): void {
    this.files.release(id);
  }

  /** A live upload by its SHA-256, or null (an expired one is removed on the way, bytes and all). */
  async getFile(sha256: string, now = Date.now()): Promise<FileRecord | null> {
    const record = this.files.get(sha256, now);
    if (!record) await this.expire(now);
    return record;
  }

  /** Deletes an upload (index entry and bytes); false when the tenant has no such live upload. */
  async deleteFile(sha256: string, now = Date.now()): Promise<boolean> {
    const record = this.files.remove(sha256);
    if (!record) return false;
    await this.bucket.delete(record.key);
    return record.expiresAt > now;
  }

  /** The alarm: removes every expired upload and sets itself for the next expiry. */
  override async alarm(): Promise<void> {
    await this.expire(Date.now());
    await this.scheduleExpiry();
  }

  private async expire(now: number): Promise<void> {
    const expired = this.files.takeExpired(now);
    if (expired.length > 0) await this.bucket.delete(expired.map((f) => f.key));
  }

  private async scheduleExpiry(): Promise<void> {
    const next = this.files.nextExpiry();
    if (next === null) await this.ctx.storage.deleteAlarm();
    else if ((await this.ctx.storage.getAlarm()) !== next) await this.ctx.storage.setAlarm(next);
  }
}

/** Milliseconds until grants holding at least `excess` tokens leave the window. */
function freedAfter(window: GrantRow[], excess: number, now: number): number {
  let freed = 0;
  for (const g of window) {
    freed += g.tokens;
    if (freed >= excess) return g.at + WINDOW_MS - now;
  }
  return WINDOW_MS;
}
