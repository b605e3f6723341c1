-- 0001: conventions, identity (organizations, projects, users, sign-in) and IAM.
--
-- Conventions for every migration in this directory:
--   * Each file runs in one transaction (nexus.storage.migrate); no BEGIN/COMMIT, no
--     CREATE INDEX CONCURRENTLY. Files are forward-only and never edited once applied.
--   * Primary keys are uuid DEFAULT gen_random_uuid(); traffic events carry UUIDv7 ids minted
--     by the emitting daemon (see 0005). Append-only logs read by cursor use bigint sequences.
--   * Every instant is timestamptz; calendar buckets and partitions use UTC days.
--   * Money is bigint micro-dollars (1 USD = 1 000 000). Prices are bigint micro-dollars per
--     million tokens, so cost_micro_usd = tokens * price / 1 000 000 in integer arithmetic.
--   * Closed sets are text with a CHECK; open-ended documents and settings are jsonb objects.
--   * Secrets are never stored in clear: tokens and keys as 32-byte HMAC-SHA256 / SHA-256
--     digests (bytea), recoverable secrets as AES-256-GCM ciphertext + 12-byte nonce + key_id.
--   * ON DELETE: RESTRICT from substantive resources to their organization/project (deleting
--     an org must be deliberate), CASCADE for rows owned by their parent (memberships, tokens,
--     overrides), SET NULL for "who did it" references. History tables (traffic, rollups,
--     admin audit) keep ids without foreign keys: they outlive the rows they name.
--   * updated_at is maintained by the set_updated_at() trigger, never by callers.

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- organization: a tree. path is the slash-joined slugs from the root ('acme/emea/sales'); it is
-- the scope segment of NRNs, and "org policy covers its children" is a prefix match on it, so
-- the database keeps it true: a trigger derives it from the parent and rewrites descendants
-- when an org is renamed or moved (and refuses to move an org under itself).
CREATE TABLE organization (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    parent_id   uuid REFERENCES organization (id) ON DELETE RESTRICT,
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    path        text COLLATE "C" NOT NULL UNIQUE,
    name        text NOT NULL CHECK (name <> ''),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    tags        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
-- path is COLLATE "C", so this btree also serves `path LIKE 'acme/%'` subtree scans.
CREATE INDEX organization_parent_idx ON organization (parent_id);

CREATE FUNCTION organization_derive_path() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parent_path text;
BEGIN
    IF NEW.parent_id IS NULL THEN
        NEW.path := NEW.slug;
    ELSE
        SELECT o.path INTO parent_path FROM organization o WHERE o.id = NEW.parent_id;
        IF parent_path IS NULL THEN
            RAISE EXCEPTION 'organization parent % does not exist', NEW.parent_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF TG_OP = 'UPDATE' AND (parent_path = OLD.path OR parent_path LIKE OLD.path || '/%') THEN
            RAISE EXCEPTION 'organization % cannot move under itself or its descendant', OLD.path
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.path := parent_path || '/' || NEW.slug;
    END IF;
    RETURN NEW;
END
$$;

-- Touching a child's path makes organization_derive_path recompute it from the (already
-- updated) parent, and that child's own AFTER trigger carries on down the tree.
CREATE FUNCTION organization_cascade_path() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE organization SET path = path WHERE parent_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER organization_derive_path BEFORE INSERT OR UPDATE OF parent_id, slug, path
    ON organization FOR EACH ROW EXECUTE FUNCTION organization_derive_path();
CREATE TRIGGER organization_cascade_path AFTER UPDATE OF parent_id, slug, path
    ON organization FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path)
    EXECUTE FUNCTION organization_cascade_path();
