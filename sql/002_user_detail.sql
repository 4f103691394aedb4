-- 002_user_detail: listed users whose GetUser failed (users.detail_*), the
-- count of such users per customer sync, who a run read the data as, and the
-- user's lifecycle and detail status in access / access_as_of.
--
-- Additive only: new nullable or defaulted columns, views replaced with their
-- existing columns kept in order and new ones appended. access_as_of changes
-- its return type, which CREATE OR REPLACE cannot do: it is dropped and
-- created again (a function holds no data), keeping its EXECUTE grants.

-- Detail status of a listed user: 'ok' when GetUser read it, 'unreadable' when
-- GetUser failed permanently for it (the row then keeps its previous values,
-- only user_name comes from the listing), 'not_found' when GetUser said the
-- user does not exist. detail_code, detail_tracking_id and detail_error
-- describe the failure and are NULL when ok.
ALTER TABLE users
    ADD COLUMN detail_status text NOT NULL DEFAULT 'ok'
        CONSTRAINT users_detail_status_check CHECK (detail_status IN ('ok', 'unreadable', 'not_found')),
    ADD COLUMN detail_code integer,
    ADD COLUMN detail_tracking_id text,
    ADD COLUMN detail_error text,
    ADD CONSTRAINT users_detail_ok_check CHECK (detail_status <> 'ok'
        OR (detail_code IS NULL AND detail_tracking_id IS NULL AND detail_error IS NULL));

ALTER TABLE users_history
    ADD COLUMN detail_status text NOT NULL DEFAULT 'ok'
        CONSTRAINT users_history_detail_status_check CHECK (detail_status IN ('ok', 'unreadable', 'not_found')),
    ADD COLUMN detail_code integer,
    ADD COLUMN detail_tracking_id text,
    ADD COLUMN detail_error text;

COMMENT ON COLUMN users.detail_status IS
    'ok: GetUser read the user. unreadable: GetUser failed permanently for this user; only user_name is from the latest listing, the other columns and the user''s roles are as last read. not_found: GetUser said the user does not exist.';
COMMENT ON COLUMN users.detail_tracking_id IS
    'TrackingId of the GetUser failure that put the row in its current detail_status and detail_code (a later failure with the same status and code does not rewrite the row).';

-- Listed users of the customer whose GetUser failed (included in users_seen).
ALTER TABLE customer_syncs
    ADD COLUMN users_unreadable integer NOT NULL DEFAULT 0;

