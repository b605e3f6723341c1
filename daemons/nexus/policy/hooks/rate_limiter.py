"""``rate-limiter``: at most ``limit`` exchanges per ``windowSeconds`` per source ip, key, user, project or org.

Pure: the count lives in Valkey, so the hook yields ``IncrementCounter`` and
the shell answers with the count in the window.  Over the limit the exchange is
blocked as soft with 429 and ``Retry-After``.  An exchange that lacks the
chosen identity (no user id) abstains without a command.

Options: ``by`` (``ip`` | ``key`` | ``user`` | ``project`` | ``org``, default
``key``), ``limit`` (≥ 1), ``windowSeconds`` (default 60).  Counter keys are
``nexus:rl:<hook id>:<by>:<value>``, so two limiters never share a count.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Literal

import attrs

from nexus.policy.commands import Command, CounterReply, IncrementCounter, Reply
from nexus.policy.config import HookConfig, structure_options
from nexus.policy.hooks.base import BuildEnv, HookContext, HookError, IOHook
from nexus.policy.verdict import ABSTAIN, Decision, Verdict, block

_OK = Verdict(Decision.APPROVE)
Axis = Literal["ip", "key", "user", "project", "org"]
_FIELD: dict[str, str] = {
    "ip": "source_ip",
    "key": "key_id",
    "user": "user_id",
    "project": "project_id",
    "org": "org_id",
}


@attrs.frozen(kw_only=True)
class RateOptions:
    limit: int = attrs.field(validator=attrs.validators.ge(1))
    by: Axis = "key"
    window_seconds: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


class RateLimiter(IOHook):
    __slots__ = ("field", "limit", "prefix", "window_s")

    def __init__(self, config: HookConfig, options: RateOptions) -> None:
        super().__init__(config)
        self.limit = options.limit
        self.window_s = options.window_seconds
        self.field = _FIELD[options.by]
        self.prefix = f"nexus:rl:{config.id}:{options.by}:"

    def run(self, ctx: HookContext) -> Generator[Command, Reply, Verdict]:
        value = getattr(ctx.exchange, self.field)
        if not value:
            return ABSTAIN
        reply = yield IncrementCounter(self.prefix + value, self.window_s)
        if not isinstance(reply, CounterReply):
            raise HookError(f"expected a counter reply, got {type(reply).__name__}")
        if reply.count <= self.limit:
            return _OK
        return block(
            (f"{reply.count} requests in {self.window_s:g}s exceed {self.limit}",),
            hard=False,
            reason_code="RATE_LIMITED",
            status=429,
            retry_after_s=max(reply.reset_after_s, 0.0),
        )


def build(config: HookConfig, env: BuildEnv) -> RateLimiter:
    return RateLimiter(config, structure_options(RateOptions, config))