CREATE TRIGGER organization_updated_at BEFORE UPDATE ON organization
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
CREATE TABLE project (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES organization (id) ON DELETE RESTRICT,
    slug        text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name        text NOT NULL CHECK (name <> ''),
    description text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    tags        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, slug),
    -- Target of composite foreign keys that pin a row's project to the same org as the row.
    UNIQUE (id, org_id)
);
CREATE TRIGGER project_updated_at BEFORE UPDATE ON project
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- identity_provider: where users sign in. 'local' = passwords in app_user; 'oidc' = federation
-- with JIT provisioning into org_id; group_mappings = [{"claim": "groups", "value": "sre",
-- "group_id": "<iam_group.id>"}, ...]. The client secret is vault ciphertext, never clear.
CREATE TABLE identity_provider (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                      uuid NOT NULL REFERENCES organization (id) ON DELETE RESTRICT,
    name                        text NOT NULL CHECK (name <> ''),
    kind                        text NOT NULL CHECK (kind IN ('local', 'oidc')),
    issuer                      text CHECK (issuer ~ '^https://'),
    client_id                   text,
    client_secret_ciphertext    bytea,
    client_secret_nonce         bytea CHECK (octet_length(client_secret_nonce) = 12),
    client_secret_key_id        text,
    scopes                      text[] NOT NULL DEFAULT '{openid,email,profile}',
    jit_enabled                 boolean NOT NULL DEFAULT false,
    group_mappings              jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(group_mappings) = 'array'),
    settings                    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    enabled                     boolean NOT NULL DEFAULT true,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name),
    CHECK (kind = 'local' OR (issuer IS NOT NULL AND client_id IS NOT NULL)),
    CHECK (num_nulls(client_secret_ciphertext, client_secret_nonce, client_secret_key_id) IN (0, 3))
);
CREATE UNIQUE INDEX identity_provider_issuer_client_key ON identity_provider (issuer, client_id)
    WHERE kind = 'oidc';
