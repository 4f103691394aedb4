-- 006_client_links: client links (agency and partner access), role and link
-- metadata, privileged access, and the links in access_as_of.
--
-- Additive only: new tables, new nullable or defaulted columns, new views and
-- functions. access_as_of changes its return type (columns appended), which
-- CREATE OR REPLACE cannot do: it is dropped and created again (a function
-- holds no data), keeping its EXECUTE grants, as 002 did.
--
-- Metadata lives in tables, not in view text: roles (what a role may do),
-- client_link_statuses (which statuses grant access) and
-- client_link_permissions (what a link may do). A value the API sends that
-- these tables do not know yet (a new role id, a new status) is shown by the
-- views until classified: an access review must not miss a grant because its
-- kind is new (see the comments on the views).

-- What each role may do (docs: "User Roles" in the account hierarchy and
-- permissions guide; SearchClientLinks: "Only a user with Super Admin or
-- Standard credentials can add, update, and search for client links to
-- advertiser accounts. Only a user with Super Admin credentials can [do so]
-- for client links to customers"). NULL: not known (a role id the API sent
-- that this table does not describe).
ALTER TABLE roles
    ADD COLUMN privileged         boolean,
    ADD COLUMN can_manage_users   boolean,
    ADD COLUMN can_manage_billing boolean,
    ADD COLUMN can_manage_links   boolean,
    ADD COLUMN description        text;

INSERT INTO roles (role_id, name, privileged, can_manage_users, can_manage_billing, can_manage_links, description) VALUES
    (16,  'Advertiser Campaign Manager', false, false, false, false,
          'Manages campaigns in the listed accounts; can view payment methods but manage no billing, users or links.'),
    (33,  'Aggregator', true, true, true, true,
          'Reseller role (held together with Super Admin): read and write in every service, except DeleteCustomer and AddAccount.'),
    (41,  'Super Admin', true, true, true, true,
          'Full permissions for all accounts of the customer: billing and payments, account details, users (including other Super Admins) and client links.'),
    (100, 'Viewer', false, false, false, false,
          'Read-only.'),
    (203, 'Standard User', true, false, true, true,
          'Manages campaigns and some billing (insertion orders) in the listed accounts, and client links to advertiser accounts; cannot manage users or payment methods.')
ON CONFLICT (role_id) DO UPDATE SET privileged = excluded.privileged,
    can_manage_users = excluded.can_manage_users, can_manage_billing = excluded.can_manage_billing,
    can_manage_links = excluded.can_manage_links, description = excluded.description;

COMMENT ON COLUMN roles.privileged IS
    'The role can change users, billing or client links (privileged_access lists its grants). NULL: not known; privileged_access lists grants of such roles too.';

-- ClientLinkStatus values and whether a link in that status lets the managing
-- customer reach the client entity (docs: ClientLinkStatus value set). The
-- unlink transitions keep access until Inactive; LinkAccepted and
-- LinkInProgress do not grant it yet (billing transition or start date
-- pending). A status not in this table is shown by active_client_links until
-- a row classifies it.
CREATE TABLE client_link_statuses (
    status        text PRIMARY KEY,
    grants_access boolean NOT NULL,
    pending       boolean NOT NULL DEFAULT false,  -- waiting for the client's answer
    description   text
);
INSERT INTO client_link_statuses (status, grants_access, pending, description) VALUES
    ('LinkPending',      false, true,  'The link request was sent and waits for the client''s approval.'),
    ('LinkAccepted',     false, false, 'The client accepted; the link is not established yet.'),
    ('LinkInProgress',   false, false, 'Accepted; waiting for the billing transition or the start date.'),
    ('Active',           true,  false, 'The link is established: the managing customer can access the client entity.'),
    ('UnlinkRequested',  true,  false, 'The agency asked to unlink; access continues until Inactive.'),
    ('UnlinkPending',    true,  false, 'The unlink request waits for the system; access continues until Inactive.'),
    ('UnlinkInProgress', true,  false, 'Unlinking, waiting for the billing transition; access continues until Inactive.'),
    ('UnlinkFailed',     true,  false, 'The unlink failed (e.g. billing transition); the link stays.'),
    ('UnlinkCanceled',   true,  false, 'Reserved by the API: an unlink that was canceled leaves the link in place.'),
    ('Inactive',         false, false, 'Unlinked: the managing customer can no longer access the client entity.'),
    ('LinkCanceled',     false, false, 'The agency canceled the request.'),
    ('LinkDeclined',     false, false, 'The client declined the request.'),
    ('LinkExpired',      false, false, 'The client did not answer within 30 days.'),
    ('LinkFailed',       false, false, 'The link process failed.');

