-- 005: an invitation's age counts from its estimated sending date.
--
-- The API gives no sending date, only ExpirationDate (today 30 days after
-- sending). Until now `age` counted from first_seen_at, so invitations sent
-- weeks before the first sync were not stale on the first day. age now
-- counts from estimated_sent_at (expiration_date - 30 days), as the design
-- says, and from first_seen_at only when the expiration date is unknown;
-- first_seen_at stays a column of its own. The view keeps its columns in
-- order, so CREATE OR REPLACE suffices and stale_invitations (which returns
-- SETOF pending_invitations) follows it.

CREATE OR REPLACE VIEW pending_invitations AS
SELECT i.invitation_id,
       i.customer_id,
       i.email,
       i.first_name,
       i.last_name,
       i.role_id,
       coalesce(ro.name, 'Role ' || i.role_id) AS role_name,
       i.account_ids,
       i.expiration_date,
       i.first_seen_at,
       i.expiration_date - interval '30 days' AS estimated_sent_at,
       coalesce(i.expiration_date <= now(), false) AS expired,
       now() - coalesce(i.expiration_date - interval '30 days', i.first_seen_at) AS age
FROM user_invitations i
LEFT JOIN roles ro ON ro.role_id = i.role_id
WHERE i.removed_at IS NULL;

COMMENT ON COLUMN pending_invitations.age IS
    'now() - estimated_sent_at (expiration_date - 30 days); now() - first_seen_at when the expiration date is unknown';

CREATE OR REPLACE FUNCTION stale_invitations(older_than interval)
RETURNS SETOF pending_invitations
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT p.* FROM pending_invitations p
    WHERE p.age > $1 OR p.expired
    ORDER BY p.estimated_sent_at NULLS LAST, p.first_seen_at, p.invitation_id
$$;
