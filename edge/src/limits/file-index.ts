/**
 * A tenant's uploads, as its TenantLimiter keeps them in SQLite: the index is
 * the authority on which files exist, so a file that is not in it (deleted,
 * expired, or never committed) is not found, whatever R2 still holds.
 *
 *   files(sha256, key, bytes, content_type, filename, created_at, expires_at)
 *   pending(id, bytes, at)    uploads in progress, counted against the quota
 *
 * An upload first reserves its bytes and one file (refused when the quota
 * would be exceeded), then is committed (the reservation becomes the file, or
 * refreshes it when the same bytes were uploaded before) or released.
 */

export interface FileRecord {
  sha256: string;
  /** The R2 object holding the bytes. */
  key: string;
  bytes: number;
  contentType: string;
  filename: string;
  createdAt: number;
  expiresAt: number;
}

export interface StorageQuota {
  bytes: number;
  files: number;
}

export interface StorageUse {
  bytes: number;
  files: number;
}

export interface Reservation {
  ok: boolean;
  /** Why it was refused: the file alone exceeds the byte quota, or the tenant's uploads would. */
  refusedBy?: "file_too_large" | "bytes" | "files";
  used: StorageUse;
  quota: StorageQuota;
  /** When refused: milliseconds until the oldest upload expires (and frees its share). */
  retryAfterMs: number;
}

/** A reservation whose upload neither committed nor released by then is forgotten. */
export const PENDING_MS = 10 * 60_000;

interface FileRow extends Record<string, SqlStorageValue> {
  sha256: string;
  key: string;
  bytes: number;
  content_type: string;
  filename: string;
  created_at: number;
  expires_at: number;
}

const toRecord = (r: FileRow): FileRecord => ({
  sha256: r.sha256,
  key: r.key,
  bytes: r.bytes,
  contentType: r.content_type,
  filename: r.filename,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
});

export class FileIndex {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(`CREATE TABLE IF NOT EXISTS files (
      sha256 TEXT PRIMARY KEY, key TEXT NOT NULL, bytes INTEGER NOT NULL, content_type TEXT NOT NULL,
      filename TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL)`);
    sql.exec("CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, bytes INTEGER NOT NULL, at INTEGER NOT NULL)");
  }

  /** Bytes and files held by live files and pending uploads. */
  use(now: number): StorageUse {
    const f = this.sql
      .exec<{ n: number; b: number | null }>(
        "SELECT count(*) AS n, sum(bytes) AS b FROM files WHERE expires_at > ?",
        now,
      )
      .one();
    const p = this.sql
      .exec<{ n: number; b: number | null }>(
        "SELECT count(*) AS n, sum(bytes) AS b FROM pending WHERE at > ?",
        now - PENDING_MS,
      )
      .one();
    return { bytes: (f.b ?? 0) + (p.b ?? 0), files: f.n + p.n };
  }

  /**
   * Reserves room for an upload of `bytes`, or says which part of the quota
   * refuses it. An upload of bytes the tenant already stores (`sha256`, when
   * known before storing) needs no room.
   */
  reserve(id: string, bytes: number, quota: StorageQuota, now: number, sha256?: string): Reservation {
    this.sql.exec("DELETE FROM pending WHERE at <= ?", now - PENDING_MS);
    const used = this.use(now);
    if (sha256 && this.get(sha256, now)) return { ok: true, used, quota, retryAfterMs: 0 };
    let refusedBy: Reservation["refusedBy"];
    if (bytes > quota.bytes) refusedBy = "file_too_large";
    else if (used.files + 1 > quota.files) refusedBy = "files";
    else if (used.bytes + bytes > quota.bytes) refusedBy = "bytes";
    if (refusedBy) {
      const oldest = this.sql
        .exec<{ e: number | null }>("SELECT min(expires_at) AS e FROM files WHERE expires_at > ?", now)
        .one().e;
      return { ok: false, refusedBy, used, quota, retryAfterMs: oldest === null ? PENDING_MS : oldest - now };
    }
    this.sql.exec("INSERT OR REPLACE INTO pending (id, bytes, at) VALUES (?, ?, ?)", id, bytes, now);
    return { ok: true, used: { bytes: used.bytes + bytes, files: used.files + 1 }, quota, retryAfterMs: 0 };
  }

  /** Turns a reservation into the file (an upload of bytes already stored refreshes that file's expiry). */
  commit(id: string, file: Omit<FileRecord, "expiresAt">, ttlMs: number): FileRecord {
    this.sql.exec("DELETE FROM pending WHERE id = ?", id);
    const record = { ...file, expiresAt: file.createdAt + ttlMs };
    this.sql.exec(
      `INSERT OR REPLACE INTO files (sha256, key, bytes, content_type, filename, created_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
      record.sha256,
      record.key,
      record.bytes,
      record.contentType,
      record.filename,
      record.createdAt,
      record.expiresAt,
    );
    return record;
  }

  /** Gives a reservation back (the upload failed or was refused). */
  release(id: string): void {
    this.sql.exec("DELETE FROM pending WHERE id = ?", id);
  }

  /** A live file by its SHA-256, or null. */
  get(sha256: string, now: number): FileRecord | null {
    const row = this.sql
      .exec<FileRow>("SELECT * FROM files WHERE sha256 = ? AND expires_at > ?", sha256, now)
      .toArray()[0];
    return row ? toRecord(row) : null;
  }

  /** Removes a file from the index, live or expired; its record (for deleting its bytes), or null when there was none. */
  remove(sha256: string): FileRecord | null {
    const row = this.sql.exec<FileRow>("SELECT * FROM files WHERE sha256 = ?", sha256).toArray()[0];
    this.sql.exec("DELETE FROM files WHERE sha256 = ?", sha256);
    return row ? toRecord(row) : null;
  }

  /** Removes the expired files from the index and returns them (their bytes are the caller's to delete). */
  takeExpired(now: number): FileRecord[] {
    const rows = this.sql.exec<FileRow>("SELECT * FROM files WHERE expires_at <= ?", now).toArray();
    this.sql.exec("DELETE FROM files WHERE expires_at <= ?", now);
    return rows.map(toRecord);
  }

  /** When the next file expires (ms since the epoch), or null when none will. */
  nextExpiry(): number | null {
    return this.sql.exec<{ e: number | null }>("SELECT min(expires_at) AS e FROM files").one().e;
  }
}
