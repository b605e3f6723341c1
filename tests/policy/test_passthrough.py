"""Passthrough tiers OR-merged with expiry, the kill switch, hook exemptions (nexus/policy/passthrough.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from nexus.policy.config import Exemption, KillSwitch, PassthroughSetting
from nexus.policy.passthrough import Flags, PassthroughTable, hook_exemption

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def setting(
    tier: str = "global", target: str | None = None, *, expires: dt.timedelta = 2 * H, **flags: Any
) -> PassthroughSetting:
    return PassthroughSetting(
        tier=tier,  # type: ignore[arg-type]
        provider_adapter=target if tier == "provider_type" else None,
        provider_id=target if tier == "provider_instance" else None,
        reason="incident",
        created_at=NOW - H,
        expires_at=NOW + expires,
        id=f"{tier}:{target}:{sorted(flags)}",
        **flags,
    )


def flags(
    table: PassthroughTable, adapter: str | None = "openai", provider: str | None = "p1", now: dt.datetime = NOW
) -> Flags:
    return table.flags(provider_adapter=adapter, provider_id=provider, now=now)


def test_nothing_set() -> None:
    f = flags(PassthroughTable([]))
    assert f == Flags() and not f.skip_hooks and f.labels() == ()


def test_tiers_or_merge_for_the_request_they_target() -> None:
    table = PassthroughTable(
        [
            setting(bypass_cache=True),
            setting("provider_type", "openai", bypass_hooks=True),
            setting("provider_type", "anthropic", bypass_cache=True, bypass_normalize=True),
            setting("provider_instance", "p2", bypass_hooks=True),
        ]
    )
    f = flags(table)
    assert (f.bypass_hooks, f.bypass_cache, f.bypass_normalize) == (True, True, False)
    assert f.skip_hooks and f.labels() == ("bypassHooks", "bypassCache")
    assert len(f.settings) == 2
    other = flags(table, "anthropic", "p9")
    assert (other.bypass_hooks, other.bypass_cache, other.bypass_normalize) == (False, True, True)
    instance = flags(table, "gemini", "p2")
    assert (instance.bypass_hooks, instance.bypass_cache) == (True, True)
    assert flags(table, None, None).labels() == ("bypassCache",)


def test_expired_reverted_and_over_long_settings_are_ignored() -> None:
    table = PassthroughTable(
        [
            setting(expires=-dt.timedelta(seconds=1), bypass_hooks=True),
            PassthroughSetting(tier="global", reason="r", bypass_hooks=True, expires_at=NOW + H, reverted_at=NOW),
            PassthroughSetting(
                tier="global", reason="r", bypass_hooks=True, created_at=NOW - H, expires_at=NOW + 8 * H
            ),
            PassthroughSetting(tier="global", reason="r", bypass_hooks=True, expires_at=NOW + 9 * H),
        ]
    )
    assert flags(table) == Flags()
    live = PassthroughTable([setting(expires=H, bypass_hooks=True)])
    assert flags(live).bypass_hooks
    assert not flags(live, now=NOW + H).bypass_hooks
    # Exactly 8 h is allowed; a setting without a creation time is measured from now.
    assert flags(PassthroughTable([setting(expires=7 * H, bypass_cache=True)])).bypass_cache
    no_created = PassthroughSetting(tier="global", reason="r", bypass_cache=True, expires_at=NOW + 8 * H)
    assert flags(PassthroughTable([no_created])).bypass_cache


def test_normalize_implies_cache_even_from_a_record_built_by_hand() -> None:
    f = Flags(bypass_normalize=True, bypass_cache=True)
    assert f.labels() == ("bypassCache", "bypassNormalize")
    table = PassthroughTable([setting(bypass_cache=True, bypass_normalize=True)])
    assert flags(table).labels() == ("bypassCache", "bypassNormalize")


def test_kill_switch_skips_hooks() -> None:
    engaged = KillSwitch(engaged=True, reason="breach", changed_at=NOW)
    f = flags(PassthroughTable([], engaged))
    assert f.kill_switch and f.skip_hooks and f.labels() == ()
    both = flags(PassthroughTable([setting(bypass_cache=True)], engaged))
    assert both.kill_switch and both.bypass_cache
    assert not flags(PassthroughTable([], KillSwitch(engaged=False))).skip_hooks


def test_hook_exemptions() -> None:
    exemptions = [
        Exemption(kind="user", user_id="u1", bypass="hooks", reason="r"),
        Exemption(kind="virtual_key", virtual_key_id="k1", bypass="hooks", reason="r", expires_at=NOW - H),
        Exemption(kind="virtual_key", virtual_key_id="k2", bypass="hooks", reason="r", expires_at=NOW + H),
        Exemption(kind="host", host_pattern="*.example.com", bypass="hooks", reason="r"),
    ]
    assert hook_exemption(exemptions, user_id="u1", key_id=None, now=NOW) is exemptions[0]
    assert hook_exemption(exemptions, user_id=None, key_id="k1", now=NOW) is None
    assert hook_exemption(exemptions, user_id="u9", key_id="k2", now=NOW) is exemptions[2]
    assert hook_exemption(exemptions, user_id=None, key_id=None, now=NOW) is None