-- What a link of a type and customer link permission lets the managing
-- customer do in the client entity. customer_link_permission '' stands for
-- none (account links have none).
CREATE TABLE client_link_permissions (
    link_type                text NOT NULL,
    customer_link_permission text NOT NULL,
    privileged               boolean,
    can_manage_users         boolean,
    can_manage_billing       boolean,
    can_manage_links         boolean,
    description              text,
    PRIMARY KEY (link_type, customer_link_permission)
);
INSERT INTO client_link_permissions VALUES
    ('CustomerLink', 'Administrative', true,  true,  true,  true,
     'Administrative customer link: the agency administers the client customer and the customers below it (users, billing, links).'),
    ('CustomerLink', 'Standard',       false, false, false, false,
     'Standard customer link: the agency manages the client customer''s accounts without administering the customer.'),
    ('AccountLink',  '',               false, false, false, false,
     'Account link: the agency manages the client advertiser account (IsBillToClient says who pays).');

-- client_links: one row per (type, client entity, managing customer), the
-- most recent link the API returns for the pair. type is 'AccountLink' (the
-- client entity is an advertiser account; an empty Type means this) or
-- 'CustomerLink' (the client entity is a customer). Unknown API values are
-- stored as their text.
--
-- searched_from_customer_id: the synced customer whose search found the row
-- (the first one while the row stays current; a link between two synced
-- customers is found by both). client_customer_id: the customer the client
-- entity belongs to when the syncer knows it (a customer link: the client
-- customer; an account link found searching a synced customer's accounts:
-- that customer), else NULL.
CREATE TABLE client_links (
    type                          text NOT NULL,
    client_entity_id              bigint NOT NULL,
    managing_customer_id          bigint NOT NULL,
    client_entity_number          text,
    client_entity_name            text,
    client_entity_customer_number text,
    client_customer_id            bigint,
    managing_customer_number      text,
    managing_customer_name        text,
    status                        text,
    customer_link_permission      text,
    is_bill_to_client             boolean,
    start_date                    timestamptz,
    inviter_email                 text,
    inviter_name                  text,
    inviter_phone                 text,
    name                          text,
    note                          text,
    last_modified_time            timestamptz,
    last_modified_by_user_id      bigint,
    searched_from_customer_id     bigint NOT NULL,
    first_seen_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    removed_at                    timestamptz,
    PRIMARY KEY (type, client_entity_id, managing_customer_id)
);
CREATE INDEX client_links_client_idx ON client_links (client_entity_id);
CREATE INDEX client_links_managing_idx ON client_links (managing_customer_id);
CREATE INDEX client_links_client_customer_idx ON client_links (client_customer_id);

COMMENT ON TABLE client_links IS
    'Client links (agency access) into and from the synced customers, from SearchClientLinks. Soft-removed (removed_at) only when a complete search that covers the link omitted it.';
COMMENT ON COLUMN client_links.inviter_name IS
    'The name of the parent customer of the user who created the link request (API: InviterName).';
COMMENT ON COLUMN client_links.start_date IS
    'When the status moves on: towards Active for an accepted request, towards Inactive for an unlink.';

CREATE TABLE client_links_history (
    type                          text NOT NULL,
    client_entity_id              bigint NOT NULL,
    managing_customer_id          bigint NOT NULL,
    valid_from                    timestamptz NOT NULL,
    valid_to                      timestamptz,
    change                        text NOT NULL CHECK (change IN ('added', 'changed', 'removed', 'reappeared')),
    run_id                        bigint,
    client_entity_number          text,
    client_entity_name            text,
    client_entity_customer_number text,
    client_customer_id            bigint,
    managing_customer_number      text,
    managing_customer_name        text,
    status                        text,
    customer_link_permission      text,
    is_bill_to_client             boolean,
    start_date                    timestamptz,
    inviter_email                 text,
    inviter_name                  text,
    inviter_phone                 text,
    name                          text,
    note                          text,
    last_modified_time            timestamptz,
    last_modified_by_user_id      bigint,
    searched_from_customer_id     bigint NOT NULL,
    PRIMARY KEY (type, client_entity_id, managing_customer_id, valid_from)
);

-- Per customer sync: how the link searches went and what they changed.
-- links_status: complete (every search done), partial (some searches were
-- not permitted to the credential, the others complete), not_permitted (none
-- permitted), NULL (not searched: client links off, or the sync failed).
-- links_error says which searches were not permitted and why.
ALTER TABLE customer_syncs
    ADD COLUMN links_status text
        CONSTRAINT customer_syncs_links_status_check CHECK (links_status IN ('complete', 'partial', 'not_permitted')),
    ADD COLUMN links_error              text,
    ADD COLUMN client_links_seen        integer,
    ADD COLUMN client_links_added       integer NOT NULL DEFAULT 0,
    ADD COLUMN client_links_changed     integer NOT NULL DEFAULT 0,
    ADD COLUMN client_links_removed     integer NOT NULL DEFAULT 0,
    ADD COLUMN client_links_reappeared  integer NOT NULL DEFAULT 0;

