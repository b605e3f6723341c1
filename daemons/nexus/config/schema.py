"""The configuration schema of every daemon, as attrs classes.

One file (``/etc/nexus/nexus.toml`` on the appliance) configures the whole box:
shared sections (``[storage]``, ``[log]``, ``[runtime]``) plus one section per
daemon.  Every class forbids unknown keys (the loader structures with
``forbid_extra_keys``) and validates its values, so a typo is an error at start
that names the key, never a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import attrs
from attrs import validators as v

from nexus.config.signin import AuthSettings

LogLevel = Literal["debug", "info", "warning", "error"]


def _url(*schemes: str) -> v._ValidatorType[str]:  # type: ignore[name-defined]
    def check(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"{attribute.name}: expected a {'|'.join(schemes)}:// URL with a host, got {value!r}")

    return check


_port = v.and_(v.instance_of(int), v.ge(0), v.le(65535))
_positive = v.gt(0)
_positive_s = v.gt(0.0)  # seconds


@attrs.define(kw_only=True)
class Listen:
    """Where a daemon listens when systemd passes no socket named ``fd_name``."""

    host: str = "127.0.0.1"
    port: int = attrs.field(validator=_port)
    fd_name: str = "http"


def _listen(port: int, fd_name: str = "http", host: str = "127.0.0.1") -> Listen:
    return attrs.field(factory=lambda: Listen(host=host, port=port, fd_name=fd_name))


@attrs.define(kw_only=True)
class StorageConfig:
    database_url: str = attrs.field(
        default="postgresql://127.0.0.1:5432/nexus", validator=_url("postgresql", "postgres")
    )
    valkey_url: str = attrs.field(default="redis://127.0.0.1:6379/0", validator=_url("redis", "rediss", "valkey"))
    nats_url: str = attrs.field(default="nats://127.0.0.1:4222", validator=_url("nats", "tls"))
    pg_pool_size: int = attrs.field(default=10, validator=_positive)
    valkey_pool_size: int = attrs.field(default=16, validator=_positive)


@attrs.define(kw_only=True)
class LogConfig:
    level: LogLevel = "info"
    format: Literal["json", "text"] = "json"


@attrs.define(kw_only=True)
class RuntimeConfig:
    # Longer than a typical non-streaming LLM call so SIGTERM rarely cuts one short;
    # systemd's TimeoutStopSec on the appliance units is set above it.
    drain_timeout: float = attrs.field(default=25.0, validator=v.ge(0))
    state_dir: str = "/var/lib/nexus"


@attrs.define(kw_only=True)
class SecretsConfig:
    # Secret files live outside the TOML and the database (see nexus.crypto.secretfiles);
    # under systemd, $CREDENTIALS_DIRECTORY takes precedence.
    dir: str = "/etc/nexus/secrets"


@attrs.define(kw_only=True)
class HttpLimits:
    max_header_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    max_body_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_positive)
    header_timeout: float = attrs.field(default=10.0, validator=_positive_s)
    body_timeout: float = attrs.field(default=60.0, validator=_positive_s)
    idle_timeout: float = attrs.field(default=75.0, validator=_positive_s)
    max_inflight: int = attrs.field(default=10_000, validator=_positive)


def _semantic_model(inst: SemanticCacheConfig, _attr: attrs.Attribute[str], value: str) -> None:
    if inst.enabled and not value:
        raise ValueError("the semantic cache needs a catalog model code to embed prompts with")


@attrs.define(kw_only=True)
class SemanticCacheConfig:
    """The semantic cache (nexus.gateway.cache.semantic); its answers live in the exact cache, which must be on."""

    enabled: bool = False
    # A catalog model code served by an OpenAI-compatible provider (e.g. "mock-embedding").
    embedding_model: str = attrs.field(default="", validator=_semantic_model)
    # Vector length to ask the embedding model for; 0: the model's own.
    dimensions: int = attrs.field(default=0, validator=v.and_(v.ge(0), v.le(16384)))
    threshold: float = attrs.field(default=0.96, validator=v.and_(v.gt(0.0), v.le(1.0)))
    # Embedding plus search; past it the lookup is a miss.
    budget_ms: float = attrs.field(default=20.0, validator=_positive_s)
    # Opt-in: every request (default_on), requests for these model codes (globs) or from these virtual key ids;
    # the request header x-nexus-semantic-cache: on|off overrides all three.
    default_on: bool = False
    models: list[str] = attrs.field(factory=list)
    keys: list[str] = attrs.field(factory=list)
    backend: Literal["auto", "builtin", "valkey-search"] = "auto"
    # Vectors held in memory per gateway process (built-in backend), over all scopes.
    max_entries: int = attrs.field(default=50_000, validator=_positive)
    # Longer prompts are not embedded (embedding models cap their input).
    max_chars: int = attrs.field(default=8000, validator=_positive)
    breaker_failures: int = attrs.field(default=5, validator=_positive)
    breaker_open_seconds: float = attrs.field(default=30.0, validator=_positive_s)


def _semantic_needs_exact(inst: CacheConfig, _attr: attrs.Attribute[SemanticCacheConfig],
                          value: SemanticCacheConfig) -> None:
    if value.enabled and not inst.enabled:
        raise ValueError("semantic.enabled needs gateway.cache.enabled (semantic hits are read from the exact cache)")


@attrs.define(kw_only=True)
class CacheConfig:
    # Off by default: serving one caller's answer to another is an operator's decision.
    enabled: bool = False
    ttl_seconds: int = attrs.field(default=3600, validator=v.and_(v.ge(60), v.le(604800)))
    scope: Literal["global", "org", "project", "vk"] = "vk"  # vk: per virtual key
    deterministic_only: bool = False
    semantic: SemanticCacheConfig = attrs.field(factory=SemanticCacheConfig, validator=_semantic_needs_exact)


@attrs.define(kw_only=True)
class QuotaConfig:
    # What the key's own RPM/TPM limits do when Valkey cannot be reached (quota policies carry their own
    # fail_mode, 'closed' unless set): fail_closed answers 503; fail_open serves, counting in this process only
    # (the bound is in nexus.gateway.quota.engine).
    on_valkey_down: Literal["fail_closed", "fail_open"] = "fail_closed"


@attrs.define(kw_only=True)
class GatewayConfig:
    listen: Listen = _listen(3050, host="0.0.0.0")  # noqa: S104 - the gateway serves the network
    http: HttpLimits = attrs.field(factory=HttpLimits)
    upstream_pool_size: int = attrs.field(default=1024, validator=_positive)
    upstream_connect_timeout: float = attrs.field(default=5.0, validator=_positive_s)
    upstream_first_byte_timeout: float = attrs.field(default=120.0, validator=_positive_s)
    upstream_read_timeout: float = attrs.field(default=120.0, validator=_positive_s)
    # Client request headers copied to the upstream call, by lower-case name prefix (e.g. "x-mock-" for the
    # mock provider's knobs). Empty by default: a client must not steer the upstream unless the operator says so.
    forward_headers: list[str] = attrs.field(factory=list)
    cache: CacheConfig = attrs.field(factory=CacheConfig)
    quota: QuotaConfig = attrs.field(factory=QuotaConfig)
    # virtual_key.last_used_at is written in one batch this often (seconds), off the request path.
    key_last_used_interval: float = attrs.field(default=60.0, validator=_positive_s)


@attrs.define(kw_only=True)
class ProxyConfig:
    listen: Listen = _listen(3128, host="0.0.0.0")  # noqa: S104 - the proxy serves the network
    admin: Listen = _listen(3129, fd_name="admin")
    http: HttpLimits = attrs.field(factory=HttpLimits)


@attrs.define(kw_only=True)
class HubConfig:
    listen: Listen = _listen(3060)


@attrs.define(kw_only=True)
class ControlPlaneConfig:
    listen: Listen = _listen(3001)
    public_url: str = attrs.field(default="http://127.0.0.1:3001", validator=_url("http", "https"))
    # Sign-in: token lifetimes, lockout, federation trust ([control_plane.auth]).
    auth: AuthSettings = attrs.field(factory=AuthSettings)


@attrs.define(kw_only=True)
class AgentConfig:
    listen: Listen = _listen(19081, fd_name="explicit")
    hub_url: str = attrs.field(default="http://127.0.0.1:3060", validator=_url("http", "https"))


@attrs.define(kw_only=True)
class MockProviderConfig:
    """The mock LLM upstream; the knob fields are per-process defaults (see ``nexus/mock/knobs.py``)."""

    listen: Listen = _listen(3062)
    http: HttpLimits = attrs.field(factory=HttpLimits)
    # Empty: any key, or none, is accepted. Set: requests must carry it the way their dialect does.
    api_key: str = ""
    # Request records kept for GET /_mock/requests; switch off for benchmarks.
    record_requests: bool = True
    record_limit: int = attrs.field(default=200, validator=_positive)
    # Upper bound of a hang, so a forgotten hung request cannot hold a task forever.
    hang_limit: float = attrs.field(default=300.0, validator=_positive_s)
    ttft_ms: int = attrs.field(default=0, validator=v.ge(0))
    chunk_delay_ms: int = attrs.field(default=0, validator=v.ge(0))
    chunks: int = attrs.field(default=5, validator=v.and_(v.ge(1), v.le(10_000)))
    status: int = attrs.field(default=0, validator=v.or_(v.in_((0,)), v.and_(v.ge(400), v.le(599))))
    retry_after: int = attrs.field(default=1, validator=v.ge(0))
    error_after: int = attrs.field(default=-1, validator=v.ge(-1))
    close_after: int = attrs.field(default=-1, validator=v.ge(-1))
    error_on_200: bool = False
    hang: float = attrs.field(default=0.0, validator=v.ge(0))
    slow_body_ms: int = attrs.field(default=0, validator=v.ge(0))
    answer: str = ""
    cached_tokens: int = attrs.field(default=0, validator=v.ge(0))
    model: str = ""


@attrs.define(kw_only=True)
class AuditConfig:
    """The audit pipeline: capture, the emitter's queue and spool, the hub's writer, retention (see audit.md)."""

    # Per-daemon default; routes may narrow it.  off: no bodies; metadata: size and SHA-256 only.
    capture: Literal["off", "metadata", "full"] = "full"
    # A body up to this size travels in the event and is stored inline; larger ones go to the spill store.
    inline_max: int = attrs.field(default=256 * 1024, validator=v.and_(_positive, v.le(256 * 1024)))
    # Captured bodies are cut here (the row then says truncated); raw SSE bytes at stream_raw_max.
    body_max: int = attrs.field(default=32 * 1024 * 1024, validator=_positive)
    stream_raw_max: int = attrs.field(default=1024 * 1024, validator=_positive)
    spill_dir: str = "/var/lib/nexus/spill"
    spool_dir: str = "/var/lib/nexus/spool"
    spool_file_max: int = attrs.field(default=64 * 1024 * 1024, validator=v.ge(64 * 1024))
    # Disk the spool may take; past it, spill mode loses the newest events (counted), block mode holds them.
    spool_max_bytes: int = attrs.field(default=1024 * 1024 * 1024, validator=v.ge(64 * 1024))
    # What the emitter does when NATS is unreachable or its queue is full.
    loss_mode: Literal["spill", "block", "drop"] = "spill"
    queue_max_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=v.ge(64 * 1024))
    batch_max: int = attrs.field(default=512, validator=v.and_(_positive, v.le(10_000)))
    batch_interval: float = attrs.field(default=0.1, validator=_positive_s)
    publish_timeout: float = attrs.field(default=5.0, validator=_positive_s)
    shutdown_timeout: float = attrs.field(default=5.0, validator=v.ge(0))
    stream_max_age_days: float = attrs.field(default=7.0, validator=_positive_s)
    writer_batch_max: int = attrs.field(default=2000, validator=v.and_(_positive, v.le(20_000)))
    writer_batch_interval: float = attrs.field(default=1.0, validator=_positive_s)
    writer_ack_wait: float = attrs.field(default=30.0, validator=v.ge(1.0))
    # Batches stored at once, each on its own connection (PostgreSQL then uses more than one core).
    writer_concurrency: int = attrs.field(default=2, validator=v.and_(_positive, v.le(8)))
    # Tries of a record that fails on its own (undecodable, or refused by a constraint) before the DLQ.
    max_deliver: int = attrs.field(default=5, validator=v.and_(_positive, v.le(100)))
    retention_days: int = attrs.field(default=30, validator=_positive)
    maintenance_interval: float = attrs.field(default=3600.0, validator=v.ge(10.0))


@attrs.define(kw_only=True)
class NexusConfig:
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    secrets: SecretsConfig = attrs.field(factory=SecretsConfig)
    gateway: GatewayConfig = attrs.field(factory=GatewayConfig)
    proxy: ProxyConfig = attrs.field(factory=ProxyConfig)
    hub: HubConfig = attrs.field(factory=HubConfig)
    control_plane: ControlPlaneConfig = attrs.field(factory=ControlPlaneConfig)
    agent: AgentConfig = attrs.field(factory=AgentConfig)
    mock_provider: MockProviderConfig = attrs.field(factory=MockProviderConfig)
    audit: AuditConfig = attrs.field(factory=AuditConfig)
