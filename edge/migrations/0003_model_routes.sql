-- Shard lists set through the admin API (PUT /admin/routes/{model}): each row
-- replaces MODEL_ROUTES's list for its model; an empty list withdraws the model.
-- Deleting the row gives the model back to MODEL_ROUTES.
CREATE TABLE IF NOT EXISTS model_routes (
  model TEXT PRIMARY KEY,
  -- JSON array of GPU service base URLs, checked when set
  urls TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