-- Who the run read the data as (the credential's own user).
ALTER TABLE sync_runs
    ADD COLUMN principal_user_id bigint,
    ADD COLUMN principal_user_name text;

COMMENT ON COLUMN user_roles.account_ids IS
    'Accounts the role is scoped to, sorted. NULL: every account of the customer (customer-level). ''{}'': the API listed no account; the role reaches no listed account (access shows no row for it).';
COMMENT ON COLUMN user_invitations.account_ids IS
    'Accounts the invitation grants, sorted. NULL: all current and future accounts. ''{}'': the API listed no account.';

-- access: one row per current user x customer x role x account. account_ids
-- NULL gives one row with account_id NULL (every account of the customer);
-- '{}' gives no row (the role is kept in user_roles but reaches no listed
-- account). A user's name, email, lifecycle and detail status come from one
-- current users row with that user id: a row GetUser read ('ok') first, then
-- the home customer's.
CREATE OR REPLACE VIEW access AS
WITH u AS (
    SELECT DISTINCT ON (user_id) user_id, user_name, email, lifecycle_status, detail_status
    FROM users
    WHERE removed_at IS NULL
    ORDER BY user_id, (detail_status = 'ok') DESC, (customer_id = home_customer_id) DESC NULLS LAST, customer_id
)
SELECT r.user_id,
       u.user_name,
       u.email,
       r.customer_id,
       r.role_id,
       coalesce(ro.name, 'Role ' || r.role_id) AS role_name,
       a.account_id,
       acc.name AS account_name,
       u.lifecycle_status,
       u.detail_status
FROM user_roles r
JOIN u ON u.user_id = r.user_id
LEFT JOIN roles ro ON ro.role_id = r.role_id
LEFT JOIN LATERAL unnest(r.account_ids) AS a (account_id) ON true
LEFT JOIN accounts acc ON acc.account_id = a.account_id
WHERE r.removed_at IS NULL
  AND (r.account_ids IS NULL OR a.account_id IS NOT NULL);

COMMENT ON VIEW access IS
    'One row per current user x customer x role x account. account_id NULL: the role covers every account of the customer (user_roles.account_ids NULL). A role whose account_ids is ''{}'' (no account listed) reaches no account and has no row here; it stays in user_roles. detail_status is the user''s: ok when any current listing read the user, else unreadable or not_found (the roles shown are then as last read).';

-- pending_invitations shows account_ids as stored (NULL and '{}' distinct):
-- no change needed.
COMMENT ON COLUMN pending_invitations.account_ids IS
    'NULL: all current and future accounts. ''{}'': the API listed no account.';

-- access_as_of: recreated with the new columns. Keep the EXECUTE grants the
-- old function had (the migration runner grants the reader role again, but a
-- grant made by hand would otherwise be lost).
CREATE TEMP TABLE m002_access_as_of_acl ON COMMIT DROP AS
SELECT p.proacl IS NOT NULL AS explicit, a.grantee, a.is_grantable
FROM pg_proc p
LEFT JOIN LATERAL aclexplode(p.proacl) a ON a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
WHERE p.oid = 'access_as_of(timestamptz)'::regprocedure;

DROP FUNCTION access_as_of(timestamptz);

CREATE FUNCTION access_as_of(at timestamptz)
RETURNS TABLE (
    user_id          bigint,
    user_name        text,
    email            text,
    customer_id      bigint,
    role_id          integer,
    role_name        text,
    account_id       bigint,
    account_name     text,
    lifecycle_status text,
    detail_status    text
)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH u AS (
        SELECT DISTINCT ON (h.user_id) h.user_id, h.user_name, h.email, h.lifecycle_status, h.detail_status
        FROM users_history h
        WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
          AND h.change <> 'removed'
        ORDER BY h.user_id, (h.detail_status = 'ok') DESC, (h.customer_id = h.home_customer_id) DESC NULLS LAST, h.customer_id
    ), r AS (
        SELECT h.user_id, h.customer_id, h.role_id, h.account_ids
        FROM user_roles_history h
        WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
          AND h.change <> 'removed'
    )
    SELECT r.user_id, u.user_name, u.email, r.customer_id, r.role_id,
           coalesce(ro.name, 'Role ' || r.role_id),
           a.account_id, acc.name, u.lifecycle_status, u.detail_status
    FROM r
    JOIN u ON u.user_id = r.user_id
    LEFT JOIN roles ro ON ro.role_id = r.role_id
    LEFT JOIN LATERAL unnest(r.account_ids) AS a (account_id) ON true
    LEFT JOIN accounts acc ON acc.account_id = a.account_id
    WHERE r.account_ids IS NULL OR a.account_id IS NOT NULL
$$;

COMMENT ON FUNCTION access_as_of(timestamptz) IS
    'The access rows as they were at the given time, from history (same columns and the same NULL / ''{}'' account rules as access).';

DO $$
DECLARE
    g record;
    fn constant text := 'access_as_of(timestamptz)';
BEGIN
    IF EXISTS (SELECT 1 FROM m002_access_as_of_acl WHERE explicit) THEN
        -- The old function had an explicit ACL: start from it, not from
        -- the default (EXECUTE to PUBLIC).
        EXECUTE 'REVOKE EXECUTE ON FUNCTION ' || fn || ' FROM PUBLIC';
    END IF;
    FOR g IN SELECT grantee, is_grantable FROM m002_access_as_of_acl WHERE grantee IS NOT NULL LOOP
        EXECUTE 'GRANT EXECUTE ON FUNCTION ' || fn || ' TO '
            || CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END  -- regrole's text is quoted as needed
            || CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END;
    END LOOP;
END
$$;
