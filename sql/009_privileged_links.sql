-- 009: privileged_access lists a client link whose (type, customer link
-- permission) client_link_permissions does not describe, as it lists a role
-- id roles does not describe: the rule 006 states for every view ("an
-- access review must not miss a grant because its kind is new"), which its
-- link_grants broke by joining client_link_permissions and keeping only
-- CustomerLink rows (a customer link with a new permission, e.g.
-- LinkedEntityOnly, or none at all, was left out). A grant of a link that is
-- not a customer link (an unknown type; AccountLink is described, not
-- privileged) is scoped to its client entity as an account (scope
-- 'accounts'), in the client customer when known.
--
-- Same columns, so CREATE OR REPLACE keeps the dependent views and grants.

CREATE OR REPLACE VIEW privileged_access AS
WITH u AS (
    SELECT DISTINCT ON (user_id) user_id, user_name, email, first_name, last_name
    FROM users
    WHERE removed_at IS NULL
    ORDER BY user_id, (detail_status = 'ok') DESC, (customer_id = home_customer_id) DESC NULLS LAST, customer_id
), role_grants AS (
    SELECT 'user'::text AS grantee_kind,
           r.user_id AS grantee_id,
           coalesce(u.user_name, nullif(concat_ws(' ', u.first_name, u.last_name), '')) AS grantee_name,
           u.email AS grantee_email,
           r.customer_id,
           r.role_id,
           coalesce(ro.name, 'Role ' || r.role_id) AS role_name,
           NULL::text AS link_type,
           NULL::text AS customer_link_permission,
           NULL::text AS link_status,
           ro.can_manage_users,
           ro.can_manage_billing,
           ro.can_manage_links,
           r.account_ids,
           coalesce((SELECT max(h.valid_from) FROM user_roles_history h
                     WHERE h.user_id = r.user_id AND h.customer_id = r.customer_id AND h.role_id = r.role_id
                       AND h.change IN ('added', 'reappeared')), r.first_seen_at) AS held_since,
           NULL::text AS inviter_email,
           NULL::text AS inviter_name
    FROM user_roles r
    LEFT JOIN u ON u.user_id = r.user_id
    LEFT JOIN roles ro ON ro.role_id = r.role_id
    WHERE r.removed_at IS NULL
      AND ro.privileged IS NOT FALSE
), link_grants AS (
    SELECT 'agency'::text,
           l.managing_customer_id,
           l.managing_customer_name,
           NULL::text,
           CASE WHEN l.type = 'CustomerLink' THEN l.client_entity_id ELSE coalesce(l.client_customer_id, acc.customer_id) END,
           NULL::integer,
           NULL::text,
           l.type,
           l.customer_link_permission,
           l.status,
           p.can_manage_users,
           p.can_manage_billing,
           p.can_manage_links,
           CASE WHEN l.type <> 'CustomerLink' THEN ARRAY[l.client_entity_id] END,
           (WITH hs AS (
                SELECT h.valid_from, h.change,
                       (h.change <> 'removed' AND hst.grants_access IS NOT FALSE AND hp.privileged IS NOT FALSE) AS held
                FROM client_links_history h
                LEFT JOIN client_link_statuses hst ON hst.status = h.status
                LEFT JOIN client_link_permissions hp ON hp.link_type = h.type
                     AND hp.customer_link_permission = coalesce(h.customer_link_permission, '')
                WHERE h.type = l.type AND h.client_entity_id = l.client_entity_id
                  AND h.managing_customer_id = l.managing_customer_id
            ), run AS (
                SELECT min(hs.valid_from) AS since FROM hs
                WHERE hs.valid_from > coalesce((SELECT max(b.valid_from) FROM hs b WHERE NOT b.held), '-infinity')
            )
            SELECT CASE WHEN run.since IS NULL THEN l.first_seen_at
                        WHEN run.since = (SELECT min(valid_from) FROM hs) AND l.start_date < run.since THEN l.start_date
                        ELSE run.since END
            FROM run),
           l.inviter_email,
           l.inviter_name
    FROM client_links l
    LEFT JOIN client_link_statuses st ON st.status = l.status
    LEFT JOIN client_link_permissions p ON p.link_type = l.type AND p.customer_link_permission = coalesce(l.customer_link_permission, '')
    LEFT JOIN accounts acc ON l.type <> 'CustomerLink' AND acc.account_id = l.client_entity_id
    WHERE l.removed_at IS NULL
      AND st.grants_access IS NOT FALSE
      AND p.privileged IS NOT FALSE
), g AS (
    SELECT * FROM role_grants
    UNION ALL
    SELECT * FROM link_grants
)
SELECT g.grantee_kind,
       g.grantee_id,
       g.grantee_name,
       g.grantee_email,
       g.customer_id,
       c.name AS customer_name,
       g.role_id,
       g.role_name,
       g.link_type,
       g.customer_link_permission,
       g.link_status,
       coalesce(g.role_name, g.link_type || coalesce(' (' || g.customer_link_permission || ')', '')) AS permission,
       g.can_manage_users,
       g.can_manage_billing,
       g.can_manage_links,
       CASE WHEN g.account_ids IS NULL THEN 'customer' ELSE 'accounts' END AS scope,
       g.account_ids,
       CASE WHEN g.account_ids IS NOT NULL THEN
           ARRAY(SELECT coalesce(acc.name, a.id::text) FROM unnest(g.account_ids) WITH ORDINALITY AS a (id, n)
                 LEFT JOIN accounts acc ON acc.account_id = a.id ORDER BY a.n)
       END AS account_names,
       g.held_since,
       now() - g.held_since AS held_for,
       g.inviter_email,
       g.inviter_name
FROM g
LEFT JOIN customers c ON c.customer_id = g.customer_id;

COMMENT ON VIEW privileged_access IS
    'Current grants that can change users, billing or links: privileged roles (roles.privileged; a role id roles does not describe is listed too) and privileged active client links (client_link_permissions.privileged: Administrative customer links; a link type and permission that table does not describe is listed too, as an unknown role is). grantee_kind user|agency; scope customer (every account of customer_id) or accounts (account_ids, account_names); held_since from history (see the migration).';
