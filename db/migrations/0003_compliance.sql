-- 0003: compliance configuration: hooks, rule packs and rules, per-org overrides, the proxy and
-- agent interception host list, exemptions.

-- ---------------------------------------------------------------------------------------------
-- hook_config: one configured hook. scope_kind says which of org/project/virtual_key is set
-- (none for global). stream_mode applies to response-stage hooks on streaming responses.
CREATE TABLE hook_config (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (name <> ''),
    implementation  text NOT NULL CHECK (implementation IN (
                        'keyword-filter', 'pii-detector', 'content-safety', 'rulepack-engine',
                        'rate-limiter', 'request-size-validator', 'ip-access-filter',
                        'data-residency', 'webhook-forward')),
    stage           text NOT NULL CHECK (stage IN ('connection', 'request', 'response')),
    priority        integer NOT NULL DEFAULT 0,
    fail_behavior   text NOT NULL DEFAULT 'fail-open' CHECK (fail_behavior IN ('fail-open', 'fail-closed')),
    timeout_ms      integer NOT NULL DEFAULT 1000 CHECK (timeout_ms BETWEEN 1 AND 60000),
    ingress         text NOT NULL DEFAULT 'all' CHECK (ingress IN ('all', 'gateway', 'proxy', 'agent')),
    stream_mode     text NOT NULL DEFAULT 'observe' CHECK (stream_mode IN ('observe', 'incremental', 'buffer')),
    config          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    enabled         boolean NOT NULL DEFAULT true,
    scope_kind      text NOT NULL DEFAULT 'global'
                        CHECK (scope_kind IN ('global', 'org', 'project', 'virtual_key')),
    org_id          uuid REFERENCES organization (id) ON DELETE CASCADE,
    project_id      uuid REFERENCES project (id) ON DELETE CASCADE,
    virtual_key_id  uuid REFERENCES virtual_key (id) ON DELETE CASCADE,
    created_by      uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope_kind = 'global' AND num_nonnulls(org_id, project_id, virtual_key_id) = 0)
        OR (scope_kind = 'org' AND org_id IS NOT NULL AND num_nonnulls(project_id, virtual_key_id) = 0)
        OR (scope_kind = 'project' AND project_id IS NOT NULL AND num_nonnulls(org_id, virtual_key_id) = 0)
        OR (scope_kind = 'virtual_key' AND virtual_key_id IS NOT NULL AND num_nonnulls(org_id, project_id) = 0)),
    CONSTRAINT hook_config_name_key UNIQUE NULLS NOT DISTINCT (org_id, project_id, virtual_key_id, name)
);
CREATE TRIGGER hook_config_updated_at BEFORE UPDATE ON hook_config
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- rule_pack / rule: the YAML packs from the repository, seeded (source = 'builtin') or written
-- by admins ('custom'). content_sha256 lets the seeder skip an unchanged pack. rule.rule_id is
-- the stable public id that events, overrides and the engine use, unique across packs.
CREATE TABLE rule_pack (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    version         text NOT NULL CHECK (version <> ''),
    description     text NOT NULL DEFAULT '',
    source          text NOT NULL DEFAULT 'builtin' CHECK (source IN ('builtin', 'custom')),
    content_sha256  bytea CHECK (octet_length(content_sha256) = 32),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER rule_pack_updated_at BEFORE UPDATE ON rule_pack
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE rule (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_pack_id    uuid NOT NULL REFERENCES rule_pack (id) ON DELETE CASCADE,
    rule_id         text NOT NULL UNIQUE CHECK (rule_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    category        text NOT NULL CHECK (category ~ '^[a-z][a-z0-9-]{0,62}$'),
    severity        text NOT NULL CHECK (severity IN ('hard', 'soft', 'warn')),
    pattern         text NOT NULL CHECK (pattern <> ''),
    flags           text[] NOT NULL DEFAULT '{}'
                        CHECK (flags <@ ARRAY['caseless', 'dotall', 'multiline', 'utf8', 'ucp']),
    description     text NOT NULL DEFAULT '',
    labels          text[] NOT NULL DEFAULT '{}',
    validator       text CHECK (validator ~ '^[a-z][a-z0-9_-]{0,62}$'),
    examples        text[] NOT NULL DEFAULT '{}',
    counterexamples text[] NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rule_pack_idx ON rule (rule_pack_id);
CREATE INDEX rule_category_idx ON rule (category);
CREATE TRIGGER rule_updated_at BEFORE UPDATE ON rule
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- rule_override: per org, disable a rule or change its severity. It names the public rule_id
-- so an override survives a pack reseed that recreates the rule row.
CREATE TABLE rule_override (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    rule_id     text NOT NULL,
    disabled    boolean NOT NULL DEFAULT false,
    severity    text CHECK (severity IN ('hard', 'soft', 'warn')),
    reason      text NOT NULL DEFAULT '',
    created_by  uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, rule_id),
    CHECK (disabled OR severity IS NOT NULL)
);
CREATE INDEX rule_override_rule_idx ON rule_override (rule_id);
CREATE TRIGGER rule_override_updated_at BEFORE UPDATE ON rule_override
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- interception_domain: hosts the proxy bumps and the agent intercepts. A pattern is a lower-
-- case host whose labels may be '*' (one label): 'api.openai.com', '*.openai.azure.com',
-- 'bedrock-runtime.*.amazonaws.com'. builtin marks the shipped list (seeded, not migrated).
CREATE TABLE interception_domain (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pattern     text NOT NULL UNIQUE
                    CHECK (pattern ~ '^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?))+$'),
    provider    text,
    description text NOT NULL DEFAULT '',
    builtin     boolean NOT NULL DEFAULT false,
    enabled     boolean NOT NULL DEFAULT true,
    created_by  uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER interception_domain_updated_at BEFORE UPDATE ON interception_domain
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- exemption: what escapes inspection. bypass = 'interception': matching connections tunnel
-- untouched (certificate-pinned or exempt hosts, exempt source networks); bypass = 'hooks':
-- traffic is still audited but hooks are skipped (a user or a key). expires_at NULL = standing.
CREATE TABLE exemption (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            text NOT NULL CHECK (kind IN ('host', 'source_cidr', 'user', 'virtual_key')),
    host_pattern    text CHECK (host_pattern ~ '^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?))+$'),
    source_cidr     cidr,
    user_id         uuid REFERENCES app_user (id) ON DELETE CASCADE,
    virtual_key_id  uuid REFERENCES virtual_key (id) ON DELETE CASCADE,
    bypass          text NOT NULL CHECK (bypass IN ('interception', 'hooks')),
    certificate_pinned boolean NOT NULL DEFAULT false,
    reason          text NOT NULL CHECK (reason <> ''),
    expires_at      timestamptz,
    created_by      uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(host_pattern, source_cidr, user_id, virtual_key_id) = 1),
    CHECK ((kind = 'host') = (host_pattern IS NOT NULL)),
    CHECK ((kind = 'source_cidr') = (source_cidr IS NOT NULL)),
    CHECK ((kind = 'user') = (user_id IS NOT NULL)),
    CHECK ((kind = 'virtual_key') = (virtual_key_id IS NOT NULL)),
    CHECK (kind IN ('host', 'source_cidr') OR bypass = 'hooks'),
    CHECK (NOT certificate_pinned OR kind = 'host')
);
CREATE INDEX exemption_user_idx ON exemption (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX exemption_key_idx ON exemption (virtual_key_id) WHERE virtual_key_id IS NOT NULL;
