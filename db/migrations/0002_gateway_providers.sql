-- 0002: providers, credentials, models and prices; virtual keys, routing, quotas, passthrough,
-- and the PostgreSQL backend of the semantic cache.

-- ---------------------------------------------------------------------------------------------
-- provider: one upstream instance (an account/endpoint of an adapter type). settings carries
-- adapter specifics (azure api-version and deployment map, bedrock region, vertex project...).
CREATE TABLE provider (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    display_name text NOT NULL DEFAULT '',
    adapter     text NOT NULL CHECK (adapter IN (
                    'openai', 'anthropic', 'gemini', 'vertex', 'azure', 'bedrock', 'cohere',
                    'minimax', 'glm', 'replicate', 'voyage',
                    'deepseek', 'moonshot', 'mistral', 'groq', 'fireworks', 'together',
                    'perplexity', 'xai', 'huggingface', 'openai_compatible')),
    base_url    text NOT NULL CHECK (base_url ~ '^https?://[^\s]+$'),
    region      text,
    timeout_ms  integer NOT NULL DEFAULT 600000 CHECK (timeout_ms BETWEEN 1 AND 3600000),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER provider_updated_at BEFORE UPDATE ON provider
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- credential: an upstream secret, AES-256-GCM under data key key_id (master keys live outside
-- the database). Key rotation re-encrypts rows whose key_id is not current, hence the index.
-- health_* is the last verdict of the health check, for the console; the live circuit breaker
-- state is in provider_health.
CREATE TABLE credential (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id     uuid NOT NULL REFERENCES provider (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (name <> ''),
    ciphertext      bytea NOT NULL,
    nonce           bytea NOT NULL CHECK (octet_length(nonce) = 12),
    key_id          text NOT NULL,
    secret_hint     text NOT NULL DEFAULT '' CHECK (char_length(secret_hint) <= 8),
    weight          integer NOT NULL DEFAULT 1 CHECK (weight >= 0),
    enabled         boolean NOT NULL DEFAULT true,
    expires_at      timestamptz,
    rotated_at      timestamptz,
    health_status   text NOT NULL DEFAULT 'unknown'
                        CHECK (health_status IN ('unknown', 'healthy', 'degraded', 'unhealthy')),
    health_checked_at timestamptz,
    last_error      text,
    last_used_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, name)
);
CREATE INDEX credential_key_id_idx ON credential (key_id);
CREATE TRIGGER credential_updated_at BEFORE UPDATE ON credential
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- model: a model as one provider serves it. code is the public name clients ask for (the same
-- code may be served by several providers; routing picks), provider_model_id what goes
-- upstream (or the Azure deployment). Prices are bigint micro-dollars per million tokens:
-- $2.50 / Mtok = 2500000. cached_input = provider-cache reads, cache_write = Anthropic cache
-- creation, reasoning = reasoning/thinking tokens. All explicit (no "NULL means input price"),
-- so cost code has one formula.
CREATE TABLE model (
    id                                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id                         uuid NOT NULL REFERENCES provider (id) ON DELETE CASCADE,
    code                                text NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$'),
    provider_model_id                   text NOT NULL CHECK (provider_model_id <> ''),
    display_name                        text NOT NULL DEFAULT '',
    modality                            text NOT NULL DEFAULT 'chat'
                                            CHECK (modality IN ('chat', 'embedding', 'rerank', 'image', 'audio')),
    input_micro_usd_per_mtok            bigint NOT NULL DEFAULT 0 CHECK (input_micro_usd_per_mtok >= 0),
    output_micro_usd_per_mtok           bigint NOT NULL DEFAULT 0 CHECK (output_micro_usd_per_mtok >= 0),
    cached_input_micro_usd_per_mtok     bigint NOT NULL DEFAULT 0 CHECK (cached_input_micro_usd_per_mtok >= 0),
    cache_write_micro_usd_per_mtok      bigint NOT NULL DEFAULT 0 CHECK (cache_write_micro_usd_per_mtok >= 0),
    reasoning_micro_usd_per_mtok        bigint NOT NULL DEFAULT 0 CHECK (reasoning_micro_usd_per_mtok >= 0),
    context_window                      integer CHECK (context_window > 0),
    max_output_tokens                   integer CHECK (max_output_tokens > 0),
    default_max_tokens                  integer CHECK (default_max_tokens > 0),
    aliases                             text[] NOT NULL DEFAULT '{}',
    capabilities                        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(capabilities) = 'object'),
    enabled                             boolean NOT NULL DEFAULT true,
    deprecated_at                       timestamptz,
    created_at                          timestamptz NOT NULL DEFAULT now(),
    updated_at                          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider_id, code),
    CHECK (default_max_tokens IS NULL OR max_output_tokens IS NULL OR default_max_tokens <= max_output_tokens)
);
CREATE INDEX model_code_idx ON model (code);
CREATE INDEX model_aliases_idx ON model USING gin (aliases);
CREATE TRIGGER model_updated_at BEFORE UPDATE ON model
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE model IS 'Prices are bigint micro-dollars per million tokens ($2.50/Mtok = 2500000).';

