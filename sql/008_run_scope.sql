-- 008: the customers a run's credential could see.
--
-- An evidence pack states whom the data was read as and which customers
-- that user could see against those configured. The signed-in user is on
-- sync_runs since 002; this records the other half: the customers the
-- run found visible (GetCustomersInfo, asked until its answer is not full,
-- united with the customers of the signed-in user's own roles), sorted.
-- NULL when the run could not tell (one of the two lookups failed) and for
-- runs before this migration.

ALTER TABLE sync_runs ADD COLUMN IF NOT EXISTS visible_customer_ids bigint[];

COMMENT ON COLUMN sync_runs.visible_customer_ids IS
    'customers the run''s credential could see (GetCustomersInfo and the signed-in user''s roles), sorted; NULL when it could not tell';
