"""``request-size-validator``: reject bodies larger than ``maxBytes`` (default 1 MiB) with 413.  Pure.

It reads ``Exchange.body_size``, the size on the wire, so it works at the
connection stage too when the pipe knows ``Content-Length`` before the body.
"""

from __future__ import annotations

import attrs

from nexus.policy.config import HookConfig, structure_options
from nexus.policy.hooks.base import BuildEnv, HookContext, PureHook
from nexus.policy.verdict import Decision, Verdict, block

DEFAULT_MAX_BYTES = 1 << 20
_OK = Verdict(Decision.APPROVE)


@attrs.frozen(kw_only=True)
class SizeOptions:
    max_bytes: int = attrs.field(default=DEFAULT_MAX_BYTES, validator=attrs.validators.ge(0))


class RequestSizeValidator(PureHook):
    __slots__ = ("max_bytes",)

    def __init__(self, config: HookConfig, max_bytes: int) -> None:
        super().__init__(config)
        self.max_bytes = max_bytes

    def evaluate(self, ctx: HookContext) -> Verdict:
        size = ctx.exchange.body_size
        if size <= self.max_bytes:
            return _OK
        return block((f"body of {size} bytes exceeds {self.max_bytes}",), reason_code="REQUEST_TOO_LARGE", status=413)


def build(config: HookConfig, env: BuildEnv) -> RequestSizeValidator:
    return RequestSizeValidator(config, structure_options(SizeOptions, config).max_bytes)
