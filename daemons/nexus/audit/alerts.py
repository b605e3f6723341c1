"""Alert events: what a daemon raises (a quota soft limit reached, …) on its way to the ``alert`` table.

An :class:`Alert` travels like every other event: the emitting daemon hands it
to its :class:`~nexus.audit.emitter.Emitter` (``emit_message(KIND_ALERT,
alert.event_id, encode_alert(alert))``), which publishes it to ``NEXUS_EVENTS``
on ``nexus.event.alert`` (spooled while NATS is away);
the hub's :class:`~nexus.audit.alert_writer.AlertWriter` stores it.  The audit
writer acks these messages without a row (they are not traffic).

Wire format: the alert as compact JSON (orjson).  Unknown keys are ignored on
decoding, as for traffic events, so a hub accepts alerts from newer daemons.

Storage (``UPSERT``): one row per unresolved ``dedup_key`` (the table's
partial unique index); a repeat bumps ``occurrences`` and ``last_seen_at``.  A
redelivery of the event the row counted last (the hub died between commit and
ack) changes nothing: the row keeps that event's id in ``details``.

Pure: no I/O, no Trio.  Error handling: :func:`decode_alert` raises
:class:`~nexus.audit.events.DecodeError` for bytes that are not an alert;
:class:`Alert` raises ``ValueError`` for a kind or severity the table refuses.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final, Literal

import attrs
import cattrs
import orjson

from nexus.audit.events import DecodeError, new_event_id

__all__ = ["KIND_ALERT", "UPSERT", "Alert", "decode_alert", "encode_alert", "upsert_params"]

# The subject's last token (``nexus.event.alert``), beside ``events.KIND_TRAFFIC`` and the others.
KIND_ALERT: Final = "alert"

Severity = Literal["info", "warning", "critical"]

_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,62}")


def _kind_ok(_inst: Alert, _attr: attrs.Attribute[str], value: str) -> None:
    if not _KIND.fullmatch(value):
        raise ValueError(f"alert kind {value!r}: expected lower-case letters, digits and _.- (at most 63)")


def _not_empty(_inst: Alert, attr: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError(f"alert {attr.name} must not be empty")


@attrs.frozen(slots=True, kw_only=True)
class Alert:
    """One occurrence of an alert; ``dedup_key`` says which occurrences are the same alert."""

    kind: str = attrs.field(validator=_kind_ok)
    severity: Severity = attrs.field(validator=attrs.validators.in_(("info", "warning", "critical")))
    dedup_key: str = attrs.field(validator=_not_empty)
    title: str = attrs.field(validator=_not_empty)
    message: str = ""
    org_id: str | None = None
    resource_nrn: str | None = None
    details: dict[str, Any] = attrs.Factory(dict)
    event_id: str = attrs.Factory(lambda: str(new_event_id()))
    # Epoch seconds when the daemon saw it.
    at: float = 0.0


_CONVERTER: Final = cattrs.Converter()


def encode_alert(alert: Alert) -> bytes:
    return orjson.dumps(_CONVERTER.unstructure(alert))


def decode_alert(data: bytes) -> Alert:
    try:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise DecodeError("an alert must be a JSON object")
        known = {a.name for a in attrs.fields(Alert)}
        alert = _CONVERTER.structure({k: v for k, v in raw.items() if k in known}, Alert)
        uuid.UUID(alert.event_id)
    except (orjson.JSONDecodeError, cattrs.BaseValidationError, ValueError, TypeError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"not an alert: {exc}") from None
    return alert


# The org may be gone by the time the alert is stored: then the row has none rather than failing.
UPSERT: Final = (
    "INSERT INTO alert AS a (kind, severity, dedup_key, title, message, org_id, resource_nrn, details,"
    " first_seen_at, last_seen_at)"
    " VALUES (%(kind)s, %(severity)s, %(dedup_key)s, %(title)s, %(message)s,"
    " (SELECT id FROM organization WHERE id = %(org_id)s::uuid), %(resource_nrn)s, %(details)s::jsonb,"
    " to_timestamp(%(at)s), to_timestamp(%(at)s))"
    " ON CONFLICT (dedup_key) WHERE status <> 'resolved' DO UPDATE SET"
    " occurrences = a.occurrences + 1, last_seen_at = greatest(a.last_seen_at, EXCLUDED.last_seen_at),"
    " message = EXCLUDED.message, details = EXCLUDED.details"
    " WHERE a.details->>'event_id' IS DISTINCT FROM EXCLUDED.details->>'event_id'"
)


def upsert_params(alert: Alert) -> dict[str, Any]:
    """``UPSERT``'s parameters; ``details`` gains the event id (what makes a redelivery a no-op)."""
    try:
        org = str(uuid.UUID(alert.org_id)) if alert.org_id else None
    except ValueError:
        org = None
    return {
        "kind": alert.kind, "severity": alert.severity, "dedup_key": alert.dedup_key, "title": alert.title,
        "message": alert.message, "org_id": org, "resource_nrn": alert.resource_nrn,
        "details": orjson.dumps({**alert.details, "event_id": alert.event_id}).decode(), "at": alert.at,
    }
