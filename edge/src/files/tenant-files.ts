/**
 * A tenant's uploads, as the routes see them: every upload is counted by the
 * tenant's limiter against its storage quota before its bytes are stored,
 * recorded there once stored (with its expiry), and looked up there first, so
 * a deleted or expired file is not found even while R2 still holds its bytes.
 */
import type { Tenant } from "../auth/store.js";
import { settingsOf } from "../config/settings.js";
import type { Env } from "../env.js";
import { ApiError } from "../http/errors.js";
import type { FileRecord, Reservation } from "../limits/file-index.js";
import { formatDuration } from "../limits/headers.js";
import type { StoredBytes } from "./store.js";

const ID_SHAPE = /^file-([0-9a-f]{64})$/;

/** True when the string looks like a file id. */
export const isFileId = (s: string) => ID_SHAPE.test(s);

export const fileIdOf = (sha256: string) => `file-${sha256}`;

const limiterOf = (env: Env, tenantId: string) => env.LIMITER.get(env.LIMITER.idFromName(tenantId));

const notFound = (id: string) =>
  new ApiError(404, `no file ${id.slice(0, 80)} for this API key's tenant`, "file_not_found");

/** The 413 or 429 for an upload the quota refuses. */
function quotaError(r: Reservation, bytes: number): ApiError {
  const used = `the tenant stores ${r.used.files} of ${r.quota.files} files and ${r.used.bytes} of ${r.quota.bytes} bytes`;
  if (r.refusedBy === "file_too_large")
    return new ApiError(
      413,
      `the file (${bytes} bytes) is larger than the tenant's whole storage quota of ${r.quota.bytes} bytes`,
      "storage_quota_exceeded",
    );
  const retryAfterS = Math.max(1, Math.ceil(r.retryAfterMs / 1000));
  return new ApiError(
    429,
    `storage quota exceeded: ${used}; delete files (DELETE /v1/files/{id}) or wait until the oldest expires (in ${formatDuration(r.retryAfterMs)})`,
    "storage_quota_exceeded",
    null,
    { "retry-after": String(retryAfterS) },
  );
}

/**
 * Stores an upload of `bytes` bytes under the tenant's quota: reserves its room
 * (413/429 when the quota refuses; `sha256` when known lets bytes the tenant
 * already stores through), runs `store` (which puts the bytes in R2), and
 * records the result, or gives the room back when `store` fails.
 */
export async function uploadUnderQuota(
  env: Env,
  tenant: Tenant,
  upload: { bytes: number; filename: string; sha256?: string },
  store: () => Promise<StoredBytes>,
): Promise<FileRecord> {
  const { bytes, filename } = upload;
  const s = settingsOf(env);
  const quota = {
    bytes: tenant.storage.bytes ?? s.storageQuotaBytes,
    files: tenant.storage.files ?? s.storageQuotaFiles,
  };
  const limiter = limiterOf(env, tenant.id);
  const uploadId = crypto.randomUUID();
  const reservation = await limiter.reserveUpload(uploadId, bytes, quota, upload.sha256);
  if (!reservation.ok) throw quotaError(reservation, bytes);
  let stored: StoredBytes;
  try {
    stored = await store();
  } catch (err) {
    await limiter.releaseUpload(uploadId);
    throw err;
  }
  return limiter.commitUpload(uploadId, { ...stored, filename, createdAt: Date.now() }, s.fileTtlSeconds * 1000);
}

/** The tenant's live file with this id (404 for a malformed, unknown, deleted, expired or other tenant's id). */
export async function findFile(env: Env, tenantId: string, id: string): Promise<FileRecord> {
  const sha = ID_SHAPE.exec(id)?.[1];
  const record = sha ? await limiterOf(env, tenantId).getFile(sha) : null;
  if (!record) throw notFound(id);
  return record;
}

/** The tenant's live file and its bytes (404 as findFile, and when R2 no longer holds them). */
export async function openFile(
  env: Env,
  tenantId: string,
  id: string,
): Promise<{ file: FileRecord; body: R2ObjectBody }> {
  const file = await findFile(env, tenantId, id);
  const body = await env.FILES.get(file.key);
  if (!body) throw notFound(id);
  return { file, body };
}

/** Deletes the tenant's file (its bytes and its share of the quota); 404 when there is no such live file. */
export async function deleteFile(env: Env, tenantId: string, id: string): Promise<void> {
  const sha = ID_SHAPE.exec(id)?.[1];
  if (!sha || !(await limiterOf(env, tenantId).deleteFile(sha))) throw notFound(id);
}
