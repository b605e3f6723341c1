"""Config change signals: the NATS subjects and payloads that tell daemons to reload (pure).

The control plane writes PostgreSQL, then publishes ``nexus.config.changed.<kind>``
with ``{"id": …}`` (or no id: "reload all of this kind").  Every on-box daemon
subscribes to ``nexus.config.changed.>`` and reloads what the kind names.
Signals are hints, not data: a daemon that missed some (NATS was down) reloads
everything when its connection comes back.
"""

from __future__ import annotations

from typing import Literal

import orjson

PREFIX = "nexus.config.changed."
ALL = PREFIX + ">"

Kind = Literal[
    "virtual_key", "provider", "credential", "model", "routing_rule", "quota_policy", "quota_override", "hook_config",
    "rule_pack",
    "passthrough", "kill_switch", "interception_domain", "organization", "project", "exemption",
]


def subject(kind: Kind) -> str:
    return PREFIX + kind


def encode(resource_id: str | None = None) -> bytes:
    return orjson.dumps({"id": resource_id}) if resource_id else b"{}"


def decode(subject_name: str, payload: bytes) -> tuple[str, str | None]:
    """(kind, id or None); a malformed payload means "all of this kind"."""
    kind = subject_name[len(PREFIX):] if subject_name.startswith(PREFIX) else subject_name
    try:
        data = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        return kind, None
    rid = data.get("id") if isinstance(data, dict) else None
    return kind, rid if isinstance(rid, str) and rid else None
