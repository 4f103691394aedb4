-- 007: reconciliation with the company's directory (`syncer reconcile`).
--
-- directory_people holds the last directory export loaded (replaced per
-- load: people absent from a new file are soft-removed, changed ones
-- updated, with history in directory_people_history, as for the entity
-- tables; directory_loads records each load). reconcile_settings holds the
-- rules the access_exceptions view applies, written from the config's
-- reconcile: and invitations.stale_after keys by every `syncer reconcile`
-- and after every sync, so the view is self-contained SQL: anyone may query
-- or export it without the syncer's config.
--
-- normalize_email is the one matching rule: a Microsoft Advertising user
-- and a directory person match when normalize_email of the user's
-- UserName or Email equals normalize_email of the person's email or UPN.

CREATE TABLE directory_loads (
    load_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    source     text NOT NULL,          -- the file name as given
    sha256     text NOT NULL,          -- of the file's bytes
    people     integer NOT NULL,       -- rows in the file
    added      integer NOT NULL DEFAULT 0,
    changed    integer NOT NULL DEFAULT 0,
    removed    integer NOT NULL DEFAULT 0,
    reappeared integer NOT NULL DEFAULT 0
);

-- One row per person of the directory. directory_id is the employee id when
-- the file has one for the person, else the UPN, else the email (both
-- lower-cased). loaded_at is when the row's current values were loaded (its
-- last change, reappearance or removal).
CREATE TABLE directory_people (
    directory_id  text PRIMARY KEY,
    email         text,
    upn           text,
    employee_id   text,
    display_name  text,
    status        text,
    manager       text,
    department    text,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    removed_at    timestamptz,
    loaded_at     timestamptz GENERATED ALWAYS AS (updated_at) STORED
);

CREATE TABLE directory_people_history (
    directory_id text NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz,
    change       text NOT NULL CHECK (change IN ('added', 'changed', 'removed', 'reappeared')),
    load_id      bigint REFERENCES directory_loads (load_id),
    email        text,
    upn          text,
    employee_id  text,
    display_name text,
    status       text,
    manager      text,
    department   text,
    PRIMARY KEY (directory_id, valid_from)
);

