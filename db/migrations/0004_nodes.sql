-- 0004: things (every daemon and agent), shadows, agent enrollment and certificates, config
-- templates and overrides, the config change log.

-- ---------------------------------------------------------------------------------------------
-- thing: desired / reported are shadow documents {"<key>": {"ver": n, "value": ...}}; a key
-- too large to push is {"ver": n, "signal_only": true} and the thing pulls it. desired_ver /
-- reported_ver are the highest key versions on each side, so drift is desired_ver > reported_ver
-- (indexed for the drift job).
CREATE TABLE thing (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type            text NOT NULL CHECK (type IN ('hub', 'control-plane', 'gateway', 'proxy', 'agent')),
    name            text NOT NULL CHECK (name <> ''),
    org_id          uuid REFERENCES organization (id) ON DELETE RESTRICT,
    host            text,
    version         text,
    status          text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'online', 'offline', 'stale', 'revoked', 'decommissioned')),
    desired         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(desired) = 'object'),
    reported        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(reported) = 'object'),
    desired_ver     bigint NOT NULL DEFAULT 0 CHECK (desired_ver >= 0),
    reported_ver    bigint NOT NULL DEFAULT 0 CHECK (reported_ver >= 0),
    labels          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    last_seen       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX thing_type_name_idx ON thing (type, name);
CREATE INDEX thing_last_seen_idx ON thing (status, last_seen);
CREATE INDEX thing_drift_idx ON thing (type) WHERE desired_ver > reported_ver;
CREATE TRIGGER thing_updated_at BEFORE UPDATE ON thing
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- enrollment_token: hashed (SHA-256), single or N uses; use_count is bumped in the same
-- transaction that creates the agent, and the CHECK refuses the use past max_uses.
CREATE TABLE enrollment_token (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash      bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    token_prefix    text NOT NULL CHECK (char_length(token_prefix) BETWEEN 4 AND 16),
    org_id          uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    name            text NOT NULL DEFAULT '',
    labels          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    max_uses        integer NOT NULL DEFAULT 1 CHECK (max_uses >= 1),
    use_count       integer NOT NULL DEFAULT 0 CHECK (use_count >= 0),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    created_by      uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (use_count <= max_uses),
    CHECK (expires_at > created_at)
);
CREATE INDEX enrollment_token_org_idx ON enrollment_token (org_id);

-- ---------------------------------------------------------------------------------------------
-- thing_agent: the agent side of a thing. attestation_public_key is the raw 32-byte Ed25519
-- key the proxy verifies X-Nexus-Attestation with; cert_serial the current client certificate
-- (its history and revocations are in agent_certificate). device_token_hash authenticates the
-- WebSocket when mTLS is not available.
CREATE TABLE thing_agent (
    thing_id                    uuid PRIMARY KEY REFERENCES thing (id) ON DELETE CASCADE,
    os                          text NOT NULL CHECK (os IN ('linux', 'macos', 'windows')),
    os_version                  text NOT NULL DEFAULT '',
    agent_version               text NOT NULL DEFAULT '',
    hostname                    text NOT NULL DEFAULT '',
    attestation_public_key      bytea NOT NULL UNIQUE CHECK (octet_length(attestation_public_key) = 32),
    attestation_revoked_at      timestamptz,
    cert_serial                 text UNIQUE CHECK (cert_serial ~ '^[0-9a-f]{1,40}$'),
    cert_not_after              timestamptz,
    device_token_hash           bytea UNIQUE CHECK (octet_length(device_token_hash) = 32),
    enrollment_token_id         uuid REFERENCES enrollment_token (id) ON DELETE SET NULL,
    enrolled_at                 timestamptz NOT NULL DEFAULT now(),
    revoked_at                  timestamptz,
    revoked_reason              text,
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CHECK ((cert_serial IS NULL) = (cert_not_after IS NULL))
);
CREATE TRIGGER thing_agent_updated_at BEFORE UPDATE ON thing_agent
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- agent_certificate: every certificate the agent CA signed (serial = lowercase hex). The CRL is
-- the revoked rows whose not_after is still in the future.
CREATE TABLE agent_certificate (
    serial          text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]{1,40}$'),
    thing_id        uuid NOT NULL REFERENCES thing (id) ON DELETE CASCADE,
    subject         text NOT NULL,
    fingerprint_sha256 bytea NOT NULL UNIQUE CHECK (octet_length(fingerprint_sha256) = 32),
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text CHECK (revoked_reason IN
                        ('unspecified', 'key_compromise', 'superseded', 'cessation_of_operation')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (not_after > not_before),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX agent_certificate_thing_idx ON agent_certificate (thing_id);
CREATE INDEX agent_certificate_crl_idx ON agent_certificate (not_after) WHERE revoked_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- config_template: desired config per thing type and key; config_override: per thing. version
-- is the key's desired version, bumped on every write (see hub.md: one transaction under a
-- per-type advisory lock updates the template, bumps thing.desired_ver, logs the change).
CREATE TABLE config_template (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    thing_type  text NOT NULL CHECK (thing_type IN ('hub', 'control-plane', 'gateway', 'proxy', 'agent')),
    key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_.-]{0,127}$'),
    value       jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    signal_only boolean NOT NULL DEFAULT false,
    updated_by  uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (thing_type, key)
);
CREATE TRIGGER config_template_updated_at BEFORE UPDATE ON config_template
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE config_override (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    thing_id    uuid NOT NULL REFERENCES thing (id) ON DELETE CASCADE,
    key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_.-]{0,127}$'),
    value       jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_by  uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (thing_id, key)
);
CREATE TRIGGER config_override_updated_at BEFORE UPDATE ON config_override
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- config_change_event: append-only log of desired-config changes. Hubs and the console tail
-- it by seq (a cursor), which is why the key is a sequence rather than a uuid.
CREATE TABLE config_change_event (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change      text NOT NULL CHECK (change IN ('template', 'override', 'override_removed')),
    thing_type  text CHECK (thing_type IN ('hub', 'control-plane', 'gateway', 'proxy', 'agent')),
    thing_id    uuid REFERENCES thing (id) ON DELETE SET NULL,
    key         text NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    actor_id    uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (change <> 'template' OR thing_type IS NOT NULL)
);
CREATE INDEX config_change_event_thing_idx ON config_change_event (thing_id, seq) WHERE thing_id IS NOT NULL;
