-- 003_leases: the run lease that replaces the session advisory lock, and
-- abandoned runs.
--
-- Additive only: a new table, a nullable column (already present in schemas
-- created by 001) and a wider CHECK on sync_runs.status.

-- One row per lease key (a credential's key, or "announce" for the webhook
-- announcer). A process holds the lease while holder names it and expires_at
-- is in the future; it renews expires_at in short transactions, so the lease
-- holds through any pooler (no session state). A crashed holder's lease
-- expires and the next process takes it over. Writes check, inside their own
-- transaction, that their holder still holds the row (SELECT ... FOR KEY
-- SHARE), and a take-over locks it FOR UPDATE, so it waits for those writes.
CREATE TABLE IF NOT EXISTS sync_leases (
    credential_key text PRIMARY KEY,
    holder         text NOT NULL,        -- hostname:pid:random of the holding process
    run_id         bigint,               -- the holder's run, once recorded
    acquired_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    renewed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz NOT NULL
);

-- The credential of a run, so a new run can find its credential's orphaned
-- runs (killed while running) and mark them abandoned.
ALTER TABLE sync_runs ADD COLUMN IF NOT EXISTS credential_key text;

ALTER TABLE sync_runs DROP CONSTRAINT IF EXISTS sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'canceled', 'abandoned'));

CREATE INDEX IF NOT EXISTS sync_runs_running_idx ON sync_runs (credential_key) WHERE status = 'running';