-- active_client_links: current links whose status grants access now
-- (client_link_statuses.grants_access; a status not classified there is
-- shown too, with grants_access NULL). client_customer_id is the client
-- entity's customer when known (for an account link, also from accounts).
CREATE VIEW active_client_links AS
SELECT l.type,
       l.client_entity_id,
       l.managing_customer_id,
       l.client_entity_number,
       l.client_entity_name,
       coalesce(l.client_customer_id, CASE WHEN l.type = 'CustomerLink' THEN l.client_entity_id ELSE acc.customer_id END) AS client_customer_id,
       l.managing_customer_number,
       l.managing_customer_name,
       l.status,
       st.grants_access,
       l.customer_link_permission,
       p.privileged,
       l.is_bill_to_client,
       l.start_date,
       l.inviter_email,
       l.inviter_name,
       l.inviter_phone,
       l.name,
       l.note,
       l.last_modified_time,
       l.last_modified_by_user_id,
       l.searched_from_customer_id,
       l.first_seen_at
FROM client_links l
LEFT JOIN client_link_statuses st ON st.status = l.status
LEFT JOIN client_link_permissions p ON p.link_type = l.type AND p.customer_link_permission = coalesce(l.customer_link_permission, '')
LEFT JOIN accounts acc ON l.type <> 'CustomerLink' AND acc.account_id = l.client_entity_id
WHERE l.removed_at IS NULL
  AND st.grants_access IS NOT FALSE;

COMMENT ON VIEW active_client_links IS
    'Current client links whose status grants access now (client_link_statuses.grants_access: Active and the unlink transitions until Inactive). A status client_link_statuses does not classify is shown too (grants_access NULL).';

-- privileged_access: every current grant that can change users, billing or
-- links: roles whose roles.privileged is true (or unknown: a role id roles
-- does not describe), and active links whose client_link_permissions row is
-- privileged (Administrative customer links). One row per grant:
--
--   grantee_kind  'user' (a user's role) or 'agency' (a managing customer's link)
--   grantee_id    the user id, or the managing customer id
--   scope         'customer' (every account of customer_id) or 'accounts'
--                 (account_ids, with account_names in the same order)
--   held_since    when the grant (as privileged as now) began without a
--                 break, from history; for a link already active when first
--                 seen, its start_date when earlier. It cannot predate the
--                 first sync that saw it, other than by start_date.
CREATE VIEW privileged_access AS
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
           l.client_entity_id,
           NULL::integer,
           NULL::text,
           l.type,
           l.customer_link_permission,
           l.status,
           p.can_manage_users,
           p.can_manage_billing,
           p.can_manage_links,
           NULL::bigint[],
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
    JOIN client_link_permissions p ON p.link_type = l.type AND p.customer_link_permission = coalesce(l.customer_link_permission, '')
    WHERE l.removed_at IS NULL
      AND l.type = 'CustomerLink'
      AND st.grants_access IS NOT FALSE
      AND p.privileged
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
       coalesce(g.role_name, g.link_type || ' (' || g.customer_link_permission || ')') AS permission,
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
    'Current grants that can change users, billing or links: privileged roles (roles.privileged; a role id roles does not describe is listed too) and privileged active client links (client_link_permissions.privileged: Administrative customer links). grantee_kind user|agency; scope customer (every account of customer_id) or accounts (account_ids, account_names); held_since from history (see the migration).';

-- client_links_as_of: the client links as they were at a time, from
-- history, with whether their status then granted access. client_customer_id
-- as in active_client_links.
CREATE FUNCTION client_links_as_of(at timestamptz)
RETURNS TABLE (
    type                     text,
    client_entity_id         bigint,
    managing_customer_id     bigint,
    client_entity_number     text,
    client_entity_name       text,
    client_customer_id       bigint,
    managing_customer_number text,
    managing_customer_name   text,
    status                   text,
    grants_access            boolean,
    customer_link_permission text,
    is_bill_to_client        boolean,
    start_date               timestamptz,
    inviter_email            text,
    inviter_name             text,
    inviter_phone            text,
    name                     text,
    note                     text,
    last_modified_time       timestamptz,
    last_modified_by_user_id bigint
)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT h.type, h.client_entity_id, h.managing_customer_id, h.client_entity_number, h.client_entity_name,
           coalesce(h.client_customer_id, CASE WHEN h.type = 'CustomerLink' THEN h.client_entity_id ELSE acc.customer_id END),
           h.managing_customer_number, h.managing_customer_name, h.status, st.grants_access,
           h.customer_link_permission, h.is_bill_to_client, h.start_date, h.inviter_email, h.inviter_name,
           h.inviter_phone, h.name, h.note, h.last_modified_time, h.last_modified_by_user_id
    FROM client_links_history h
    LEFT JOIN client_link_statuses st ON st.status = h.status
    LEFT JOIN accounts acc ON h.type <> 'CustomerLink' AND acc.account_id = h.client_entity_id
    WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
      AND h.change <> 'removed'
