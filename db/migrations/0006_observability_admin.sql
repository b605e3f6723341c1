-- 0006: usage rollups, alerts, the admin audit log (hash chain), jobs with leases, and
-- system metadata.

-- ---------------------------------------------------------------------------------------------
-- usage_rollup_5m / _1h / _1d: additive sums of traffic_event per bucket and dimensions, so
-- coarser tables are sums of finer ones, analytics never scan raw events, and quota counters
-- can be rebuilt after a Valkey loss. NULL dimensions are real ("no key": proxy traffic), and
-- the key is UNIQUE NULLS NOT DISTINCT so the rollup job can upsert
--     INSERT ... ON CONFLICT ON CONSTRAINT usage_rollup_5m_key DO UPDATE SET requests = usage_rollup_5m.requests + EXCLUDED.requests, ...
-- provider and model are names (history outlives provider rows). blocked counts events with a
-- block decision at either stage; errors counts events with an error code other than blocks.
-- total_us sums request durations (average = total_us / requests).
CREATE TABLE usage_rollup_5m (
    bucket                  timestamptz NOT NULL,
    source                  text NOT NULL CHECK (source IN ('gateway', 'proxy', 'agent')),
    org_id                  uuid,
    project_id              uuid,
    virtual_key_id          uuid,
    user_id                 uuid,
    provider                text,
    model                   text,
    requests                bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
    errors                  bigint NOT NULL DEFAULT 0 CHECK (errors >= 0),
    blocked                 bigint NOT NULL DEFAULT 0 CHECK (blocked >= 0),
    cache_hits              bigint NOT NULL DEFAULT 0 CHECK (cache_hits >= 0),
    input_tokens            bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens           bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cached_input_tokens     bigint NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    cache_creation_tokens   bigint NOT NULL DEFAULT 0 CHECK (cache_creation_tokens >= 0),
    reasoning_tokens        bigint NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    cost_micro_usd          bigint NOT NULL DEFAULT 0 CHECK (cost_micro_usd >= 0),
    cache_savings_micro_usd bigint NOT NULL DEFAULT 0 CHECK (cache_savings_micro_usd >= 0),
    total_us                bigint NOT NULL DEFAULT 0 CHECK (total_us >= 0),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE usage_rollup_1h (LIKE usage_rollup_5m INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
CREATE TABLE usage_rollup_1d (LIKE usage_rollup_5m INCLUDING DEFAULTS INCLUDING CONSTRAINTS);

ALTER TABLE usage_rollup_5m
    ADD CONSTRAINT usage_rollup_5m_bucket_aligned CHECK (extract(epoch FROM bucket) % 300 = 0),
    ADD CONSTRAINT usage_rollup_5m_key UNIQUE NULLS NOT DISTINCT
        (bucket, org_id, project_id, virtual_key_id, user_id, provider, model, source);
ALTER TABLE usage_rollup_1h
    ADD CONSTRAINT usage_rollup_1h_bucket_aligned CHECK (extract(epoch FROM bucket) % 3600 = 0),
    ADD CONSTRAINT usage_rollup_1h_key UNIQUE NULLS NOT DISTINCT
        (bucket, org_id, project_id, virtual_key_id, user_id, provider, model, source);
ALTER TABLE usage_rollup_1d
    ADD CONSTRAINT usage_rollup_1d_bucket_aligned CHECK (extract(epoch FROM bucket) % 86400 = 0),
    ADD CONSTRAINT usage_rollup_1d_key UNIQUE NULLS NOT DISTINCT
        (bucket, org_id, project_id, virtual_key_id, user_id, provider, model, source);

CREATE INDEX usage_rollup_5m_org_idx ON usage_rollup_5m (org_id, bucket);
CREATE INDEX usage_rollup_5m_key_idx ON usage_rollup_5m (virtual_key_id, bucket) WHERE virtual_key_id IS NOT NULL;
CREATE INDEX usage_rollup_1h_org_idx ON usage_rollup_1h (org_id, bucket);
CREATE INDEX usage_rollup_1h_key_idx ON usage_rollup_1h (virtual_key_id, bucket) WHERE virtual_key_id IS NOT NULL;
CREATE INDEX usage_rollup_1d_org_idx ON usage_rollup_1d (org_id, bucket);
CREATE INDEX usage_rollup_1d_key_idx ON usage_rollup_1d (virtual_key_id, bucket) WHERE virtual_key_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- alert: raised by daemons and jobs (quota soft limits, provider circuit open, default
-- partition holding rows, DLQ growth, certificate expiry, drift, agents offline). A repeat of
-- an unresolved alert with the same dedup_key bumps occurrences instead of adding a row.
CREATE TABLE alert (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    dedup_key       text NOT NULL,
    title           text NOT NULL CHECK (title <> ''),
    message         text NOT NULL DEFAULT '',
    org_id          uuid REFERENCES organization (id) ON DELETE CASCADE,
    resource_nrn    text,
    details         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    occurrences     integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by uuid REFERENCES app_user (id) ON DELETE SET NULL,
    resolved_at     timestamptz,
    resolved_by     uuid REFERENCES app_user (id) ON DELETE SET NULL,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (status = 'open' OR acknowledged_at IS NOT NULL OR resolved_at IS NOT NULL)
);
CREATE UNIQUE INDEX alert_unresolved_key ON alert (dedup_key) WHERE status <> 'resolved';
CREATE INDEX alert_recent_idx ON alert (status, last_seen_at);
CREATE INDEX alert_org_idx ON alert (org_id) WHERE org_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- admin_audit_log: every admin write (and denied attempt), append-only. hash =
-- SHA-256(prev_hash || canonical encoding of the row), computed by the control plane, whose
-- verifier recomputes the chain. The database guarantees the chain is a single line: prev_hash
-- is UNIQUE NULLS NOT DISTINCT, so there is exactly one genesis row (prev_hash NULL) and no two
-- rows can claim the same predecessor: concurrent appenders that read the same tail collide
-- and retry. UPDATE, DELETE and TRUNCATE are refused by triggers; anything that bypasses them
-- (a superuser) breaks the chain, which verification reports.
CREATE TABLE admin_audit_log (
    seq             bigserial PRIMARY KEY,
    id              uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    ts              timestamptz NOT NULL DEFAULT now(),
    actor_type      text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system', 'thing')),
    actor_id        uuid,
    actor_label     text NOT NULL DEFAULT '',
    action          text NOT NULL CHECK (action ~ '^[a-z][a-z0-9-]*:[A-Za-z0-9*._-]+$'),
    resource_nrn    text NOT NULL CHECK (resource_nrn LIKE 'nrn:nexus:%'),
    org_id          uuid,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
    before          jsonb,
    after           jsonb,
    source_ip       inet,
    user_agent      text,
    request_id      text,
    prev_hash       bytea CHECK (octet_length(prev_hash) = 32),
    hash            bytea NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    CONSTRAINT admin_audit_log_chain_key UNIQUE NULLS NOT DISTINCT (prev_hash),
    CHECK (actor_type = 'system' OR actor_id IS NOT NULL)
);
CREATE INDEX admin_audit_log_ts_idx ON admin_audit_log (ts);
CREATE INDEX admin_audit_log_actor_idx ON admin_audit_log (actor_id, seq) WHERE actor_id IS NOT NULL;
CREATE INDEX admin_audit_log_resource_idx ON admin_audit_log (resource_nrn text_pattern_ops);
CREATE INDEX admin_audit_log_org_idx ON admin_audit_log (org_id, seq) WHERE org_id IS NOT NULL;

CREATE FUNCTION admin_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER admin_audit_log_no_change BEFORE UPDATE OR DELETE ON admin_audit_log
    FOR EACH ROW EXECUTE FUNCTION admin_audit_log_append_only();
CREATE TRIGGER admin_audit_log_no_truncate BEFORE TRUNCATE ON admin_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION admin_audit_log_append_only();

-- ---------------------------------------------------------------------------------------------
-- job: a scheduled hub job with a PostgreSQL lease so one hub runs it at a time. A hub takes
-- the lease with
--     UPDATE job SET leased_by = $me, lease_expires_at = now() + $ttl, lease_epoch = lease_epoch + 1
--      WHERE name = $1 AND enabled AND next_run_at <= now()
--        AND (lease_expires_at IS NULL OR lease_expires_at < now()) RETURNING lease_epoch
-- and writes back only while lease_epoch is still its own (a fencing token: a hub that lost
-- its lease while paused cannot overwrite the new holder's state). state holds watermarks.
CREATE TABLE job (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    description         text NOT NULL DEFAULT '',
    interval_seconds    integer NOT NULL CHECK (interval_seconds >= 1),
    enabled             boolean NOT NULL DEFAULT true,
    next_run_at         timestamptz NOT NULL DEFAULT now(),
    leased_by           text,
    lease_expires_at    timestamptz,
    lease_epoch         bigint NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0),
    last_run_at         timestamptz,
    last_status         text CHECK (last_status IN ('succeeded', 'failed', 'abandoned')),
    config              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    state               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(state) = 'object'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((leased_by IS NULL) = (lease_expires_at IS NULL))
);
CREATE INDEX job_due_idx ON job (next_run_at) WHERE enabled;
CREATE TRIGGER job_updated_at BEFORE UPDATE ON job
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE job_run (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    lease_epoch     bigint NOT NULL,
    leased_by       text NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    error           text,
    result          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(result) = 'object'),
    UNIQUE (job_id, lease_epoch),
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (finished_at IS NULL OR finished_at >= started_at),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
CREATE INDEX job_run_recent_idx ON job_run (job_id, started_at);

-- ---------------------------------------------------------------------------------------------
-- system_metadata: install-wide settings and facts (install id, kill switch state, first-boot
-- markers), one jsonb value per dotted key.
CREATE TABLE system_metadata (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.-]{0,127}$'),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER system_metadata_updated_at BEFORE UPDATE ON system_metadata
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
