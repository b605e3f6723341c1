"""Keep the gateway's in-memory config current: change signals from NATS, a full reload after
NATS reconnects (signals may have been missed), and a slow periodic refresh as a last resort."""

from __future__ import annotations

import logging

import psycopg
import trio

from nexus import signals
from nexus.crypto.vault import Vault
from nexus.gateway import catalog
from nexus.gateway.compliance import Compliance
from nexus.gateway.keys.store import KeyStore
from nexus.gateway.quota.engine import QuotaEngine
from nexus.gateway.quota.store import load_snapshot
from nexus.gateway.routing.store import RouterHolder, load_router
from nexus.net.nats.client import NatsClient
from nexus.net.nats.subscription import Subscription
from nexus.runtime.dependency import DependencyState
from nexus.storage.pgpool import PgPool

log = logging.getLogger("nexus.gateway.watch")

CATALOG_KINDS = frozenset(
    {"provider", "credential", "model", "routing_rule", "quota_policy", "quota_override", "organization",
     "hook_config", "rule_pack", "passthrough", "kill_switch"}
)


class ConfigWatcher:
    def __init__(self, nats: NatsClient, pool: PgPool, vault: Vault, keys: KeyStore, holder: catalog.CatalogHolder,
                 router: RouterHolder, quota: QuotaEngine | None = None, compliance: Compliance | None = None, *,
                 refresh_interval: float = 60.0) -> None:
        self.nats = nats
        self.pool = pool
        self.vault = vault
        self.keys = keys
        self.holder = holder
        self.router = router
        self.quota = quota
        self.compliance = compliance
        self.refresh_interval = refresh_interval
        self._reload = trio.Event()
        # /readyz: not ready until hooks, catalog and rules are loaded once (until then every model is unknown).
        self.state = DependencyState("config", detail="loading")

    async def reload_catalog(self) -> bool:
        """Providers, models, routing rules and quota policies, each swapped in whole when it loads."""
        try:
            # Compliance first: until its pipeline is built the catalog stays empty, so no request can reach an
            # upstream unchecked (a gateway that cannot load its hooks serves nothing rather than everything).
            if self.compliance is not None:
                await self.compliance.reload()
            self.holder.current = await catalog.load(self.pool, self.vault)
            self.holder.loaded = True
            self.router.current = await load_router(self.pool)
            self.router.loaded = True
            if self.quota is not None:
                self.quota.snapshot = await load_snapshot(self.pool)
        except (psycopg.Error, OSError, ValueError) as exc:
            if not self.state.ok:
                self.state.mark_down(f"not loaded yet: {exc}")
            # An unreachable or not-yet-migrated database must not take the gateway down: keep serving what we
            # have and try again (soon while we have nothing).
            log.warning("config reload failed, keeping the previous snapshot: %s", exc)
            return False
        self.state.mark_up("loaded")
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            sub = self.nats.subscribe(signals.ALL)
            nursery.start_soon(self._signals, sub)
            nursery.start_soon(self._reconnects)
            nursery.start_soon(self._reloader)
            await self.reload_catalog()
            task_status.started()

    async def _signals(self, sub: Subscription) -> None:
        async for msg in sub:
            kind, rid = signals.decode(msg.subject, msg.data)
            if kind == "virtual_key":
                self.keys.invalidate(rid)
            elif kind in CATALOG_KINDS:
                if kind == "organization":  # a suspended org's keys stop working with it
                    self.keys.invalidate(None)
                self._reload.set()

    async def _reloader(self) -> None:
        # Coalesce bursts of signals (a bulk edit) into one reload.
        while True:
            with trio.move_on_after(self.refresh_interval if self.router.loaded else 2.0):
                await self._reload.wait()
            self._reload = trio.Event()
            await trio.sleep(0.05)
            await self.reload_catalog()

    async def _reconnects(self) -> None:
        was_up = self.nats.state.ok
        while True:
            await trio.sleep(0.25)
            up = self.nats.state.ok
            if up and not was_up:
                log.info("NATS is back: dropping cached keys and reloading the catalog")
                self.keys.invalidate()
                self._reload.set()
            was_up = up
