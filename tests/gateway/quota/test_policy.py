"""Pure quota logic: records from rows, which policies apply, windows, estimates, costs, settings."""

from __future__ import annotations

import subprocess
import sys

import attrs
import cattrs
import pytest

from nexus.config.loader import ConfigError, load_config
from nexus.config.schema import QuotaConfig
from nexus.gateway.quota import policy as qp
from nexus.gateway.quota.policy import (
    Estimate,
    QuotaOverride,
    QuotaSnapshot,
    QuotaSubject,
    calendar_window,
    estimate_chat,
    locate,
    sliding_layout,
    usage_cost,
)
from nexus.gateway.quota.settings import QuotaSettings
from nexus.wire.usage import Usage

from .conftest import epoch, make_policy, make_subject, uid


@attrs.frozen
class _Prices:
    input: int = 2_500_000
    output: int = 10_000_000
    cached_input: int = 1_250_000
    cache_write: int = 3_125_000
    reasoning: int = 10_000_000


@attrs.frozen
class _Provider:
    id: str = "prov-1"


@attrs.frozen
class _Route:
    code: str = "gpt-x"
    provider: _Provider = _Provider()
    prices: _Prices = _Prices()
    default_max_tokens: int | None = None


@attrs.frozen
class _Key:
    id: str = "vk-1"
    org_id: str = "org-1"
    project_id: str | None = "proj-1"
    owner_user_id: str | None = None
    rpm: int | None = 30
    tpm: int | None = None


ORGS = {"root": "acme", "emea": "acme/emea", "sales": "acme/emea/sales", "us": "acme/us", "other": "globex"}


def test_records_from_rows_via_cattrs() -> None:
    row = {"id": "p1", "name": "daily", "axis": "project", "unit": "total_tokens", "window_kind": "calendar",
           "subject": "proj", "scope_org_id": None, "calendar_period": "week", "window_seconds": None,
           "soft_limit": 10, "hard_limit": 20, "hard_action": "block", "fail_mode": "open"}
    p = qp.policy_from_row(row)
    assert (p.axis, p.unit, p.calendar_period, p.fail_mode, p.window_label) == ("project", "total_tokens", "week",
                                                                               "open", "week")
    o = qp.override_from_row({"id": "o1", "policy_id": "p1", "subject": "proj", "soft_limit": None,
                              "hard_limit": 5, "expires_at": 1.5e9})
    assert o == QuotaOverride("o1", "p1", "proj", None, 5, 1.5e9)
    with pytest.raises(cattrs.ClassValidationError):
        qp.policy_from_row({**row, "axis": "galaxy"})
    with pytest.raises(cattrs.ClassValidationError):
        qp.policy_from_row({**row, "window_kind": "sliding"})  # a period and no seconds
    with pytest.raises(ValueError, match="soft or a hard"):
        make_policy(hard_limit=None, soft_limit=None)


def test_selection_per_axis_including_org_ancestors() -> None:
    s = make_subject(org_id="sales")
    explicit = {
        "root": make_policy(axis="organization", subject="root", hard_limit=1),
        "emea": make_policy(axis="organization", subject="emea", hard_limit=1),
        "sales": make_policy(axis="organization", subject="sales", hard_limit=1),
        "us": make_policy(axis="organization", subject="us", hard_limit=1),
        "project": make_policy(axis="project", subject=s.project_id, hard_limit=1),
        "other project": make_policy(axis="project", subject=uid(), hard_limit=1),
        "user": make_policy(axis="user", subject=s.user_id, hard_limit=1),
        "key": make_policy(axis="virtual_key", subject=s.key_id, hard_limit=1),
        "provider": make_policy(axis="provider", subject=s.provider_id, hard_limit=1),
        "model": make_policy(axis="model", subject="gpt-test", hard_limit=1),
        "other model": make_policy(axis="model", subject="gpt-other", hard_limit=1),
    }
    snap = QuotaSnapshot(tuple(explicit.values()), org_paths=ORGS)
    assert snap.org_chain("sales") == ("sales", "emea", "root")
    assert snap.org_chain("unknown") == ("unknown",)
    got = {(a.policy.axis, a.subject): a.policy for a in snap.applicable(s, 0.0)}
    wanted = {name: p for name, p in explicit.items() if name not in ("us", "other project", "other model")}
    assert set(got.values()) == set(wanted.values())
    assert got[("organization", "root")] is explicit["root"]
    assert got[("model", "gpt-test")] is explicit["model"]
    # No route: provider and model axes are skipped.
    bare = QuotaSubject(s.key_id, "sales", s.project_id, s.user_id)
    assert {a.policy.axis for a in snap.applicable(bare, 0.0)} == {"organization", "project", "user", "virtual_key"}


