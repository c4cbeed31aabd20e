-- Tenants and their API keys. A key is stored only as the hex SHA-256 of the
-- whole key; revoking sets revoked_at, and lookups skip revoked keys.
CREATE TABLE IF NOT EXISTS tenants (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  requests_per_minute INTEGER NOT NULL,
  tokens_per_minute INTEGER NOT NULL,
  concurrent_streams INTEGER NOT NULL,
  -- JSON array of model names this tenant may use; [] means every configured model.
  models TEXT NOT NULL DEFAULT '[]',
  created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  hash TEXT NOT NULL UNIQUE,
  -- The key's first characters, so an operator can tell keys apart.
  prefix TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);

CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant_id);
