-- 0005: traffic events, their payloads, and the writer's dead-letter table.
--
-- Partitioning. traffic_event and traffic_event_payload are PARTITION BY RANGE (ts), one
-- partition per UTC day named <table>_pYYYYMMDD, created ahead and dropped whole at retention
-- by nexus.storage.partitions (never DELETE). Each has a DEFAULT partition so an event for a
-- day without a partition (clock skew, maintenance not yet run) is stored rather than lost;
-- partition maintenance moves such rows into their day's partition when it creates it, and
-- warns while the default partition holds rows.
--
-- De-duplication. A unique constraint on a partitioned table must contain the partition key,
-- so the key is (event_id, ts), and ts is not free: event_id is the UUIDv7 the emitter minted
-- and ts MUST be its embedded millisecond timestamp (uuid7_time(event_id)), which a CHECK
-- enforces. ts is then a function of event_id, (event_id, ts) is unique exactly when event_id
-- is, and every copy of a redelivered event targets the same partition, so the writer's
--     INSERT INTO traffic_event SELECT ... FROM staging ON CONFLICT (event_id, ts) DO NOTHING
-- drops duplicates whatever path they took. The same holds for payloads keyed by
-- (event_id, ts, kind).
--
-- Only sets closed by design (source, cache status, payload kind) carry a CHECK here. Other
-- labels (endpoint type, error code, decision...) are validated by the emitter: the writer
-- must never reject an event from a newer agent, or it would land in the dead-letter table.