def test_defaults_count_per_subject_within_scope() -> None:
    per_key = make_policy(axis="virtual_key", scope_org_id="emea", hard_limit=5)
    per_org = make_policy(axis="organization", scope_org_id="emea", hard_limit=5)
    everywhere = make_policy(axis="organization", hard_limit=5)
    per_model = make_policy(axis="model", hard_limit=5)
    snap = QuotaSnapshot((per_key, per_org, everywhere, per_model), org_paths=ORGS)
    inside = make_subject(org_id="sales")
    by_policy: dict[str, list[str]] = {}
    for a in snap.applicable(inside, 0.0):
        by_policy.setdefault(a.policy.id, []).append(a.subject)
    assert by_policy[per_key.id] == [inside.key_id]
    assert by_policy[per_org.id] == ["sales", "emea"]  # not acme: outside the scope
    assert by_policy[everywhere.id] == ["sales", "emea", "root"]
    assert by_policy[per_model.id] == ["gpt-test"]
    outside = make_subject(org_id="us")
    assert {a.policy.id for a in snap.applicable(outside, 0.0)} == {everywhere.id, per_model.id}


def test_overrides_replace_limits_until_they_expire() -> None:
    p = make_policy(axis="project", soft_limit=50, hard_limit=100)
    s = make_subject()
    other = make_subject()
    live = QuotaOverride(uid(), p.id, s.project_id or "", None, 1000, expires_at=2000.0)
    snap = QuotaSnapshot((p,), (live,))
    [a] = snap.applicable(s, 1000.0)
    assert (a.soft, a.hard) == (None, 1000)  # both limits replaced
    [a] = snap.applicable(s, 2000.0)
    assert (a.soft, a.hard) == (50, 100)  # expired
    [a] = snap.applicable(other, 1000.0)
    assert (a.soft, a.hard) == (50, 100)


def test_key_rpm_tpm_are_sliding_minute_limits() -> None:
    s = make_subject(rpm=10, tpm=5000)
    rpm, tpm = QuotaSnapshot().applicable(s, 0.0, "open")
    assert (rpm.policy.unit, rpm.hard, rpm.subject, rpm.policy.fail_mode) == ("requests", 10, s.key_id, "open")
    assert (tpm.policy.unit, tpm.hard, tpm.policy.window_seconds) == ("total_tokens", 5000, 60)
    assert rpm.policy.axis == tpm.policy.axis == "virtual_key"
    assert QuotaSnapshot().applicable(make_subject(), 0.0) == ()
    subject = qp.subject_for(_Key(), _Route())
    assert subject == QuotaSubject("vk-1", "org-1", "proj-1", None, "prov-1", "gpt-x", 30, None)


def test_calendar_windows_in_utc() -> None:
    now = epoch("2025-03-31T23:59:58")  # a Monday, last day of the month
    assert calendar_window("day", now) == ("d20250331", epoch("2025-03-31T00:00:00"), epoch("2025-04-01T00:00:00"))
    assert calendar_window("week", now) == ("w20250331", epoch("2025-03-31T00:00:00"), epoch("2025-04-07T00:00:00"))
    assert calendar_window("week", epoch("2025-03-30T12:00:00"))[0] == "w20250324"  # Sunday: previous week
    assert calendar_window("month", now) == ("m202503", epoch("2025-03-01T00:00:00"), epoch("2025-04-01T00:00:00"))
    assert calendar_window("month", epoch("2024-12-31T10:00:00"))[2] == epoch("2025-01-01T00:00:00")
    a = qp.Applied(make_policy(id="pid", calendar_period="day"), "subj", None, 3)
    loc = locate(a, now, "x:")
    assert (loc.key, loc.field, loc.alert_key) == ("x:c:pid:subj:d20250331", "", "x:a:pid:subj:d20250331")
    assert loc.reset_in_ms == 2000 and loc.expire_ms == 2000 + qp.CALENDAR_GRACE_MS


