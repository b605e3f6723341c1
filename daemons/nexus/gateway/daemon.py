"""``nexus gateway``: wire config, secrets, storage clients and the /v1 handler into the daemon runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from nexus.audit.capture import CapturePolicy
from nexus.audit.emitter import Emitter
from nexus.config import NexusConfig
from nexus.crypto import secretfiles
from nexus.gateway.app import make_gateway_handler
from nexus.gateway.cache import semantic as semantic_cache
from nexus.gateway.cache.exact import ExactCache
from nexus.gateway.cache.policy import CachePolicy
from nexus.gateway.catalog import CatalogHolder
from nexus.gateway.compliance import Compliance
from nexus.gateway.core import Gateway
from nexus.gateway.errors import protocol_error
from nexus.gateway.keys.store import KeyStore
from nexus.gateway.quota.engine import QuotaEngine
from nexus.gateway.quota.rebuild import pg_rebuilder
from nexus.gateway.quota.settings import QuotaSettings
from nexus.gateway.routing.store import RouterHolder
from nexus.gateway.watch import ConfigWatcher
from nexus.net.http1 import client as http
from nexus.net.http1.types import Timeouts
from nexus.runtime import daemon
from nexus.runtime.http import endpoint, with_health
from nexus.storage import clients


def build(config: NexusConfig, control: daemon.Control) -> daemon.DaemonSpec:
    secrets_dir = secretfiles.directory(config.secrets.dir)
    key_secret = secretfiles.key_hmac_secret(secrets_dir)
    vault = secretfiles.vault(secrets_dir)
    pg = clients.pg_pool(config.storage)
    valkey = clients.valkey(config.storage)
    nats = clients.nats(config.storage, "nexus-gateway")
    deps: list[daemon.Dependency] = [pg, valkey, nats]
    gw_cfg = config.gateway
    timeouts = Timeouts(connect=gw_cfg.upstream_connect_timeout, first_byte=gw_cfg.upstream_first_byte_timeout,
                             read=gw_cfg.upstream_read_timeout)
    keys = KeyStore(pg, key_secret)
    holder = CatalogHolder()
    router = RouterHolder()
    client = http.HttpClient(max_connections_per_origin=gw_cfg.upstream_pool_size, timeouts=timeouts)
    forward = tuple(prefix.lower().encode() for prefix in gw_cfg.forward_headers)
    quota = QuotaEngine.from_settings(valkey, QuotaSettings.from_config(gw_cfg.quota), rebuilder=pg_rebuilder(pg))
    compliance = Compliance(pg, client, valkey, Path(config.runtime.state_dir) / "hyperscan")
    watcher = ConfigWatcher(nats, pg, vault, keys, holder, router, quota, compliance)
    cc = gw_cfg.cache
    cache = ExactCache(valkey, policy=CachePolicy(ttl_seconds=cc.ttl_seconds, scope=cc.scope,
                                                  deterministic_only=cc.deterministic_only)) if cc.enabled else None
    semantic = semantic_cache.from_config(cc.semantic, cache, client, holder, pg, nats) \
        if cache is not None and cc.semantic.enabled else None
    emitter = Emitter(nats, config.audit)
    gw = Gateway(keys, holder, client, timeouts, router=router, forward_headers=forward,
                 service_token=secretfiles.service_token(secrets_dir), quota=quota, compliance=compliance,
                 cache=cache, semantic=semantic, emitter=emitter, capture=CapturePolicy.from_config(config.audit))
    handler = with_health("gateway", make_gateway_handler(gw),
                          [*deps, watcher, quota, *([semantic] if semantic is not None else [])],
                          lambda: control.draining)
    return daemon.DaemonSpec(
        name="gateway", endpoints=[endpoint(gw_cfg.listen, handler, gw_cfg.http, error_response=protocol_error)],
        dependencies=deps, background=[emitter.run, watcher.run, quota.run, *([semantic.run] if semantic else []),
                    partial(keys.record_use, gw_cfg.key_last_used_interval)],
        drain_timeout=config.runtime.drain_timeout,
    )