-- The millisecond Unix timestamp in the first 48 bits of a UUIDv7; NULL for other versions,
-- which the CHECKs below therefore reject (IS NOT DISTINCT FROM, not =).
CREATE FUNCTION uuid7_time(id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN substr(id::text, 15, 1) = '7'
    THEN to_timestamp(('x' || translate(left(id::text, 13), '-', ''))::bit(48)::bigint / 1000.0)
END;

-- ---------------------------------------------------------------------------------------------
-- One row per request through any pipe. Durations are microseconds; money micro-dollars;
-- tokens: input (prompt, including cache reads and writes), output (completion), reasoning,
-- cached_input (provider cache reads), cache_creation (provider cache writes).
-- received_at is when the writer stored it: the rollup job reads by received_at (with a lag
-- for in-flight transactions) so late events (offline agents) still reach the rollups.
CREATE TABLE traffic_event (
    event_id                uuid NOT NULL,
    ts                      timestamptz NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now(),
    source                  text NOT NULL CHECK (source IN ('gateway', 'proxy', 'agent')),
    thing_id                uuid,
    org_id                  uuid,
    project_id              uuid,
    user_id                 uuid,
    virtual_key_id          uuid,
    credential_id           uuid,
    provider_id             uuid,
    routing_rule_id         uuid,
    request_id              text,
    trace_id                text,
    source_ip               inet,
    user_agent              text,
    process_name            text,
    method                  text,
    host                    text,
    path                    text,
    endpoint_type           text,
    ingress_format          text,
    stream                  boolean NOT NULL DEFAULT false,
    status_code             smallint CHECK (status_code BETWEEN 100 AND 599),
    error_code              text,
    error_message           text,
    requested_model         text,
    provider                text,
    model                   text,
    attempts                smallint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    attempt_log             jsonb,
    strategy_trace          jsonb,
    ab_arm                  text,
    total_us                bigint CHECK (total_us >= 0),
    upstream_ttfb_us        bigint CHECK (upstream_ttfb_us >= 0),
    upstream_total_us       bigint CHECK (upstream_total_us >= 0),
    request_hooks_us        integer CHECK (request_hooks_us >= 0),
    response_hooks_us       integer CHECK (response_hooks_us >= 0),
    cache_lookup_us         integer CHECK (cache_lookup_us >= 0),
    overhead_us             integer CHECK (overhead_us >= 0),
    input_tokens            integer NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens           integer NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    reasoning_tokens        integer NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    cached_input_tokens     integer NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    cache_creation_tokens   integer NOT NULL DEFAULT 0 CHECK (cache_creation_tokens >= 0),
    cost_micro_usd          bigint NOT NULL DEFAULT 0 CHECK (cost_micro_usd >= 0),
    cache_savings_micro_usd bigint NOT NULL DEFAULT 0 CHECK (cache_savings_micro_usd >= 0),
    cache_status            text CHECK (cache_status IN ('hit', 'miss', 'bypass', 'semantic')),
    cache_similarity        real CHECK (cache_similarity BETWEEN -1 AND 1),
    request_decision        text,
    response_decision       text,
    decision_reason         text,
    rule_ids                text[] NOT NULL DEFAULT '{}',
    request_hooks           jsonb,
    response_hooks          jsonb,
    tags                    text[] NOT NULL DEFAULT '{}',
    passthrough_flags       text[] NOT NULL DEFAULT '{}',
    kill_switch             boolean NOT NULL DEFAULT false,
    attestation_verified    boolean,
    attested_agent_id       uuid,
    bump_status             text,
    attributes              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    CONSTRAINT traffic_event_ts_from_id CHECK (ts IS NOT DISTINCT FROM uuid7_time(event_id)),
    CONSTRAINT traffic_event_pkey PRIMARY KEY (event_id, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE traffic_event_default PARTITION OF traffic_event DEFAULT;

CREATE INDEX traffic_event_org_ts_idx ON traffic_event (org_id, ts);
CREATE INDEX traffic_event_key_ts_idx ON traffic_event (virtual_key_id, ts) WHERE virtual_key_id IS NOT NULL;
CREATE INDEX traffic_event_request_id_idx ON traffic_event (request_id) WHERE request_id IS NOT NULL;
-- Rows arrive roughly in time order, so block-range indexes serve time scans for a few pages.
CREATE INDEX traffic_event_ts_brin ON traffic_event USING brin (ts);
CREATE INDEX traffic_event_received_brin ON traffic_event USING brin (received_at);

COMMENT ON TABLE traffic_event IS
    'Partitioned by UTC day on ts; ts = uuid7_time(event_id), so ON CONFLICT (event_id, ts) de-duplicates.';

-- ---------------------------------------------------------------------------------------------
-- Captured bodies. kind: request, response (assembled text for streams), response_stream (the
-- raw SSE bytes, bounded). Inline up to the capture limit in body; beyond it the body is in
-- the spill store and the row keeps the reference {backend, key, size, sha256}. Exactly one
-- of the two is present. size_bytes is the size seen on the wire, which exceeds the stored
-- size when truncated. redacted = what is stored is the post-redaction text.
CREATE TABLE traffic_event_payload (
    event_id        uuid NOT NULL,
    ts              timestamptz NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('request', 'response', 'response_stream')),
    content_type    text,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    truncated       boolean NOT NULL DEFAULT false,
    redacted        boolean NOT NULL DEFAULT false,
    body            bytea,
    spill_backend   text CHECK (spill_backend IN ('fs', 's3')),
    spill_key       text CHECK (spill_key <> ''),
    spill_size      bigint CHECK (spill_size >= 0),
    spill_sha256    bytea CHECK (octet_length(spill_sha256) = 32),
    CONSTRAINT traffic_event_payload_ts_from_id CHECK (ts IS NOT DISTINCT FROM uuid7_time(event_id)),
    CONSTRAINT traffic_event_payload_spill_ref CHECK (num_nulls(spill_backend, spill_key, spill_size, spill_sha256) IN (0, 4)),
    CONSTRAINT traffic_event_payload_one_store CHECK ((body IS NULL) <> (spill_key IS NULL)),
    CONSTRAINT traffic_event_payload_pkey PRIMARY KEY (event_id, ts, kind)
) PARTITION BY RANGE (ts);

CREATE TABLE traffic_event_payload_default PARTITION OF traffic_event_payload DEFAULT;

-- Bodies past ~2 KiB are TOAST-compressed as they are written; at the writer's ingest rate
-- lz4 costs a fraction of the CPU of the default pglz. Day partitions copy the setting from
-- the parent (LIKE ... INCLUDING COMPRESSION); a server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE traffic_event_payload ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE traffic_event_payload_default ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: payload bodies are compressed with pglz';
END
$$;

-- ---------------------------------------------------------------------------------------------
-- traffic_event_dlq: a JetStream message the writer could not store after its retries, kept
-- raw with the last error. (stream, stream_seq) identifies the message, so recording the same
-- failure twice (writer restart before the ack) is a no-op with ON CONFLICT DO NOTHING.
CREATE TABLE traffic_event_dlq (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    stream          text NOT NULL,
    stream_seq      bigint NOT NULL CHECK (stream_seq > 0),
    subject         text NOT NULL,
    event_id        uuid,
    headers         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    payload         bytea NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL CHECK (attempts >= 1),
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    UNIQUE (stream, stream_seq),
    CHECK (last_failed_at >= first_failed_at)
);
CREATE INDEX traffic_event_dlq_pending_idx ON traffic_event_dlq (first_failed_at) WHERE replayed_at IS NULL;
CREATE INDEX traffic_event_dlq_event_idx ON traffic_event_dlq (event_id) WHERE event_id IS NOT NULL;