-- The rules of access_exceptions: at most one row (none until the first
-- `syncer reconcile` or sync writes it).
CREATE TABLE reconcile_settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    allowed_domains   text[] NOT NULL,    -- lower-case; empty: the domain checks are off
    domain_aliases    jsonb NOT NULL,     -- {"alias.com": "example.com"}, lower-case
    approved_agencies bigint[] NOT NULL,  -- managing customer ids allowed to hold privileged links
    active_statuses   text[] NOT NULL,    -- lower-case directory status values of people who still work here
    stale_after       interval NOT NULL,  -- invitations.stale_after
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- normalize_email: the key people and users are matched by. Lower-case
-- (as the database's LC_CTYPE has it), trimmed of spaces, tabs, line breaks
-- and no-break spaces; for an address (the part after its last @ is the domain): a
-- +tag is dropped from the local part (a+ads@x is a@x; a local part that
-- starts with + is kept whole), a trailing dot is dropped from the domain,
-- and an alias domain of aliases ({"alias.com": "example.com"}, lower-case)
-- becomes its target. A value without @ (a plain user name) is only
-- lower-cased and trimmed. NULL and blank give NULL.
--
-- The two-argument form is the rule itself: it reads no table, so the view
-- calls it per row at the cost of an expression (a function with its own
-- search_path, reading reconcile_settings on each call, cost ~0.15 ms a
-- call: minutes for a large tenant). The one-argument form takes the
-- aliases of reconcile_settings, for queries by hand.
CREATE FUNCTION normalize_email(address text, aliases jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v      text := lower(btrim(address, E' \t\r\n\u00a0'));
    at     int;
    local  text;
    domain text;
BEGIN
    IF v IS NULL OR v = '' THEN
        RETURN NULL;
    END IF;
    IF strpos(v, '@') = 0 THEN
        RETURN v;
    END IF;
    at := length(v) - strpos(reverse(v), '@') + 1; -- the last @
    local := left(v, at - 1);
    domain := rtrim(substr(v, at + 1), '.');
    IF local = '' OR domain = '' THEN
        RETURN v;
    END IF;
    IF strpos(local, '+') > 1 THEN
        local := left(local, strpos(local, '+') - 1);
    END IF;
    RETURN local || '@' || coalesce(aliases ->> domain, domain);
END
$$;

CREATE FUNCTION normalize_email(address text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT normalize_email($1, coalesce((SELECT s.domain_aliases FROM reconcile_settings s), '{}'))
$$;

-- email_domain: the domain of normalize_email(address, aliases) (an alias
-- already mapped to its target); NULL when it is not an address. The
-- one-argument form takes the aliases of reconcile_settings. The body is
-- SQL-standard (BEGIN ATOMIC, PostgreSQL 14+): it names normalize_email as
-- the function it is at creation, so the function can be inlined into
-- queries of roles whose search_path does not hold the schema.
CREATE FUNCTION email_domain(address text, aliases jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT substring(normalize_email(address, aliases) FROM '@([^@]+)$');
END;

CREATE FUNCTION email_domain(address text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT email_domain($1, coalesce((SELECT s.domain_aliases FROM reconcile_settings s), '{}'))
$$;

-- access_exceptions: one row per finding of the access review, over current
-- rows only (removed_at IS NULL).
--
--   no_owner          a users row (per listing customer) whose UserName and
--                     Email match no current directory person; only once a
--                     directory has been loaded
--   terminated        a users row matching directory people of whom none is
--                     active (status not in active_statuses; an empty
--                     status counts as active), while the user is still
--                     active here (detail_status not not_found, lifecycle
--                     not Inactive or Deleted); a user matching several
--                     people is owned when any of them is active
--   external_domain   a users row or pending invitation whose email domain
--                     (of Email; of UserName when Email is empty) is not in
--                     allowed_domains (off while allowed_domains is empty)
--   privileged_external
--                     a privileged_access grant held by a user whose email
--                     domain is not in allowed_domains (off while it is
--                     empty), or by an agency (a privileged client link)
--                     whose managing customer is not in approved_agencies
--   stale_invitation  stale_invitations(stale_after)
--   dormant_link      a current client link in a pending status
--                     (client_link_statuses.pending: LinkPending) last
--                     modified (else first seen) longer than stale_after ago;
--                     customer_id is the client entity's customer when
--                     known, else the synced customer whose search found it
--
-- Link rows carry the link's key: link_type, client_entity_id,
-- managing_customer_id; their email is the link's inviter_email.
CREATE VIEW access_exceptions AS
WITH s AS (
    -- one row at most (a singleton); LIMIT 1 tells the planner so (without
    -- statistics it guesses hundreds, multiplies them through the cross
    -- joins and, past jit_above_cost, spends ~150 ms compiling the query)
    SELECT * FROM reconcile_settings LIMIT 1
), a AS (
    -- the domain aliases, '{}' before any settings are written
    SELECT coalesce((SELECT r.domain_aliases FROM reconcile_settings r), '{}'::jsonb) AS aliases
), u AS (
    SELECT u.customer_id, u.user_id, u.user_name, u.email, u.detail_status, u.lifecycle_status,
           normalize_email(u.user_name, a.aliases) AS name_key,
           normalize_email(u.email, a.aliases) AS email_key,
           email_domain(coalesce(nullif(btrim(u.email), ''), u.user_name), a.aliases) AS domain,
           u.detail_status IS DISTINCT FROM 'not_found'
               AND coalesce(u.lifecycle_status, 'Active') NOT IN ('Inactive', 'Deleted') AS active_here
    FROM users u CROSS JOIN a
    WHERE u.removed_at IS NULL
), people AS (
    SELECT d.directory_id, d.status,
           nullif(btrim(d.status), '') IS NULL OR lower(btrim(d.status)) = ANY (s.active_statuses) AS active,
           normalize_email(d.email, a.aliases) AS email_key, normalize_email(d.upn, a.aliases) AS upn_key
    FROM directory_people d CROSS JOIN s CROSS JOIN a
    WHERE d.removed_at IS NULL
), person_keys AS (
    SELECT DISTINCT p.directory_id, p.status, p.active, k.key
    FROM people p CROSS JOIN LATERAL (VALUES (p.email_key), (p.upn_key)) AS k (key)
    WHERE k.key IS NOT NULL
), user_keys AS (
    SELECT DISTINCT u.customer_id, u.user_id, k.key
    FROM u CROSS JOIN LATERAL (VALUES (u.name_key), (u.email_key)) AS k (key)
    WHERE k.key IS NOT NULL
), matched AS (
    SELECT uk.customer_id, uk.user_id,
           bool_or(pk.active) AS any_active,
           count(DISTINCT pk.directory_id) AS people,
           string_agg(DISTINCT format('%s (%s)', pk.directory_id, coalesce(nullif(btrim(pk.status), ''), 'no status')), ', '
                      ORDER BY format('%s (%s)', pk.directory_id, coalesce(nullif(btrim(pk.status), ''), 'no status'))) AS who
    FROM user_keys uk
    JOIN person_keys pk ON pk.key = uk.key
    GROUP BY uk.customer_id, uk.user_id
), loaded AS (
    SELECT EXISTS (SELECT 1 FROM directory_loads) AS yes
)
SELECT 'no_owner'::text AS kind, u.customer_id, u.user_id, NULL::bigint AS invitation_id,
       NULL::text AS link_type, NULL::bigint AS client_entity_id, NULL::bigint AS managing_customer_id,
       u.email, u.user_name,
       CASE WHEN nullif(btrim(u.email), '') IS NULL
            THEN format('has no email, and user name %s matches no one in the directory', u.user_name)
            ELSE format('user name %s and email %s match no one in the directory', u.user_name, u.email)
       END AS reason
FROM u CROSS JOIN loaded
WHERE loaded.yes AND NOT EXISTS (SELECT 1 FROM matched m WHERE m.customer_id = u.customer_id AND m.user_id = u.user_id)
UNION ALL
SELECT 'terminated', u.customer_id, u.user_id, NULL, NULL, NULL, NULL, u.email, u.user_name,
       format('the directory lists %s: %s, none active, but the user is still %s here',
              CASE WHEN m.people = 1 THEN 'this person' ELSE m.people || ' people with this address' END,
              m.who, CASE WHEN u.detail_status = 'ok' THEN coalesce(u.lifecycle_status, 'listed') ELSE 'listed (' || u.detail_status || ')' END)
FROM u JOIN matched m ON m.customer_id = u.customer_id AND m.user_id = u.user_id
WHERE NOT m.any_active AND u.active_here
UNION ALL
SELECT 'external_domain', u.customer_id, u.user_id, NULL, NULL, NULL, NULL, u.email, u.user_name,
       format('email domain %s is not one of reconcile.allowed_domains', u.domain)
FROM u CROSS JOIN s
WHERE cardinality(s.allowed_domains) > 0 AND u.domain IS NOT NULL
  AND u.domain <> ALL (s.allowed_domains)
UNION ALL
SELECT 'external_domain', i.customer_id, NULL, i.invitation_id, NULL, NULL, NULL, i.email, NULL,
       format('pending invitation (%s) to email domain %s, which is not one of reconcile.allowed_domains', i.role_name, i.domain)
FROM (SELECT p.*, email_domain(p.email, a.aliases) AS domain FROM pending_invitations p CROSS JOIN a) i CROSS JOIN s
WHERE cardinality(s.allowed_domains) > 0 AND i.domain IS NOT NULL
  AND i.domain <> ALL (s.allowed_domains)
UNION ALL
SELECT 'privileged_external', g.customer_id, g.grantee_id, NULL, NULL, NULL, NULL, g.grantee_email, g.grantee_name,
       format('%s (%s) held by a user of email domain %s, which is not one of reconcile.allowed_domains, since %s',
              g.permission, CASE WHEN g.scope = 'customer' THEN 'every account' ELSE 'accounts ' || array_to_string(g.account_names, ', ') END,
              g.domain, to_char(g.held_since AT TIME ZONE 'UTC', 'YYYY-MM-DD'))
FROM (SELECT p.*, email_domain(coalesce(nullif(btrim(p.grantee_email), ''), p.grantee_name), a.aliases) AS domain
      FROM privileged_access p CROSS JOIN a WHERE p.grantee_kind = 'user') g CROSS JOIN s
WHERE cardinality(s.allowed_domains) > 0 AND g.domain <> ALL (s.allowed_domains)
UNION ALL
SELECT 'privileged_external', g.customer_id, NULL, NULL, g.link_type, g.customer_id, g.grantee_id, g.inviter_email, NULL,
       format('%s link (%s) held by agency %s (customer %s), which is not in reconcile.approved_agencies, since %s',
              g.link_type, coalesce(g.customer_link_permission, 'no permission'), coalesce(g.grantee_name, 'unnamed'), g.grantee_id,
              to_char(g.held_since AT TIME ZONE 'UTC', 'YYYY-MM-DD'))
FROM privileged_access g CROSS JOIN s
WHERE g.grantee_kind = 'agency' AND g.grantee_id <> ALL (s.approved_agencies)
UNION ALL
SELECT 'stale_invitation', i.customer_id, NULL, i.invitation_id, NULL, NULL, NULL, i.email, NULL,
       CASE WHEN i.expired
            THEN format('pending invitation (%s) expired on %s but is still listed', i.role_name, to_char(i.expiration_date AT TIME ZONE 'UTC', 'YYYY-MM-DD'))
            ELSE format('pending invitation (%s) sent about %s days ago (more than %s): anyone holding the link can accept it',
                        i.role_name, extract(day FROM i.age)::int, justify_hours(s.stale_after))
       END
FROM s CROSS JOIN LATERAL stale_invitations(s.stale_after) i
UNION ALL
SELECT 'dormant_link',
       coalesce(l.client_customer_id, CASE WHEN l.type = 'CustomerLink' THEN l.client_entity_id ELSE acc.customer_id END, l.searched_from_customer_id),
       NULL, NULL, l.type, l.client_entity_id, l.managing_customer_id, l.inviter_email, NULL,
       format('%s request by %s (customer %s) for %s %s is %s since %s (more than %s): accepting it would grant the access',
              l.type, coalesce(l.managing_customer_name, 'an agency'), l.managing_customer_id,
              CASE WHEN l.type = 'CustomerLink' THEN 'customer' ELSE 'account' END, coalesce(l.client_entity_name, l.client_entity_id::text),
              l.status, to_char(coalesce(l.last_modified_time, l.first_seen_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), justify_hours(s.stale_after))
FROM client_links l
JOIN client_link_statuses st ON st.status = l.status AND st.pending
LEFT JOIN accounts acc ON l.type <> 'CustomerLink' AND acc.account_id = l.client_entity_id
CROSS JOIN s
WHERE l.removed_at IS NULL AND coalesce(l.last_modified_time, l.first_seen_at) < now() - s.stale_after;

COMMENT ON VIEW access_exceptions IS
    'One row per finding of the access review (kind, customer_id, user_id / invitation_id / link key, email, reason); rules in reconcile_settings, written by syncer reconcile';