$$;

COMMENT ON FUNCTION client_links_as_of(timestamptz) IS
    'The client links as they were at the given time, from history (removed ones excluded), with grants_access of their status then.';

-- access_as_of: recreated with columns appended and the agencies' rows:
-- one per link that granted access at that time (grantee_kind 'agency',
-- user columns NULL): a customer link reaches every account of its client
-- customer (account_id NULL, customer_id the client customer), an account
-- link its account (customer_id the account's customer when known). Users'
-- rows have grantee_kind 'user' and NULL link columns. Keep the EXECUTE
-- grants the old function had.
CREATE TEMP TABLE m006_access_as_of_acl ON COMMIT DROP AS
SELECT p.proacl IS NOT NULL AS explicit, a.grantee, a.is_grantable
FROM pg_proc p
LEFT JOIN LATERAL aclexplode(p.proacl) a ON a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
WHERE p.oid = 'access_as_of(timestamptz)'::regprocedure;

DROP FUNCTION access_as_of(timestamptz);

CREATE FUNCTION access_as_of(at timestamptz)
RETURNS TABLE (
    user_id                  bigint,
    user_name                text,
    email                    text,
    customer_id              bigint,
    role_id                  integer,
    role_name                text,
    account_id               bigint,
    account_name             text,
    lifecycle_status         text,
    detail_status            text,
    grantee_kind             text,
    managing_customer_id     bigint,
    managing_customer_name   text,
    link_type                text,
    link_status              text,
    customer_link_permission text,
    inviter_email            text,
    inviter_name             text
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
           a.account_id, acc.name, u.lifecycle_status, u.detail_status,
           'user', NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text
    FROM r
    JOIN u ON u.user_id = r.user_id
    LEFT JOIN roles ro ON ro.role_id = r.role_id
    LEFT JOIN LATERAL unnest(r.account_ids) AS a (account_id) ON true
    LEFT JOIN accounts acc ON acc.account_id = a.account_id
    WHERE r.account_ids IS NULL OR a.account_id IS NOT NULL
    UNION ALL
    SELECT NULL::bigint, NULL::text, NULL::text, l.client_customer_id, NULL::integer,
           l.type || coalesce(' (' || l.customer_link_permission || ')', ''),
           CASE WHEN l.type = 'CustomerLink' THEN NULL ELSE l.client_entity_id END,
           CASE WHEN l.type = 'CustomerLink' THEN NULL ELSE coalesce(acc.name, l.client_entity_name) END,
           NULL::text, NULL::text,
           'agency', l.managing_customer_id, l.managing_customer_name, l.type, l.status,
           l.customer_link_permission, l.inviter_email, l.inviter_name
    FROM client_links_as_of($1) l
    LEFT JOIN accounts acc ON l.type <> 'CustomerLink' AND acc.account_id = l.client_entity_id
    WHERE l.grants_access IS NOT FALSE
$$;

COMMENT ON FUNCTION access_as_of(timestamptz) IS
    'The access rows as they were at the given time, from history (same columns and the same NULL / ''{}'' account rules as access), then the agencies whose client links granted access then (grantee_kind agency: managing customer, link type, status, permission, inviter; account_id NULL for a customer link: every account of customer_id).';

DO $$
DECLARE
    g record;
    fn constant text := 'access_as_of(timestamptz)';
BEGIN
    IF EXISTS (SELECT 1 FROM m006_access_as_of_acl WHERE explicit) THEN
        EXECUTE 'REVOKE EXECUTE ON FUNCTION ' || fn || ' FROM PUBLIC';
    END IF;
    FOR g IN SELECT grantee, is_grantable FROM m006_access_as_of_acl WHERE grantee IS NOT NULL LOOP
        EXECUTE 'GRANT EXECUTE ON FUNCTION ' || fn || ' TO '
            || CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END
            || CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END;
    END LOOP;
END
$$;
