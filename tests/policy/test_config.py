"""Compliance configuration records from database rows and JSON (nexus/policy/config.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from typing import Any

import attrs
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from nexus.policy.config import (
    Exemption,
    HookConfig,
    KillSwitch,
    OnMatch,
    PassthroughSetting,
    PolicyConfigError,
    RuleOverride,
    from_json,
    from_row,
    structure_options,
    to_json,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
ORG = uuid.UUID("6f1c1a52-0a7e-4c8f-9c43-8d1e0c9b2a11")


def hook_row(**changes: Any) -> dict[str, Any]:
    row = {
        "id": uuid.UUID("0b8a5f7e-3f0e-4d5e-a3a4-0c6a1e2f9b10"),
        "name": "pii",
        "implementation": "pii-detector",
        "stage": "request",
        "priority": 10,
        "fail_behavior": "fail-closed",
        "timeout_ms": 250,
        "ingress": "gateway",
        "stream_mode": "incremental",
        "config": {"onMatch": "redact"},
        "enabled": True,
        "scope_kind": "org",
        "org_id": ORG,
        "project_id": None,
        "virtual_key_id": None,
        "created_by": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    row.update(changes)
    return row


def test_hook_config_from_a_row_and_through_json() -> None:
    cfg = from_row(HookConfig, hook_row())
    assert cfg.id == "0b8a5f7e-3f0e-4d5e-a3a4-0c6a1e2f9b10" and cfg.org_id == str(ORG)
    assert (cfg.stage, cfg.priority, cfg.fail_behavior, cfg.timeout_ms) == ("request", 10, "fail-closed", 250)
    assert cfg.scope_id == str(ORG) and cfg.config == {"onMatch": "redact"}
    doc = to_json(cfg)
    assert doc["failBehavior"] == "fail-closed" and doc["timeoutMs"] == 250 and doc["orgId"] == str(ORG)
    assert from_json(HookConfig, doc) == cfg
    minimal = from_json(HookConfig, {"id": "h", "name": "n", "implementation": "rate-limiter", "stage": "connection"})
    assert (minimal.fail_behavior, minimal.timeout_ms, minimal.ingress, minimal.scope_kind) == (
        "fail-open",
        1000,
        "all",
        "global",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage": "later"}, "stage"),
        ({"implementation": "magic"}, "implementation"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"timeout_ms": "250"}, "expected int"),
        ({"enabled": 1}, "expected bool"),
        ({"scope_kind": "global"}, "does not match"),
        ({"scope_kind": "project"}, "does not match"),
        ({"name": None}, "name"),
    ],
)
def test_bad_hook_rows_name_the_hook_and_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyConfigError, match=message) as info:
        from_row(HookConfig, hook_row(**changes))
    assert "HookConfig" in str(info.value)


def test_other_records() -> None:
    ov = from_row(
        RuleOverride,
        {
            "org_id": ORG,
            "rule_id": "AWS_KEY",
            "disabled": False,
            "severity": "warn",
            "reason": "noisy",
            "id": uuid.uuid4(),
        },
    )
    assert (ov.org_id, ov.severity) == (str(ORG), "warn")
    with pytest.raises(PolicyConfigError, match="either disables"):
        from_row(RuleOverride, {"org_id": ORG, "rule_id": "X"})
    with pytest.raises(PolicyConfigError):
        from_row(RuleOverride, {"org_id": ORG, "rule_id": "X", "severity": "fatal"})

    setting = from_json(
        PassthroughSetting,
        {
            "tier": "provider_type",
            "providerAdapter": "openai",
            "bypassCache": True,
            "bypassNormalize": True,
            "reason": "incident 42",
            "expiresAt": "2025-06-01T16:00:00+00:00",
            "createdAt": "2025-06-01T12:00:00Z",
        },
    )
    assert setting.expires_at == NOW + dt.timedelta(hours=4) and setting.created_at == NOW
    assert from_json(PassthroughSetting, to_json(setting)) == setting
    for bad in (
        {"tier": "global", "providerAdapter": "openai"},
        {"tier": "provider_instance"},
        {"tier": "global", "bypassNormalize": True},
        {"tier": "global", "expiresAt": "2025-06-01T16:00:00"},
    ):
        with pytest.raises(PolicyConfigError):
            from_json(PassthroughSetting, {"reason": "r", "expiresAt": "2025-06-01T16:00:00+00:00", **bad})

    assert from_json(KillSwitch, {"engaged": True, "reason": "breach", "changedAt": "2025-06-01T12:00:00Z"}).engaged
    assert from_json(KillSwitch, {}) == KillSwitch()

    ex = from_row(Exemption, {"kind": "virtual_key", "virtual_key_id": ORG, "bypass": "hooks", "reason": "load test"})
    assert ex.virtual_key_id == str(ORG) and ex.live(NOW)
    with pytest.raises(PolicyConfigError, match="only bypass hooks"):
        from_row(Exemption, {"kind": "user", "user_id": ORG, "bypass": "interception", "reason": "r"})
    cidr = from_row(
        Exemption,
        {
            "kind": "source_cidr",
            "source_cidr": ipaddress.ip_network("10.0.0.0/8"),
            "bypass": "interception",
            "reason": "r",
        },
    )
    assert cidr.source_cidr == "10.0.0.0/8"
    with pytest.raises(PolicyConfigError, match="host_pattern"):
        from_row(Exemption, {"kind": "host", "bypass": "interception", "reason": "r"})


@attrs.frozen(kw_only=True)
class Options:
    max_bytes: int = 5
    names: tuple[str, ...] = ()
    on_match: OnMatch | None = None
    ratio: float = 1.0


def test_hook_options_are_camel_case_strict_and_typed() -> None:
    cfg = from_row(HookConfig, hook_row())

    def options(config: dict[str, Any]) -> Options:
        return structure_options(Options, attrs.evolve(cfg, config=config))

    assert options({"maxBytes": 7, "names": ["a"], "ratio": 2}) == Options(max_bytes=7, names=("a",), ratio=2.0)
    assert options({"onMatch": "redact"}).on_match == OnMatch(hard="redact", soft="redact")
    assert options({"onMatch": {"soft": "approve"}}).on_match == OnMatch(soft="approve")
    assert OnMatch(warn="block")["warn"] == "block" and OnMatch()["hard"] == "block"
    for bad, message in (
        ({"maxByts": 7}, "maxByts"),
        ({"maxBytes": True}, "expected int"),
        ({"maxBytes": "7"}, "expected int"),
        ({"ratio": "2"}, "number"),
        ({"onMatch": "shred"}, "shred"),
        ({"onMatch": {"hard": "shred"}}, "shred"),
        ({"names": "ab"}, "names"),
    ):
        with pytest.raises(PolicyConfigError, match=message) as info:
            options(bad)
        assert str(info.value).startswith("hook 'pii'")


def test_rows_as_postgresql_returns_them(db_url: str) -> None:
    # The records must structure what SELECT * gives back from the real schema.
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(db_url, row_factory=dict_row, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO organization (slug, path, name) VALUES (%s, %s, 'Policy test') RETURNING id",
            (f"pt-{tag}", f"pt-{tag}"),
        ).fetchone()["id"]  # type: ignore[index]
        provider = conn.execute(
            "INSERT INTO provider (name, adapter, base_url, region)"
            " VALUES (%s, 'openai', 'https://api.test', 'eu-west-1') RETURNING id",
            (f"pt-{tag}",),
        ).fetchone()["id"]  # type: ignore[index]
        hook_row = conn.execute(
            "INSERT INTO hook_config (name, implementation, stage, priority, fail_behavior, timeout_ms, ingress,"
            " stream_mode, config, scope_kind, org_id) VALUES (%s, 'pii-detector', 'response', 3, 'fail-closed',"
            " 250, 'proxy', 'incremental', %s, 'org', %s) RETURNING *",
            (f"pii-{tag}", Jsonb({"onMatch": "redact"}), org),
        ).fetchone()
        override_row = conn.execute(
            "INSERT INTO rule_override (org_id, rule_id, severity, reason) VALUES (%s, 'PII_EMAIL_ADDRESS', 'warn',"
            " 'noisy') RETURNING *",
            (org,),
        ).fetchone()
        setting_row = conn.execute(
            "INSERT INTO passthrough_setting (tier, provider_id, bypass_hooks, reason, expires_at)"
            " VALUES ('provider_instance', %s, true, 'incident', now() + interval '2 hours') RETURNING *",
            (provider,),
        ).fetchone()
        exemption_row = conn.execute(
            "INSERT INTO exemption (kind, source_cidr, bypass, reason) VALUES ('source_cidr', '10.20.0.0/16',"
            " 'interception', 'lab') RETURNING *"
        ).fetchone()
        conn.execute("DELETE FROM passthrough_setting WHERE id = %s", (setting_row["id"],))  # type: ignore[index]
        conn.execute("DELETE FROM exemption WHERE id = %s", (exemption_row["id"],))  # type: ignore[index]
        conn.execute("DELETE FROM provider WHERE id = %s", (provider,))
        conn.execute("DELETE FROM organization WHERE id = %s", (org,))
    assert hook_row and override_row and setting_row and exemption_row
    cfg = from_row(HookConfig, hook_row)
    assert (cfg.org_id, cfg.scope_kind, cfg.stream_mode, cfg.ingress) == (str(org), "org", "incremental", "proxy")
    assert cfg.config == {"onMatch": "redact"} and cfg.id == str(hook_row["id"])
    override = from_row(RuleOverride, override_row)
    assert (override.org_id, override.severity, override.disabled) == (str(org), "warn", False)
    setting = from_row(PassthroughSetting, setting_row)
    assert setting.provider_id == str(provider) and setting.live(setting_row["created_at"])
    assert not setting.live(setting_row["expires_at"])
    exemption = from_row(Exemption, exemption_row)
    assert exemption.source_cidr == "10.20.0.0/16" and exemption.bypass == "interception"
