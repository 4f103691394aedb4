-- 001_init: the warehouse schema (users, roles, invitations, accounts, history,
-- run bookkeeping, views and functions).
--
-- Written unqualified: the migration runner creates the configured schema and
-- runs this file with search_path set to "<schema>, public". Functions carry
-- SET search_path FROM CURRENT so they do not depend on the caller's path.

CREATE TABLE sync_runs (
    run_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'canceled')),
    customers_total  integer NOT NULL DEFAULT 0,
    customers_failed integer NOT NULL DEFAULT 0,
    error            text,
    credential_key   text,
    hostname         text,
    version          text
);

CREATE TABLE customers (
    customer_id     bigint PRIMARY KEY,
    name            text,
    last_success_at timestamptz,
    last_attempt_at timestamptz,
    last_error      text,
    first_seen_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_syncs (
    run_id                 bigint NOT NULL REFERENCES sync_runs (run_id),
    customer_id            bigint NOT NULL,
    started_at             timestamptz NOT NULL,
    finished_at            timestamptz,
    status                 text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    users_seen             integer,
    roles_seen             integer,
    invitations_seen       integer,
    accounts_seen          integer,
    api_calls              integer NOT NULL DEFAULT 0,
    error                  text,
    users_added            integer NOT NULL DEFAULT 0,
    users_changed          integer NOT NULL DEFAULT 0,
    users_removed          integer NOT NULL DEFAULT 0,
    users_reappeared       integer NOT NULL DEFAULT 0,
    roles_added            integer NOT NULL DEFAULT 0,
    roles_changed          integer NOT NULL DEFAULT 0,
    roles_removed          integer NOT NULL DEFAULT 0,
    roles_reappeared       integer NOT NULL DEFAULT 0,
    invitations_added      integer NOT NULL DEFAULT 0,
    invitations_changed    integer NOT NULL DEFAULT 0,
    invitations_removed    integer NOT NULL DEFAULT 0,
    invitations_reappeared integer NOT NULL DEFAULT 0,
    accounts_added         integer NOT NULL DEFAULT 0,
    accounts_changed       integer NOT NULL DEFAULT 0,
    accounts_removed       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, customer_id)
);
CREATE INDEX customer_syncs_customer_idx ON customer_syncs (customer_id, started_at);

CREATE TABLE roles (
    role_id integer PRIMARY KEY,
    name    text NOT NULL
);
INSERT INTO roles (role_id, name) VALUES
    (16, 'Advertiser Campaign Manager'),
    (33, 'Aggregator'),
    (41, 'Super Admin'),
    (100, 'Viewer'),
    (203, 'Standard User');

CREATE TABLE accounts (
    account_id    bigint PRIMARY KEY,
    customer_id   bigint NOT NULL,
    name          text,
    number        text,
    status        text,
    pause_reason  integer,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    removed_at    timestamptz
);
CREATE INDEX accounts_customer_idx ON accounts (customer_id);

-- A users row belongs to the customer whose GetUsersInfo listed the user.
CREATE TABLE users (
    customer_id        bigint NOT NULL,
    user_id            bigint NOT NULL,
    home_customer_id   bigint,
    user_name          text,
    email              text,
    first_name         text,
    last_name          text,
    job_title          text,
    lcid               text,
    lifecycle_status   text,
    last_modified_time timestamptz,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    removed_at         timestamptz,
    PRIMARY KEY (customer_id, user_id)
);
CREATE INDEX users_user_idx ON users (user_id);

-- A user_roles row belongs to the role's customer. account_ids NULL means
-- every account of the customer; arrays are stored sorted.
CREATE TABLE user_roles (
    user_id                  bigint NOT NULL,
    customer_id              bigint NOT NULL,
    role_id                  integer NOT NULL,
    account_ids              bigint[],
    linked_account_ids       bigint[],
    customer_link_permission text,
    first_seen_at            timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    removed_at               timestamptz,
    PRIMARY KEY (user_id, customer_id, role_id)
);
CREATE INDEX user_roles_customer_idx ON user_roles (customer_id);

CREATE TABLE user_invitations (
    invitation_id   bigint PRIMARY KEY,
    customer_id     bigint NOT NULL,
    email           text,
    first_name      text,
    last_name       text,
    role_id         integer,
    account_ids     bigint[],
    lcid            text,
    expiration_date timestamptz,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);
CREATE INDEX user_invitations_customer_idx ON user_invitations (customer_id);

-- History: one row per version of an entity. valid_to is NULL while current.
-- A 'removed' row records the removal; it is current until the entity
-- reappears. The primary key's prefix finds an entity's versions; the loader
-- keeps valid_from strictly increasing per entity.
CREATE TABLE users_history (
    customer_id        bigint NOT NULL,
    user_id            bigint NOT NULL,
    valid_from         timestamptz NOT NULL,
    valid_to           timestamptz,
    change             text NOT NULL CHECK (change IN ('added', 'changed', 'removed', 'reappeared')),
    run_id             bigint,
    home_customer_id   bigint,
    user_name          text,
    email              text,
    first_name         text,
    last_name          text,
    job_title          text,
    lcid               text,
    lifecycle_status   text,
    last_modified_time timestamptz,
    PRIMARY KEY (customer_id, user_id, valid_from)
);

