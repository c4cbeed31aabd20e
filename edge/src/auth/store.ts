/**
 * Tenants and API key hashes in D1 (see migrations/). D1 reads go to the
 * primary, so a revoked key is refused by the very next request.
 */

export interface TenantLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
  concurrentStreams: number;
}

/** A tenant's own storage quota for uploads; null: the edge's default (STORAGE_QUOTA_BYTES / _FILES). */
export interface TenantStorage {
  bytes: number | null;
  files: number | null;
}

export interface Tenant {
  id: string;
  name: string;
  limits: TenantLimits;
  storage: TenantStorage;
  /** Models the tenant may use; empty means every configured model. */
  models: string[];
}

export interface IssuedKey {
  id: string;
  tenantId: string;
  prefix: string;
  createdAt: number;
}

interface TenantRow {
  id: string;
  name: string;
  requests_per_minute: number;
  tokens_per_minute: number;
  concurrent_streams: number;
  storage_bytes: number | null;
  storage_files: number | null;
  models: string;
}

const toTenant = (r: TenantRow): Tenant => ({
  id: r.id,
  name: r.name,
  limits: {
    requestsPerMinute: r.requests_per_minute,
    tokensPerMinute: r.tokens_per_minute,
    concurrentStreams: r.concurrent_streams,
  },
  storage: { bytes: r.storage_bytes, files: r.storage_files },
  models: JSON.parse(r.models) as string[],
});

/** The tenant owning the key with this hash, unless the key is unknown or revoked. */
export async function tenantByKeyHash(db: D1Database, hash: string): Promise<Tenant | null> {
  const row = await db
    .prepare(
      `SELECT t.id, t.name, t.requests_per_minute, t.tokens_per_minute, t.concurrent_streams,
              t.storage_bytes, t.storage_files, t.models
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
        WHERE k.hash = ?1 AND k.revoked_at IS NULL`,
    )
    .bind(hash)
    .first<TenantRow>();
  return row ? toTenant(row) : null;
}

export async function getTenant(db: D1Database, id: string): Promise<Tenant | null> {
  const row = await db.prepare("SELECT * FROM tenants WHERE id = ?1").bind(id).first<TenantRow>();
  return row ? toTenant(row) : null;
}

/** Inserts a tenant; `ifAbsent` keeps an existing one unchanged (used by the dev seed). */
export async function putTenant(db: D1Database, t: Tenant, ifAbsent = false): Promise<void> {
  await db
    .prepare(
      `INSERT ${ifAbsent ? "OR IGNORE" : ""} INTO tenants
         (id, name, requests_per_minute, tokens_per_minute, concurrent_streams, storage_bytes, storage_files,
          models, created_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)`,
    )
    .bind(
      t.id,
      t.name,
      t.limits.requestsPerMinute,
      t.limits.tokensPerMinute,
      t.limits.concurrentStreams,
      t.storage.bytes,
      t.storage.files,
      JSON.stringify(t.models),
      Date.now(),
    )
    .run();
}

/** Stores a key's hash for a tenant. */
export async function putKey(db: D1Database, k: IssuedKey & { hash: string }, ifAbsent = false): Promise<void> {
  await db
    .prepare(
      `INSERT ${ifAbsent ? "OR IGNORE" : ""} INTO api_keys (id, tenant_id, hash, prefix, created_at)
       VALUES (?1, ?2, ?3, ?4, ?5)`,
    )
    .bind(k.id, k.tenantId, k.hash, k.prefix, k.createdAt)
    .run();
}

/** Revokes a key; false when no such unrevoked key exists. */
export async function revokeKey(db: D1Database, keyId: string): Promise<boolean> {
  const res = await db
    .prepare("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
    .bind(keyId, Date.now())
    .run();
  return res.meta.changes > 0;
}
