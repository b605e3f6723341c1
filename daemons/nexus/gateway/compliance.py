"""The gateway's one seam to the compliance engine (``nexus.policy``).

Holds the current pipeline (built in a worker thread from the hook configs,
rule overrides and the packaged rule packs, with compiled Hyperscan databases
cached on disk), the passthrough settings and the kill switch, and answers for
one request: which flags apply, what the request hooks decide (block, or a
rewritten canonical request), what the response hooks decide for a whole answer,
and a ``StreamGuard`` for a streamed one.  Commands the pipeline yields
(webhook calls, counters) are performed here, under the hook's own timeout.

Nothing else in the gateway imports ``nexus.policy``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from psycopg.rows import dict_row

from nexus.gateway.errors import GatewayError
from nexus.net.http1 import client as http
from nexus.net.http1.types import Timeouts
from nexus.net.resp.client import ValkeyClient, ValkeyConnectionError, ValkeyError
from nexus.policy.commands import (
    CallWebhook,
    Command,
    CounterReply,
    Failure,
    IncrementCounter,
    Reply,
    Timeout,
    WebhookReply,
)
from nexus.policy.config import HookConfig, KillSwitch, PassthroughSetting, PolicySnapshot, RuleOverride, from_row
from nexus.policy.exchange import Exchange, apply_segments
from nexus.policy.matching import ScannerCache
from nexus.policy.passthrough import Flags, PassthroughTable
from nexus.policy.pipeline import Pipeline, Steps, build_pipeline, drive, no_io
from nexus.policy.rules.loader import all_rules, load_packs
from nexus.policy.rules.model import Rule
from nexus.policy.stream import StreamGuard
from nexus.policy.verdict import StageDecision
from nexus.storage.pgpool import PgPool

log = logging.getLogger("nexus.gateway.compliance")

Obj = dict[str, Any]


@attrs.define
class ComplianceState:
    pipeline: Pipeline | None = None
    passthrough: PassthroughTable = attrs.Factory(lambda: PassthroughTable(()))
    loaded: bool = False


class Compliance:
    def __init__(self, pool: PgPool, client: http.HttpClient, valkey: ValkeyClient, cache_dir: Path | None) -> None:
        self.pool = pool
        self.client = client
        self.valkey = valkey
        self.state = ComplianceState()
        if cache_dir is not None:
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("no Hyperscan cache (every start recompiles): cannot create %s: %s", cache_dir, exc)
                cache_dir = None
        self.scanners = ScannerCache(cache_dir=cache_dir)
        self._rules: list[Rule] | None = None
        self._version = ""

    async def reload(self) -> None:
        """Rebuild from PostgreSQL; the previous pipeline keeps serving until the new one is ready.

        Raises psycopg errors (the caller keeps the old state and retries).
        """
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM hook_config WHERE enabled ORDER BY priority, name")
            hooks = await cur.fetchall()
            await cur.execute("SELECT * FROM rule_override")
            overrides = await cur.fetchall()
            await cur.execute("SELECT * FROM passthrough_setting WHERE reverted_at IS NULL AND expires_at > now()")
            settings = await cur.fetchall()
            await cur.execute("SELECT value FROM system_metadata WHERE key = 'kill_switch'")
            kill_row = await cur.fetchone()
            # A pack switched off in the console stops matching everywhere (rule_pack.enabled).
            await cur.execute("SELECT name FROM rule_pack WHERE NOT enabled ORDER BY name")
            disabled_packs = frozenset(row["name"] for row in await cur.fetchall())
        version = hashlib.sha256(orjson.dumps([hooks, overrides, sorted(disabled_packs)], default=str)).hexdigest()[:16]
        table = PassthroughTable(
            [from_row(PassthroughSetting, s) for s in settings],
            from_row(KillSwitch, kill_row["value"]) if kill_row else KillSwitch(),
        )
        pipeline = self.state.pipeline
        if version != self._version:
            snapshot = PolicySnapshot(hooks=tuple(from_row(HookConfig, h) for h in hooks),
                                      overrides=tuple(from_row(RuleOverride, o) for o in overrides), version=version)
            if snapshot.hooks:
                if self._rules is None:
                    self._rules = all_rules(await trio.to_thread.run_sync(load_packs))
                rules = self._rules
                # Compiling hundreds of rules takes seconds without the disk cache: off the event loop.
                pipeline = await trio.to_thread.run_sync(
                    lambda: build_pipeline(snapshot, rules, scanners=self.scanners, disabled_packs=disabled_packs))
            else:
                pipeline = None
            self._version = version
            log.info("compliance pipeline ready", extra={"version": version, "hooks": len(snapshot.hooks)})
        self.state = ComplianceState(pipeline, table, True)

    @property
    def version(self) -> str:
        """The loaded hooks-and-overrides generation (changes whenever either does)."""
        return self._version

    def flags(self, provider_adapter: str | None, provider_id: str | None) -> Flags:
        return self.state.passthrough.flags(provider_adapter=provider_adapter, provider_id=provider_id,
                                            now=dt.datetime.now(dt.UTC))

    async def perform(self, command: Command) -> Reply:
        try:
            with trio.fail_after(command.timeout_s or 1.0):
                if isinstance(command, CallWebhook):
                    resp = await self.client.request(
                        "POST", command.url, [(b"content-type", b"application/json"),
                                              *((k.encode(), v.encode()) for k, v in command.headers)],
                        command.body, Timeouts(connect=command.timeout_s, first_byte=command.timeout_s,
                                               read=command.timeout_s))
                    return WebhookReply(resp.status, resp.body)
                if isinstance(command, IncrementCounter):
                    count, _ = await self.valkey.pipeline([("INCRBY", command.key, command.amount),
                                                           ("EXPIRE", command.key, int(command.window_s), "NX")])
                    ttl = await self.valkey.execute("TTL", command.key)
                    return CounterReply(int(count), float(max(int(ttl), 0)))
        except trio.TooSlowError:
            return Timeout()
        except (http.HttpClientError, ValkeyConnectionError, ValkeyError, ValueError) as exc:
            return Failure(str(exc))
        return Failure(f"unknown command {type(command).__name__}")

    async def drive(self, run: Steps) -> StageDecision:
        step = run.next()
        while not isinstance(step, StageDecision):
            step = run.send(await self.perform(step))
        return step

    async def check_request(self, chat: Obj, meta: dict[str, Any]) -> tuple[StageDecision | None, Obj | None]:
        """The request hooks' decision and, when they rewrote it, the redacted canonical request."""
        pipeline = self.state.pipeline
        if pipeline is None:
            return None, None
        decision = await self.drive(pipeline.start(Exchange.for_request(chat, ingress="gateway", **meta)))
        if decision.blocked:
            raise Blocked(decision)
        return decision, (apply_segments(chat, decision.rewrites) if decision.rewrites else None)

    async def check_response(self, chat_resp: Obj, meta: dict[str, Any]) -> tuple[StageDecision | None, Obj | None]:
        pipeline = self.state.pipeline
        if pipeline is None:
            return None, None
        meta = {k: v for k, v in meta.items() if k != "stream"}
        decision = await self.drive(pipeline.start(Exchange.for_response(chat_resp, ingress="gateway", **meta)))
        if decision.blocked:
            raise Blocked(decision)
        return decision, (apply_segments(chat_resp, decision.rewrites) if decision.rewrites else None)

    def stream_guard(self, meta: dict[str, Any], model: str) -> StreamGuard | None:
        pipeline = self.state.pipeline
        if pipeline is None:
            return None
        meta = {k: v for k, v in meta.items() if k != "stream"}
        exchange = Exchange.for_response({"model": model, "choices": []}, ingress="gateway", stream=True, **meta)
        return StreamGuard(pipeline, exchange)


def blocked_message(decision: StageDecision) -> str:
    reasons = "; ".join(decision.reasons) or "policy"
    rules = ", ".join(decision.rule_ids)
    return f"blocked by compliance policy: {reasons}" + (f" (rules: {rules})" if rules else "")


class Blocked(GatewayError):
    """A hook blocked the exchange: 403 in the caller's shape, carrying the decision for the audit event."""

    def __init__(self, decision: StageDecision) -> None:
        super().__init__("invalid_request", blocked_message(decision), status=403)
        self.decision = decision


def finish_guard(guard: StreamGuard) -> StageDecision:
    """The stream's final response decision (webhooks are not called mid-stream: their commands fail open)."""
    return drive(guard.finish(), no_io)


__all__ = ["Blocked", "Compliance", "StageDecision", "StreamGuard", "blocked_message", "finish_guard"]