CREATE TRIGGER identity_provider_updated_at BEFORE UPDATE ON identity_provider
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- app_user ("user" is reserved). email is stored normalised (trimmed, lower case) so the plain
-- UNIQUE is the case-insensitive one. password_hash is a PHC string (scrypt or argon2id), NULL
-- for federated-only users. TOTP secrets are vault ciphertext.
CREATE TABLE app_user (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                  uuid NOT NULL REFERENCES organization (id) ON DELETE RESTRICT,
    email                   text NOT NULL UNIQUE
                                CHECK (email = lower(btrim(email)) AND email ~ '^[^@\s]+@[^@\s]+$'),
    display_name            text NOT NULL DEFAULT '',
    status                  text NOT NULL DEFAULT 'active'
                                CHECK (status IN ('invited', 'active', 'disabled')),
    can_access_console      boolean NOT NULL DEFAULT false,
    password_hash           text CHECK (password_hash LIKE '$%'),
    password_changed_at     timestamptz,
    must_change_password    boolean NOT NULL DEFAULT false,
    failed_login_count      integer NOT NULL DEFAULT 0 CHECK (failed_login_count >= 0),
    locked_until            timestamptz,
    totp_ciphertext         bytea,
    totp_nonce              bytea CHECK (octet_length(totp_nonce) = 12),
    totp_key_id             text,
    totp_enabled_at         timestamptz,
    identity_provider_id    uuid REFERENCES identity_provider (id) ON DELETE SET NULL,
    external_subject        text,
    attributes              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    last_login_at           timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nulls(totp_ciphertext, totp_nonce, totp_key_id) IN (0, 3)),
    CHECK (totp_enabled_at IS NULL OR totp_ciphertext IS NOT NULL),
    UNIQUE (identity_provider_id, external_subject)
);
CREATE INDEX app_user_org_idx ON app_user (org_id);
CREATE TRIGGER app_user_updated_at BEFORE UPDATE ON app_user
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- oauth_client: OAuth 2.1 clients (console, CLI, integrations). Public clients use PKCE only.
CREATE TABLE oauth_client (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id       text NOT NULL UNIQUE CHECK (client_id ~ '^[A-Za-z0-9._-]{3,128}$'),
    name            text NOT NULL CHECK (name <> ''),
    kind            text NOT NULL CHECK (kind IN ('public', 'confidential')),
    secret_hash     bytea CHECK (octet_length(secret_hash) = 32),
    redirect_uris   text[] NOT NULL DEFAULT '{}',
    grant_types     text[] NOT NULL DEFAULT '{authorization_code,refresh_token}'
                        CHECK (grant_types <@ ARRAY['authorization_code', 'refresh_token', 'client_credentials']),
    scopes          text[] NOT NULL DEFAULT '{}',
    first_party     boolean NOT NULL DEFAULT false,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'public') = (secret_hash IS NULL)),
    CHECK (kind = 'confidential' OR NOT 'client_credentials' = ANY (grant_types))
);
CREATE TRIGGER oauth_client_updated_at BEFORE UPDATE ON oauth_client
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- refresh_token: opaque tokens stored as SHA-256. Rotation inserts the successor with
-- rotated_from = the used token; UNIQUE (rotated_from) means a token can be rotated once, so a
-- concurrent or replayed rotation fails on the constraint and the caller revokes the family.
CREATE TABLE refresh_token (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash      bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    family_id       uuid NOT NULL,
    rotated_from    uuid UNIQUE REFERENCES refresh_token (id) ON DELETE SET NULL,
    user_id         uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    client_id       uuid NOT NULL REFERENCES oauth_client (id) ON DELETE CASCADE,
    scopes          text[] NOT NULL DEFAULT '{}',
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text CHECK (revoked_reason IN
                        ('logout', 'reuse_detected', 'admin', 'password_changed', 'user_disabled')),
    source_ip       inet,
    user_agent      text,
    CHECK (expires_at > issued_at),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX refresh_token_family_idx ON refresh_token (family_id);
CREATE INDEX refresh_token_user_idx ON refresh_token (user_id);
CREATE INDEX refresh_token_expires_idx ON refresh_token (expires_at);

-- ---------------------------------------------------------------------------------------------
-- admin_api_key: automation principals; what they may do comes from IAM attachments.
CREATE TABLE admin_api_key (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key_hash        bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    key_prefix      text NOT NULL CHECK (char_length(key_prefix) BETWEEN 4 AND 16),
    org_id          uuid NOT NULL REFERENCES organization (id) ON DELETE RESTRICT,
    name            text NOT NULL CHECK (name <> ''),
    description     text NOT NULL DEFAULT '',
    created_by      uuid REFERENCES app_user (id) ON DELETE SET NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    last_used_ip    inet,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_api_key_prefix_idx ON admin_api_key (key_prefix);
CREATE INDEX admin_api_key_org_idx ON admin_api_key (org_id);
CREATE TRIGGER admin_api_key_updated_at BEFORE UPDATE ON admin_api_key
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- IAM. org_id NULL = a system-wide policy/group (the seeded ones, managed = true, read-only
-- through the API). NULLS NOT DISTINCT makes names unique among system rows too.
CREATE TABLE iam_policy (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid REFERENCES organization (id) ON DELETE RESTRICT,
    name        text NOT NULL CHECK (name <> ''),
    description text NOT NULL DEFAULT '',
    document    jsonb NOT NULL CHECK (jsonb_typeof(document) = 'object'
                    AND jsonb_typeof(document -> 'Statement') = 'array'),
    managed     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT iam_policy_name_key UNIQUE NULLS NOT DISTINCT (org_id, name)
);
CREATE TRIGGER iam_policy_updated_at BEFORE UPDATE ON iam_policy
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE iam_group (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid REFERENCES organization (id) ON DELETE RESTRICT,
    name        text NOT NULL CHECK (name <> ''),
    description text NOT NULL DEFAULT '',
    managed     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT iam_group_name_key UNIQUE NULLS NOT DISTINCT (org_id, name)
);
CREATE TRIGGER iam_group_updated_at BEFORE UPDATE ON iam_group
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- source = 'oidc' marks memberships granted from IdP claims, which JIT sync may remove;
-- 'manual' ones are left alone by it.
CREATE TABLE iam_group_member (
    group_id    uuid NOT NULL REFERENCES iam_group (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    source      text NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'oidc')),
    added_by    uuid REFERENCES app_user (id) ON DELETE SET NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX iam_group_member_user_idx ON iam_group_member (user_id);

-- One principal per row, each a real foreign key. The unique indexes lead with the principal,
-- so "every policy of this principal" is an index scan.
CREATE TABLE iam_attachment (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    policy_id           uuid NOT NULL REFERENCES iam_policy (id) ON DELETE CASCADE,
    user_id             uuid REFERENCES app_user (id) ON DELETE CASCADE,
    group_id            uuid REFERENCES iam_group (id) ON DELETE CASCADE,
    admin_api_key_id    uuid REFERENCES admin_api_key (id) ON DELETE CASCADE,
    attached_by         uuid REFERENCES app_user (id) ON DELETE SET NULL,
    attached_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(user_id, group_id, admin_api_key_id) = 1),
    UNIQUE (user_id, policy_id),
    UNIQUE (group_id, policy_id),
    UNIQUE (admin_api_key_id, policy_id)
);
CREATE INDEX iam_attachment_policy_idx ON iam_attachment (policy_id);
