"""What goes into the admin audit log (``AdminAuditEntry``) and what comes back out (``AuditRow``).

An entry is checked when it is built, against the same rules as the table's CHECK
constraints, so a bad entry fails with ``AuditError`` naming the field instead of a
database error half-way through a caller's transaction.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from nexus.controlplane.audit.chain import ChainRow

ACTOR_TYPES = frozenset({"user", "api_key", "system", "thing"})
OUTCOMES = frozenset({"success", "denied", "failure"})
ACTION_RE = re.compile(r"[a-z][a-z0-9-]*:[A-Za-z0-9*._-]+")
NRN_PREFIX = "nrn:nexus:"
# A hostile client picks its User-Agent; the log keeps a bounded prefix.
MAX_USER_AGENT = 1024
MAX_TEXT = 4096


class AuditError(ValueError):
    """An entry or a query the audit log refuses; the message names the field."""


def _uuid(field: str, value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise AuditError(f"{field} must be a uuid") from None


def _actor_id(value: uuid.UUID | str | None) -> uuid.UUID | None:
    return _uuid("actor_id", value)


def _org_id(value: uuid.UUID | str | None) -> uuid.UUID | None:
    return _uuid("org_id", value)


def _entry_id(value: uuid.UUID | str) -> uuid.UUID:
    converted = _uuid("id", value)
    if converted is None:
        raise AuditError("id must be a uuid")
    return converted


def _text(field: str, value: str | None, limit: int = MAX_TEXT) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise AuditError(f"{field} must be a string")
    if "\x00" in value:
        raise AuditError(f"{field} must not contain NUL characters")
    if len(value) > limit:
        raise AuditError(f"{field} is longer than {limit} characters")


def _document(field: str, value: Mapping[str, Any] | None) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise AuditError(f"{field} must be a JSON object")
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
        encoded.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise AuditError(f"{field} is not representable as JSON: {exc}") from None
    if "\\u0000" in encoded:  # jsonb refuses NUL inside strings
        raise AuditError(f"{field} must not contain NUL characters")


def _source_ip(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise AuditError("source_ip must be an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise AuditError("source_ip must not carry an IPv6 zone")
    return str(address)


def _user_agent(value: str | None) -> str | None:
    return value[:MAX_USER_AGENT] if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class AdminAuditEntry:
    """One admin action to record.

    ``before``/``after`` are JSON objects (the resource before and after the write) and
    are masked with ``mask_secrets`` when appended.  ``ts`` defaults to the moment of
    the append; a given one must be timezone-aware.  ``id`` is minted here so that the
    hash covers it.
    """

    actor_type: str
    action: str
    resource_nrn: str
    outcome: str = "success"
    actor_id: uuid.UUID | None = attrs.field(default=None, converter=_actor_id)
    actor_label: str = ""
    org_id: uuid.UUID | None = attrs.field(default=None, converter=_org_id)
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    source_ip: str | None = attrs.field(default=None, converter=_source_ip)
    user_agent: str | None = attrs.field(default=None, converter=_user_agent)
    request_id: str | None = None
    ts: datetime | None = None
    id: uuid.UUID = attrs.field(factory=uuid.uuid4, converter=_entry_id)

    def __attrs_post_init__(self) -> None:
        if self.actor_type not in ACTOR_TYPES:
            raise AuditError(f"actor_type must be one of {', '.join(sorted(ACTOR_TYPES))}")
        if self.outcome not in OUTCOMES:
            raise AuditError(f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
        if not isinstance(self.action, str) or not ACTION_RE.fullmatch(self.action):
            raise AuditError("action must look like 'admin:<resource>.<verb>'")
        _text("resource_nrn", self.resource_nrn)
        if not self.resource_nrn.startswith(NRN_PREFIX):
            raise AuditError(f"resource_nrn must start with {NRN_PREFIX!r}")
        if self.actor_type != "system" and self.actor_id is None:
            raise AuditError("actor_id is required unless actor_type is 'system'")
        _text("actor_label", self.actor_label)
        _text("user_agent", self.user_agent)
        _text("request_id", self.request_id, 256)
        _document("before", self.before)
        _document("after", self.after)
        if self.ts is not None and (not isinstance(self.ts, datetime) or self.ts.tzinfo is None):
            raise AuditError("ts must be a timezone-aware datetime")

    def stamped(self, now: datetime | None = None) -> datetime:
        """The entry's time in UTC (``now`` or the current time when none was given)."""
        ts = self.ts or now or datetime.now(UTC)
        return ts.astimezone(UTC)


# The columns every reader selects, in AuditRow order; jsonb and inet come back as the
# database's text forms so that the canonical encoding sees exactly what is stored.
SELECT_COLUMNS = (
    "seq, id, ts, actor_type, actor_id, actor_label, action, resource_nrn, org_id, outcome, "
    "before::text, after::text, abbrev(source_ip), user_agent, request_id, prev_hash, hash"
)


@attrs.frozen
class AuditRow:
    """A stored row. ``before_json``/``after_json`` are the stored jsonb texts; ``before``/``after`` parse them."""

    seq: int
    id: uuid.UUID
    ts: datetime
    actor_type: str
    actor_id: uuid.UUID | None
    actor_label: str
    action: str
    resource_nrn: str
    org_id: uuid.UUID | None
    outcome: str
    before_json: str | None
    after_json: str | None
    source_ip: str | None
    user_agent: str | None
    request_id: str | None
    prev_hash: bytes | None
    hash: bytes

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> AuditRow:
        values = list(row)
        for i in (15, 16):
            if values[i] is not None:
                values[i] = bytes(values[i])
        return cls(*values)

    @property
    def before(self) -> Any:
        return json.loads(self.before_json) if self.before_json is not None else None

    @property
    def after(self) -> Any:
        return json.loads(self.after_json) if self.after_json is not None else None

    def chain_row(self) -> ChainRow:
        return ChainRow(
            id=str(self.id), ts=self.ts, actor_type=self.actor_type,
            actor_id=str(self.actor_id) if self.actor_id is not None else None,
            actor_label=self.actor_label, action=self.action, resource_nrn=self.resource_nrn,
            org_id=str(self.org_id) if self.org_id is not None else None, outcome=self.outcome,
            before=self.before_json, after=self.after_json, source_ip=self.source_ip,
            user_agent=self.user_agent, request_id=self.request_id,
        )
