"""Emergency passthrough, the kill switch and hook exemptions: which inspection a request skips.  Pure.

Passthrough settings live at three tiers (global, provider type, provider
instance) and are OR-merged: a request to provider instance P of adapter A
gets every flag set on the global tier, on A, or on P.  A setting counts only
while it is live (``PassthroughSetting.live``: not reverted, not expired, and
never longer than 8 h); an expired one is ignored here even before the hub's
expiry job reverts it.  ``bypass_normalize`` implies ``bypass_cache``.

The kill switch, when engaged, skips every hook (the proxy and agent also stop
bumping TLS: their concern).  The shell marks a request whose hooks were
skipped with ``X-Nexus-Hook: bypassed`` and records ``Flags.labels()`` as the
event's ``passthrough_flags`` and ``Flags.kill_switch``.

``PassthroughTable`` indexes the settings once per change, so a lookup is
three dict reads; ``now`` is passed in (UTC, time-zone aware) so the caller
owns the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import attrs

from nexus.policy.config import Exemption, KillSwitch, PassthroughSetting

__all__ = ["Flags", "PassthroughTable", "hook_exemption"]


@attrs.frozen(slots=True)
class Flags:
    """The effective flags of one request and the settings behind them."""

    bypass_hooks: bool = False
    bypass_cache: bool = False
    bypass_normalize: bool = False
    kill_switch: bool = False
    settings: tuple[str, ...] = ()

    @property
    def skip_hooks(self) -> bool:
        return self.bypass_hooks or self.kill_switch

    def labels(self) -> tuple[str, ...]:
        """The ``passthrough_flags`` of the traffic event."""
        names = (
            ("bypassHooks", self.bypass_hooks),
            ("bypassCache", self.bypass_cache),
            ("bypassNormalize", self.bypass_normalize),
        )
        return tuple(name for name, on in names if on)


_NONE = Flags()


class PassthroughTable:
    """Passthrough settings by tier and target, with the kill switch state."""

    __slots__ = ("_by_adapter", "_by_provider", "_global", "kill_switch")

    def __init__(self, settings: Iterable[PassthroughSetting], kill_switch: KillSwitch | None = None) -> None:
        self.kill_switch = kill_switch if kill_switch is not None else KillSwitch()
        self._global: list[PassthroughSetting] = []
        self._by_adapter: dict[str, list[PassthroughSetting]] = {}
        self._by_provider: dict[str, list[PassthroughSetting]] = {}
        for s in settings:
            if s.reverted_at is not None:
                continue
            if s.tier == "global":
                self._global.append(s)
            elif s.tier == "provider_type":
                assert s.provider_adapter is not None
                self._by_adapter.setdefault(s.provider_adapter, []).append(s)
            else:
                assert s.provider_id is not None
                self._by_provider.setdefault(s.provider_id, []).append(s)

    def flags(self, *, provider_adapter: str | None, provider_id: str | None, now: dt.datetime) -> Flags:
        """The OR of every live setting that applies, plus the kill switch."""
        kill = self.kill_switch.engaged
        found = list(self._global)
        if provider_adapter is not None:
            found += self._by_adapter.get(provider_adapter, ())
        if provider_id is not None:
            found += self._by_provider.get(provider_id, ())
        if not found:
            return Flags(kill_switch=True) if kill else _NONE
        hooks = cache = normalize = False
        ids: list[str] = []
        for s in found:
            if not s.live(now):
                continue
            hooks |= s.bypass_hooks
            cache |= s.bypass_cache or s.bypass_normalize
            normalize |= s.bypass_normalize
            ids.append(s.id or f"{s.tier}:{s.provider_adapter or s.provider_id or '*'}")
        return Flags(hooks, cache, normalize, kill, tuple(ids))


def hook_exemption(
    exemptions: Iterable[Exemption], *, user_id: str | None, key_id: str | None, now: dt.datetime
) -> Exemption | None:
    """The live ``bypass = hooks`` exemption of this user or key, if any (the request is still audited)."""
    for e in exemptions:
        if e.bypass != "hooks" or not e.live(now):
            continue
        if (e.kind == "user" and user_id is not None and e.user_id == user_id) or (
            e.kind == "virtual_key" and key_id is not None and e.virtual_key_id == key_id
        ):
            return e
    return None