def test_sliding_layout_bounds_buckets() -> None:
    assert sliding_layout(60) == (1000, 60)
    assert sliding_layout(1) == (17, 59)
    assert sliding_layout(3600) == (60_000, 60)
    width, count = sliding_layout(31 * 86400)
    assert count <= qp.SUB_BUCKETS and width * count >= 31 * 86400 * 1000
    a = qp.Applied(make_policy(id="pid", window_kind="sliding", window_seconds=60), "s", None, 3)
    loc = locate(a, 1000.5, "x:")
    assert (loc.key, loc.field, loc.bucket, loc.buckets, loc.width_ms) == ("x:s:pid:s", "1000", 1000, 60, 1000)


def test_estimates_and_costs() -> None:
    chat = {"messages": [{"role": "system", "content": "x" * 30},
                         {"role": "user", "content": [{"type": "text", "text": "y" * 31},
                                                      {"type": "image_url", "image_url": {"url": "u"}}]},
                         {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}],
            "max_tokens": 200}
    e = estimate_chat(chat, _Route())
    assert e == Estimate(21, 200, 2053)  # 63 chars / 3; 21 * 2.5 + 200 * 10 µ$, rounded up
    assert estimate_chat({**chat, "max_completion_tokens": 50}, _Route(), input_tokens=1000).output_tokens == 50
    assert estimate_chat({"messages": []}, _Route(default_max_tokens=77)).output_tokens == 77
    assert estimate_chat({"messages": []}).output_tokens == qp.DEFAULT_OUTPUT_TOKENS
    assert estimate_chat({"input": ["abc", "def"]}, default_output=0) == Estimate(2, 0, 0)
    anthropic_body = {"system": "s" * 6, "messages": [{"role": "user", "content": [{"type": "text", "text": "abc"}]}]}
    assert estimate_chat(anthropic_body).input_tokens == 3
    assert [e.amount(u) for u in ("requests", "input_tokens", "output_tokens", "total_tokens", "cost_micro_usd")] \
        == [1, 21, 200, 221, 2053]
    u = Usage(prompt_tokens=1_000_000, completion_tokens=400_000, cached_tokens=200_000, reasoning_tokens=100_000,
              cache_write_tokens=100_000)
    # 700k uncached * 2.5 + 200k cached * 1.25 + 100k writes * 3.125 + 300k out * 10 + 100k reasoning * 10
    assert usage_cost(_Prices(), u) == 1_750_000 + 250_000 + 312_500 + 3_000_000 + 1_000_000
    assert usage_cost(_Prices(), Usage(prompt_tokens=1)) == 3  # 2.5 µ$ rounded up


def test_settings_from_config_and_env() -> None:
    assert QuotaSettings.from_env({}) == QuotaSettings(True, 0.25, "closed")
    assert QuotaSettings.from_config(QuotaConfig(), {}) == QuotaSettings(True, 0.25, "closed")
    assert QuotaSettings.from_config(QuotaConfig(on_valkey_down="fail_open"), {
        "NEXUS_QUOTA_WRITE_BEHIND": "0", "NEXUS_QUOTA_FLUSH_INTERVAL": "0.5"}) == QuotaSettings(False, 0.5, "open")
    for name, value in (("NEXUS_QUOTA_WRITE_BEHIND", "maybe"), ("NEXUS_QUOTA_FLUSH_INTERVAL", "0"),
                        ("NEXUS_QUOTA_FLUSH_INTERVAL", "soon")):
        with pytest.raises(ConfigError, match=name):
            QuotaSettings.from_env({name: value})
    # The config file's key, and its environment form, are checked by the loader like every other setting.
    assert load_config(None, {"NEXUS_GATEWAY__QUOTA__ON_VALKEY_DOWN": "fail_open"}).gateway.quota.on_valkey_down \
        == "fail_open"
    with pytest.raises(ConfigError, match="on_valkey_down"):
        load_config(None, {"NEXUS_GATEWAY__QUOTA__ON_VALKEY_DOWN": "ajar"})


def test_pure_modules_load_no_trio() -> None:
    code = ("import sys, nexus.gateway.quota.policy, nexus.gateway.quota.script, nexus.gateway.quota.settings\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'psycopg', 'socket'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
