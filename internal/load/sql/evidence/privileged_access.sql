-- Privileged access at $1 (as_of): the grants then held that can change
-- users, billing or links, as the privileged_access view lists them now,
-- from history: users' roles whose roles.privileged is true or unknown
-- (access_as_of), and agencies' client links whose status then granted
-- access and whose permission is privileged (client_link_permissions:
-- Administrative customer links, client_links_as_of). held_since is when
-- the grant last began (added or reappeared in history) at or before $1.
-- $2: the customers (empty: all).
WITH g AS (
    SELECT a.customer_id,
           'user'::text AS grantee_kind,
           a.user_id AS grantee_id,
           a.user_name AS grantee_name,
           a.email AS grantee_email,
           a.role_name AS permission,
           ro.can_manage_users,
           ro.can_manage_billing,
           ro.can_manage_links,
           CASE WHEN a.account_id IS NULL THEN 'customer' ELSE 'account' END AS scope,
           a.account_id,
           CASE WHEN a.account_id IS NULL THEN 'every account of the customer' ELSE a.account_name END AS account_name,
           (SELECT max(h.valid_from) FROM user_roles_history h
            WHERE h.user_id = a.user_id AND h.customer_id = a.customer_id AND h.role_id = a.role_id
              AND h.valid_from <= $1 AND h.change IN ('added', 'reappeared')) AS held_since,
           NULL::text AS inviter_email
    FROM access_as_of($1) a
    LEFT JOIN roles ro ON ro.role_id = a.role_id
    WHERE a.user_id IS NOT NULL AND ro.privileged IS NOT FALSE
    UNION ALL
    SELECT CASE WHEN l.type = 'CustomerLink' THEN l.client_entity_id ELSE l.client_customer_id END,
           'agency',
           l.managing_customer_id,
           l.managing_customer_name,
           NULL,
           l.type || ' (' || coalesce(l.customer_link_permission, 'no permission') || ')',
           p.can_manage_users,
           p.can_manage_billing,
           p.can_manage_links,
           CASE WHEN l.type = 'CustomerLink' THEN 'customer' ELSE 'account' END,
           CASE WHEN l.type <> 'CustomerLink' THEN l.client_entity_id END,
           CASE WHEN l.type = 'CustomerLink' THEN 'every account of the customer' ELSE coalesce(l.client_entity_name, l.client_entity_id::text) END,
           (SELECT max(h.valid_from) FROM client_links_history h
            WHERE h.type = l.type AND h.client_entity_id = l.client_entity_id AND h.managing_customer_id = l.managing_customer_id
              AND h.valid_from <= $1 AND h.change IN ('added', 'reappeared')),
           l.inviter_email
    FROM client_links_as_of($1) l
    LEFT JOIN client_link_permissions p ON p.link_type = l.type AND p.customer_link_permission = coalesce(l.customer_link_permission, '')
    WHERE l.grants_access IS NOT FALSE AND p.privileged IS NOT FALSE
)
SELECT g.customer_id,
       c.name AS customer_name,
       g.grantee_kind,
       g.grantee_id,
       g.grantee_name,
       g.grantee_email,
       g.permission,
       g.can_manage_users,
       g.can_manage_billing,
       g.can_manage_links,
       g.scope,
       g.account_id,
       g.account_name,
       g.held_since,
       g.inviter_email
FROM g
LEFT JOIN customers c ON c.customer_id = g.customer_id
WHERE cardinality($2::bigint[]) = 0 OR g.customer_id = ANY ($2)
ORDER BY g.customer_id NULLS LAST, g.grantee_kind DESC, g.grantee_id, g.permission, g.account_id NULLS FIRST
