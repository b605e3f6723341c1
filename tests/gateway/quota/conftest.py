"""Shared pieces of the quota tests: Valkey clients, a key prefix per test, policy and subject factories.

Every test writes under its own prefix on the shared Valkey (deleted
afterwards) and makes its own ids, so tests never see each other's counters.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from nexus.gateway.quota.policy import QuotaPolicy, QuotaSubject


def uid() -> str:
    return str(uuid.uuid4())


def epoch(text: str) -> float:
    """``2025-03-31T23:59:58`` (UTC) as epoch seconds."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


class Clock:
    """The engine's clock, moved by the test (windows are calendar periods)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_policy(**fields: Any) -> QuotaPolicy:
    values: dict[str, Any] = {
        "id": uid(), "name": f"p-{uuid.uuid4().hex[:8]}", "axis": "virtual_key", "unit": "requests",
        "window_kind": "calendar", "calendar_period": "day", "hard_limit": 1_000_000,
    }
    if fields.get("window_kind") == "sliding":
        values["calendar_period"] = None
    values.update(fields)
    return QuotaPolicy(**values)


def make_subject(**fields: Any) -> QuotaSubject:
    values: dict[str, Any] = {"key_id": uid(), "org_id": uid(), "project_id": uid(), "user_id": uid(),
                              "provider_id": uid(), "model": "gpt-test"}
    values.update(fields)
    return QuotaSubject(**values)