-- ---------------------------------------------------------------------------------------------
-- provider_health: circuit breaker state per provider + credential as gateways last reported
-- it (credential_id NULL = provider without credentials). Rebuilt by gateways; not history.
CREATE TABLE provider_health (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id             uuid NOT NULL REFERENCES provider (id) ON DELETE CASCADE,
    credential_id           uuid REFERENCES credential (id) ON DELETE CASCADE,
    circuit_state           text NOT NULL DEFAULT 'closed'
                                CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    consecutive_failures    integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    error_rate              real NOT NULL DEFAULT 0 CHECK (error_rate BETWEEN 0 AND 1),
    latency_p50_ms          integer CHECK (latency_p50_ms >= 0),
    latency_p99_ms          integer CHECK (latency_p99_ms >= 0),
    last_success_at         timestamptz,
    last_failure_at         timestamptz,
    last_error              text,
    opened_at               timestamptz,
    reported_by             uuid,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT provider_health_target_key UNIQUE NULLS NOT DISTINCT (provider_id, credential_id)
);
CREATE TRIGGER provider_health_updated_at BEFORE UPDATE ON provider_health
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- virtual_key: key_hash = HMAC-SHA256(server secret, full key) is the auth lookup; key_prefix
-- (the key's first characters) is only for display and search. personal keys belong to a user,
-- application keys to a project; the composite foreign key keeps project and org consistent.
-- allowed_models are globs; '{*}' allows every model, '{}' none. rpm/tpm NULL = no limit.
CREATE TABLE virtual_key (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key_hash        bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    key_prefix      text NOT NULL CHECK (char_length(key_prefix) BETWEEN 4 AND 16),
    name            text NOT NULL CHECK (name <> ''),
    description     text NOT NULL DEFAULT '',
    kind            text NOT NULL CHECK (kind IN ('personal', 'application')),
    org_id          uuid NOT NULL REFERENCES organization (id) ON DELETE RESTRICT,
    project_id      uuid,
    owner_user_id   uuid REFERENCES app_user (id) ON DELETE CASCADE,
    allowed_models  text[] NOT NULL DEFAULT '{*}',
    rpm             integer CHECK (rpm > 0),
    tpm             bigint CHECK (tpm > 0),
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    revoked_by      uuid REFERENCES app_user (id) ON DELETE SET NULL,
    revoked_reason  text,
    last_used_at    timestamptz,
    created_by      uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, org_id) REFERENCES project (id, org_id) ON DELETE RESTRICT,
    CHECK ((kind = 'personal' AND owner_user_id IS NOT NULL)
        OR (kind = 'application' AND project_id IS NOT NULL AND owner_user_id IS NULL)),
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX virtual_key_prefix_idx ON virtual_key (key_prefix);
CREATE INDEX virtual_key_org_idx ON virtual_key (org_id);
CREATE INDEX virtual_key_project_idx ON virtual_key (project_id) WHERE project_id IS NOT NULL;
CREATE INDEX virtual_key_owner_idx ON virtual_key (owner_user_id) WHERE owner_user_id IS NOT NULL;
CREATE TRIGGER virtual_key_updated_at BEFORE UPDATE ON virtual_key
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- routing_rule: evaluated stage ascending, priority descending (held in memory by gateways).
-- match_conditions is a Mongo-style predicate; strategy a tree whose nodes carry "type".
-- org_id NULL = global rule.
CREATE TABLE routing_rule (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              uuid REFERENCES organization (id) ON DELETE RESTRICT,
    name                text NOT NULL CHECK (name <> ''),
    description         text NOT NULL DEFAULT '',
    stage               smallint NOT NULL DEFAULT 1 CHECK (stage IN (0, 1)),
    priority            integer NOT NULL DEFAULT 0,
    match_conditions    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(match_conditions) = 'object'),
    strategy            jsonb NOT NULL CHECK (jsonb_typeof(strategy) = 'object'
                            AND jsonb_typeof(strategy -> 'type') = 'string'),
    retry_policy        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(retry_policy) = 'object'),
    fallback_chain      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(fallback_chain) = 'array'),
    enabled             boolean NOT NULL DEFAULT true,
    created_by          uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT routing_rule_name_key UNIQUE NULLS NOT DISTINCT (org_id, name),
    -- stage 0 rules are policy filters and carry a policy strategy only.
    CHECK (stage = 1 OR strategy ->> 'type' = 'policy')
);
CREATE TRIGGER routing_rule_updated_at BEFORE UPDATE ON routing_rule
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- quota_policy: one limit on one axis. The subject column of the axis names the subject; when
-- it is NULL the policy is a per-subject default ("every key in this org: 1M tokens a day"),
-- scoped to scope_org_id's subtree (NULL = everywhere). model subjects are model codes.
-- Windows: calendar (UTC day/week/month) or sliding (window_seconds). Limits are in the unit:
-- requests, tokens, or micro-dollars. fail_mode is what to do when Valkey is unreachable.
CREATE TABLE quota_policy (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL CHECK (name <> ''),
    description         text NOT NULL DEFAULT '',
    scope_org_id        uuid REFERENCES organization (id) ON DELETE CASCADE,
    axis                text NOT NULL CHECK (axis IN
                            ('organization', 'project', 'user', 'virtual_key', 'provider', 'model')),
    org_id              uuid REFERENCES organization (id) ON DELETE CASCADE,
    project_id          uuid REFERENCES project (id) ON DELETE CASCADE,
    user_id             uuid REFERENCES app_user (id) ON DELETE CASCADE,
    virtual_key_id      uuid REFERENCES virtual_key (id) ON DELETE CASCADE,
    provider_id         uuid REFERENCES provider (id) ON DELETE CASCADE,
    model_code          text,
    unit                text NOT NULL CHECK (unit IN
                            ('requests', 'input_tokens', 'output_tokens', 'total_tokens', 'cost_micro_usd')),
    window_kind         text NOT NULL CHECK (window_kind IN ('calendar', 'sliding')),
    calendar_period     text CHECK (calendar_period IN ('day', 'week', 'month')),
    window_seconds      integer CHECK (window_seconds BETWEEN 1 AND 31 * 86400),
    soft_limit          bigint CHECK (soft_limit >= 0),
    hard_limit          bigint CHECK (hard_limit >= 0),
    hard_action         text NOT NULL DEFAULT 'block' CHECK (hard_action IN ('block', 'downgrade')),
    fail_mode           text NOT NULL DEFAULT 'closed' CHECK (fail_mode IN ('closed', 'open')),
    enabled             boolean NOT NULL DEFAULT true,
    created_by          uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(org_id, project_id, user_id, virtual_key_id, provider_id, model_code) <= 1),
    CHECK (org_id IS NULL OR axis = 'organization'),
    CHECK (project_id IS NULL OR axis = 'project'),
    CHECK (user_id IS NULL OR axis = 'user'),
    CHECK (virtual_key_id IS NULL OR axis = 'virtual_key'),
    CHECK (provider_id IS NULL OR axis = 'provider'),
    CHECK (model_code IS NULL OR axis = 'model'),
    CHECK ((window_kind = 'calendar' AND calendar_period IS NOT NULL AND window_seconds IS NULL)
        OR (window_kind = 'sliding' AND window_seconds IS NOT NULL AND calendar_period IS NULL)),
    CHECK (num_nonnulls(soft_limit, hard_limit) >= 1),
    CHECK (soft_limit IS NULL OR hard_limit IS NULL OR soft_limit <= hard_limit)
);
CREATE INDEX quota_policy_scope_idx ON quota_policy (scope_org_id);
CREATE INDEX quota_policy_org_idx ON quota_policy (org_id) WHERE org_id IS NOT NULL;
CREATE INDEX quota_policy_project_idx ON quota_policy (project_id) WHERE project_id IS NOT NULL;
CREATE INDEX quota_policy_user_idx ON quota_policy (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX quota_policy_key_idx ON quota_policy (virtual_key_id) WHERE virtual_key_id IS NOT NULL;
CREATE INDEX quota_policy_provider_idx ON quota_policy (provider_id) WHERE provider_id IS NOT NULL;
CREATE TRIGGER quota_policy_updated_at BEFORE UPDATE ON quota_policy
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- quota_override: a different limit for one subject of a policy (typically a per-subject
-- default), optionally until expires_at.
CREATE TABLE quota_override (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    quota_policy_id     uuid NOT NULL REFERENCES quota_policy (id) ON DELETE CASCADE,
    org_id              uuid REFERENCES organization (id) ON DELETE CASCADE,
    project_id          uuid REFERENCES project (id) ON DELETE CASCADE,
    user_id             uuid REFERENCES app_user (id) ON DELETE CASCADE,
    virtual_key_id      uuid REFERENCES virtual_key (id) ON DELETE CASCADE,
    provider_id         uuid REFERENCES provider (id) ON DELETE CASCADE,
    model_code          text,
    soft_limit          bigint CHECK (soft_limit >= 0),
    hard_limit          bigint CHECK (hard_limit >= 0),
    reason              text NOT NULL CHECK (reason <> ''),
    expires_at          timestamptz,
    created_by          uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(org_id, project_id, user_id, virtual_key_id, provider_id, model_code) = 1),
    CHECK (num_nonnulls(soft_limit, hard_limit) >= 1),
    CHECK (soft_limit IS NULL OR hard_limit IS NULL OR soft_limit <= hard_limit),
    CONSTRAINT quota_override_subject_key UNIQUE NULLS NOT DISTINCT
        (quota_policy_id, org_id, project_id, user_id, virtual_key_id, provider_id, model_code)
);
CREATE TRIGGER quota_override_updated_at BEFORE UPDATE ON quota_override
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- passthrough_setting: emergency bypass flags at three tiers, OR-merged by readers. Every
-- setting expires within 8 h; the expiry job stamps reverted_at. One live setting per target.
CREATE TABLE passthrough_setting (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tier                text NOT NULL CHECK (tier IN ('global', 'provider_type', 'provider_instance')),
    provider_adapter    text,
    provider_id         uuid REFERENCES provider (id) ON DELETE CASCADE,
    bypass_hooks        boolean NOT NULL DEFAULT false,
    bypass_cache        boolean NOT NULL DEFAULT false,
    bypass_normalize    boolean NOT NULL DEFAULT false,
    reason              text NOT NULL CHECK (reason <> ''),
    expires_at          timestamptz NOT NULL,
    reverted_at         timestamptz,
    created_by          uuid REFERENCES app_user (id) ON DELETE SET NULL,
    reverted_by         uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((tier = 'global' AND provider_adapter IS NULL AND provider_id IS NULL)
        OR (tier = 'provider_type' AND provider_adapter IS NOT NULL AND provider_id IS NULL)
        OR (tier = 'provider_instance' AND provider_adapter IS NULL AND provider_id IS NOT NULL)),
    CHECK (bypass_hooks OR bypass_cache OR bypass_normalize),
    CHECK (NOT bypass_normalize OR bypass_cache),
    CHECK (expires_at > created_at AND expires_at <= created_at + interval '8 hours')
);
CREATE UNIQUE INDEX passthrough_setting_live_key
    ON passthrough_setting (tier, provider_adapter, provider_id) NULLS NOT DISTINCT
    WHERE reverted_at IS NULL;
CREATE INDEX passthrough_setting_expiry_idx ON passthrough_setting (expires_at) WHERE reverted_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- semantic_cache_entry: the built-in semantic cache index when valkey-search is absent. The
-- vector is little-endian float32 (dims * 4 bytes); the answer itself stays in Valkey under
-- cache_key. scope is '' (global) or 'vk:<id>' / 'project:<id>' / 'org:<id>'.
CREATE TABLE semantic_cache_entry (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cache_key       text NOT NULL UNIQUE,
    provider        text NOT NULL,
    model           text NOT NULL,
    scope           text NOT NULL DEFAULT '',
    embedding_model text NOT NULL,
    dims            integer NOT NULL CHECK (dims BETWEEN 1 AND 16384),
    embedding       bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    CHECK (octet_length(embedding) = 4 * dims),
    CHECK (expires_at > created_at)
);
CREATE INDEX semantic_cache_entry_lookup_idx ON semantic_cache_entry (provider, model, scope);
CREATE INDEX semantic_cache_entry_expires_idx ON semantic_cache_entry (expires_at);
