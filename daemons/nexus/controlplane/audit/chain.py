"""Canonical encoding of an admin audit row and the link hash of the chain (pure).

``hash = SHA-256(prev_hash || canonical(row))``, where the genesis row (``prev_hash``
NULL) contributes 32 zero bytes, so every hashed input has the same shape.

The canonical form is computed from values *as PostgreSQL returns them*, never from
what a caller handed in: jsonb re-orders keys, drops duplicate keys and stores numbers
as numeric (``1e2`` reads back as ``100``), and inet prints addresses its own way
(``::1.2.3.4``).  Both the appender and the verifier therefore feed this module the
database's text forms: ``jsonb::text`` for ``before``/``after`` and ``abbrev(inet)``
for ``source_ip``.  The jsonb text is parsed and re-encoded with sorted keys and no
whitespace, but its numbers keep PostgreSQL's exact digits (``1.10`` stays ``1.10``), so
no float conversion can hide an edit.  Timestamps are UTC ISO-8601 with microseconds,
uuids lower-case strings.  The encoding carries a version (``"v"``) so it can change
without re-hashing history.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import attrs

VERSION = 1
HASH_BYTES = 32
GENESIS = bytes(HASH_BYTES)


@attrs.frozen
class ChainRow:
    """The hashed columns of one row, in their database text forms (see the module docstring)."""

    id: str
    ts: datetime
    actor_type: str
    actor_id: str | None
    actor_label: str
    action: str
    resource_nrn: str
    org_id: str | None
    outcome: str
    before: str | None  # jsonb::text
    after: str | None  # jsonb::text
    source_ip: str | None  # abbrev(inet)
    user_agent: str | None
    request_id: str | None


class _Number(str):
    """A JSON number kept as the digits PostgreSQL printed."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(text: str) -> Any:
    return json.loads(text, parse_float=_Number, parse_int=_Number, parse_constant=_reject_constant)


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, _Number):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:  # pragma: no cover - json.loads yields nothing else
        raise TypeError(f"unexpected JSON value {type(value).__name__}")


def canonical_json(text: str | None) -> str | None:
    """Re-encode PostgreSQL's jsonb text deterministically (sorted keys, no spaces, exact numbers)."""
    if text is None:
        return None
    out: list[str] = []
    _encode(_parse(text), out)
    return "".join(out)


def utc_iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: ChainRow) -> bytes:
    """The bytes that the row's hash covers (its predecessor's hash aside)."""
    doc = {
        "v": VERSION,
        "id": row.id.lower(),
        "ts": utc_iso(row.ts),
        "actor_type": row.actor_type,
        "actor_id": row.actor_id.lower() if row.actor_id is not None else None,
        "actor_label": row.actor_label,
        "action": row.action,
        "resource_nrn": row.resource_nrn,
        "org_id": row.org_id.lower() if row.org_id is not None else None,
        "outcome": row.outcome,
        "source_ip": row.source_ip,
        "user_agent": row.user_agent,
        "request_id": row.request_id,
    }
    # The documents are spliced in already canonical; everything else is plain strings.
    head = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    before = canonical_json(row.before)
    after = canonical_json(row.after)
    body = head[:-1] + ',"after":' + (after or "null") + ',"before":' + (before or "null") + "}"
    return body.encode("utf-8")


def link_hash(prev_hash: bytes | None, row: ChainRow) -> bytes:
    if prev_hash is not None and len(prev_hash) != HASH_BYTES:
        raise ValueError(f"prev_hash must be {HASH_BYTES} bytes")
    return hashlib.sha256((prev_hash or GENESIS) + canonical(row)).digest()
