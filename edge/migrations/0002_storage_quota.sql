-- A tenant's own storage quota for uploads; NULL means the edge's default
-- (STORAGE_QUOTA_BYTES, STORAGE_QUOTA_FILES).
ALTER TABLE tenants ADD COLUMN storage_bytes INTEGER;
ALTER TABLE tenants ADD COLUMN storage_files INTEGER;
