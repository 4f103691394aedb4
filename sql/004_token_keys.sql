-- 004: a stored refresh token belongs to a sign-in, not to a developer token.
--
-- Until now oauth_tokens was keyed only by credential_key, a hash of the
-- OAuth client id and the developer token, so rotating the developer token
-- orphaned the stored refresh token. A token is now filed under the
-- environment, the client id and the signed-in user (the user GetUser
-- answers for a null UserId), and a run finds its token by environment and
-- client id (and microsoft_ads.user when several users of the client have
-- signed in). credential_key stays the primary key: new rows get a key
-- derived from those three ("user:<environment>:<client id>:<user id>").
--
-- Rows written before this migration keep their old key and NULL in the new
-- columns. The syncer cannot tell whose they are until it has called the
-- API, so it moves them itself: the first run that finds no row of the new
-- kind uses the old one, and once it knows the signed-in user it saves the
-- token under the new key and deletes the old row.
ALTER TABLE oauth_tokens
    ADD COLUMN environment text,
    ADD COLUMN client_id   text,
    ADD COLUMN user_id     bigint,
    ADD COLUMN user_name   text;

CREATE UNIQUE INDEX oauth_tokens_sign_in ON oauth_tokens (environment, client_id, user_id)
    WHERE user_id IS NOT NULL;

-- Sign-ins started by `syncer auth` and not finished yet: the state the
-- sign-in URL carries and the PKCE code verifier, so that the redirect can be
-- pasted into a later `syncer auth --code` (another process). Rows are
-- deleted when used and ignored after 15 minutes (the code lives about 10).
-- The verifier is encrypted with database.token_key when that is set.
CREATE TABLE oauth_sign_ins (
    state        text PRIMARY KEY,
    environment  text NOT NULL,
    client_id    text NOT NULL,
    redirect_uri text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('plain', 'aes-gcm')),
    verifier     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
