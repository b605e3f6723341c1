-- 0007: sign-in state. Single-use OAuth authorization codes, the authentication methods a
-- session was established with (so refreshed access tokens keep saying whether MFA was used),
-- and the last accepted TOTP step (a TOTP code is accepted once).

-- ---------------------------------------------------------------------------------------------
-- oauth_authorization_code: stored as SHA-256, bound to client, redirect URI and PKCE challenge.
-- Redemption sets used_at in the same statement that finds the row, so a code is redeemed once;
-- family_id is the session its tokens join, fixed up front so that a replayed code can revoke
-- the tokens the first redemption issued (OAuth 2.1 §4.1.3). Rows are pruned an hour after
-- expiry by the control plane.
CREATE TABLE oauth_authorization_code (
    code_hash       bytea PRIMARY KEY CHECK (octet_length(code_hash) = 32),
    client_id       uuid NOT NULL REFERENCES oauth_client (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    redirect_uri    text NOT NULL,
    code_challenge  text NOT NULL CHECK (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
    scopes          text[] NOT NULL DEFAULT '{}',
    amr             text[] NOT NULL DEFAULT '{}',
    auth_time       timestamptz NOT NULL,
    family_id       uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX oauth_authorization_code_expires_idx ON oauth_authorization_code (expires_at);

-- ---------------------------------------------------------------------------------------------
-- refresh_token: rotation copies amr and auth_time to the successor.
ALTER TABLE refresh_token
    ADD COLUMN amr text[] NOT NULL DEFAULT '{}',
    ADD COLUMN auth_time timestamptz;

-- ---------------------------------------------------------------------------------------------
-- app_user: the highest TOTP time step accepted; a code of this step or an earlier one is refused.
ALTER TABLE app_user ADD COLUMN totp_last_step bigint CHECK (totp_last_step >= 0);