CREATE TABLE user_roles_history (
    user_id                  bigint NOT NULL,
    customer_id              bigint NOT NULL,
    role_id                  integer NOT NULL,
    valid_from               timestamptz NOT NULL,
    valid_to                 timestamptz,
    change                   text NOT NULL CHECK (change IN ('added', 'changed', 'removed', 'reappeared')),
    run_id                   bigint,
    account_ids              bigint[],
    linked_account_ids       bigint[],
    customer_link_permission text,
    PRIMARY KEY (user_id, customer_id, role_id, valid_from)
);

CREATE TABLE user_invitations_history (
    invitation_id   bigint NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    change          text NOT NULL CHECK (change IN ('added', 'changed', 'removed', 'reappeared')),
    run_id          bigint,
    customer_id     bigint NOT NULL,
    email           text,
    first_name      text,
    last_name       text,
    role_id         integer,
    account_ids     bigint[],
    lcid            text,
    expiration_date timestamptz,
    PRIMARY KEY (invitation_id, valid_from)
);

-- The OAuth refresh token per credential. kind 'plain' stores the token's
-- bytes; 'aes-gcm' stores nonce || ciphertext, sealed with a key derived from
-- database.token_key and the credential key as additional data.
CREATE TABLE oauth_tokens (
    credential_key text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('plain', 'aes-gcm')),
    token          bytea NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Stale-invitation alerts already sent, so each is announced at most once per
-- threshold period.
CREATE TABLE invitation_alerts (
    invitation_id    bigint PRIMARY KEY,
    last_notified_at timestamptz NOT NULL
);

-- access: one row per current user x customer x role x account. account_id
-- NULL means every account of the customer. A user's name and email come from
-- any current users row with that user id (the home customer's first).
CREATE VIEW access AS
WITH u AS (
    SELECT DISTINCT ON (user_id) user_id, user_name, email
    FROM users
    WHERE removed_at IS NULL
    ORDER BY user_id, (customer_id = home_customer_id) DESC NULLS LAST, customer_id
)
SELECT r.user_id,
       u.user_name,
       u.email,
       r.customer_id,
       r.role_id,
       coalesce(ro.name, 'Role ' || r.role_id) AS role_name,
       a.account_id,
       acc.name AS account_name
FROM user_roles r
JOIN u ON u.user_id = r.user_id
LEFT JOIN roles ro ON ro.role_id = r.role_id
LEFT JOIN LATERAL unnest(r.account_ids) AS a (account_id) ON true
LEFT JOIN accounts acc ON acc.account_id = a.account_id
WHERE r.removed_at IS NULL
  AND (r.account_ids IS NULL OR a.account_id IS NOT NULL);

CREATE VIEW pending_invitations AS
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
       now() - i.first_seen_at AS age
FROM user_invitations i
LEFT JOIN roles ro ON ro.role_id = i.role_id
WHERE i.removed_at IS NULL;

CREATE VIEW customer_freshness AS
SELECT c.customer_id,
       c.name,
       c.last_success_at,
       now() - c.last_success_at AS age,
       c.last_error,
       c.last_attempt_at
FROM customers c;

-- stale_invitations: pending invitations older than older_than, or already
-- expired but still listed.
CREATE FUNCTION stale_invitations(older_than interval)
RETURNS SETOF pending_invitations
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT p.* FROM pending_invitations p
    WHERE p.age > $1 OR p.expired
    ORDER BY p.first_seen_at, p.invitation_id
$$;

-- access_as_of: the access rows as they were at a past time, from history.
CREATE FUNCTION access_as_of(at timestamptz)
RETURNS TABLE (
    user_id      bigint,
    user_name    text,
    email        text,
    customer_id  bigint,
    role_id      integer,
    role_name    text,
    account_id   bigint,
    account_name text
)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH u AS (
        SELECT DISTINCT ON (h.user_id) h.user_id, h.user_name, h.email
        FROM users_history h
        WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
          AND h.change <> 'removed'
        ORDER BY h.user_id, (h.customer_id = h.home_customer_id) DESC NULLS LAST, h.customer_id
    ), r AS (
        SELECT h.user_id, h.customer_id, h.role_id, h.account_ids
        FROM user_roles_history h
        WHERE h.valid_from <= $1 AND (h.valid_to IS NULL OR h.valid_to > $1)
          AND h.change <> 'removed'
    )
    SELECT r.user_id, u.user_name, u.email, r.customer_id, r.role_id,
           coalesce(ro.name, 'Role ' || r.role_id),
           a.account_id, acc.name
    FROM r
    JOIN u ON u.user_id = r.user_id
    LEFT JOIN roles ro ON ro.role_id = r.role_id
    LEFT JOIN LATERAL unnest(r.account_ids) AS a (account_id) ON true
    LEFT JOIN accounts acc ON acc.account_id = a.account_id
    WHERE r.account_ids IS NULL OR a.account_id IS NOT NULL
$$;
