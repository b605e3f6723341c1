"""The canonical encoding: deterministic, sensitive to every hashed column, and stable across a round trip
through PostgreSQL (jsonb re-orders keys and normalises numbers, inet prints addresses its own way)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import psycopg
import pytest

from nexus.controlplane.audit.chain import GENESIS, ChainRow, canonical, canonical_json, link_hash
from nexus.controlplane.audit.log import append
from nexus.controlplane.audit.record import SELECT_COLUMNS, AuditRow
from nexus.storage.pgpool import PgPool

from .conftest import make_entry

ROW = ChainRow(
    id="0b9c7c6e-0d6f-4c49-9f51-1d2c3b4a5e6f", ts=datetime(2025, 3, 1, 12, 0, 0, 5, tzinfo=UTC),
    actor_type="user", actor_id="5f1e0c5e-7a55-4e2e-9d5b-0d0d0d0d0d0d", actor_label="admin@nexus.local",
    action="admin:virtual-key.create", resource_nrn="nrn:nexus:gateway:org/acme:virtual-key/1",
    org_id=None, outcome="success", before=None, after='{"b": 1, "a": [1.10, "☃"]}', source_ip="10.0.0.1",
    user_agent="curl/8", request_id="r-1",
)


def test_canonical_is_deterministic_and_utc() -> None:
    encoded = canonical(ROW)
    assert encoded == canonical(attrs.evolve(ROW, ts=ROW.ts.astimezone(timezone(timedelta(hours=5)))))
    assert b'"ts":"2025-03-01T12:00:00.000005Z"' in encoded
    assert '"after":{"a":[1.10,"☃"],"b":1}'.encode() in encoded
    assert link_hash(None, ROW) == link_hash(GENESIS, ROW)


def test_canonical_json_keeps_exact_numbers_and_sorts_keys() -> None:
    text = '{"b": 1.10, "a": {"y": null, "x": [true, false]}}'
    assert canonical_json(text) == '{"a":{"x":[true,false],"y":null},"b":1.10}'
    assert canonical_json("1.10") != canonical_json("1.1")
    assert canonical_json("123456789012345678901234567890") == "123456789012345678901234567890"
    assert canonical_json(None) is None
    with pytest.raises(ValueError):
        canonical_json('{"a": NaN}')


@pytest.mark.parametrize("change", [
    {"id": "1b9c7c6e-0d6f-4c49-9f51-1d2c3b4a5e6f"}, {"ts": datetime(2025, 3, 1, 12, 0, 0, 6, tzinfo=UTC)},
    {"actor_type": "system"}, {"actor_id": None}, {"actor_label": "x"}, {"action": "admin:virtual-key.delete"},
    {"resource_nrn": "nrn:nexus:gateway:org/acme:virtual-key/2"}, {"org_id": str(uuid.UUID(int=1))},
    {"outcome": "denied"}, {"before": "{}"}, {"after": '{"b": 1, "a": [1.1, "☃"]}'}, {"after": None},
    {"source_ip": "10.0.0.2"}, {"user_agent": None}, {"request_id": "r-2"},
])
def test_every_column_is_covered(change: dict[str, Any]) -> None:
    assert link_hash(None, attrs.evolve(ROW, **change)) != link_hash(None, ROW)


def test_the_predecessor_is_covered() -> None:
    assert link_hash(b"\x01" * 32, ROW) != link_hash(b"\x02" * 32, ROW)
    with pytest.raises(ValueError):
        link_hash(b"short", ROW)


TRICKY: dict[str, Any] = {
    "z": 1, "a": {"nested": {"deeper": [1, 2, {"k": "v"}]}, "empty": {}, "list": []},
    "unicode": "snow ☃, emoji 🙂, accents éàü, rtl עברית, escapes \" \\ \n \t \u2028",
    "floats": [0.1, 1.5, -2.25, 1e-7, 1e16, 1e300, 2.5e-300, 123456.789],
    "big": [2**70, -(2**63), 2**64 + 1, 0, -1],
    "bools": [True, False, None],
    "key order": {"b": 2, "a": 1, "aa": 3, "": 0},
}


async def test_round_trip_through_postgresql_verifies(pool: PgPool, db_url: str, org_id: uuid.UUID) -> None:
    entry = make_entry(org_id, 1, before=TRICKY, after={"f": 1e16, "s": "☃"}, source_ip="::ffff:10.1.2.3",
                       ts=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-7))))
    appended = await append(pool, entry)
    with psycopg.connect(db_url) as conn:
        raw = conn.execute(f"SELECT {SELECT_COLUMNS} FROM admin_audit_log WHERE seq = %s", (appended.seq,)).fetchone()
    assert raw is not None
    row = AuditRow.from_db(raw)
    # jsonb changed the document's shape (1e16 reads back as an integer), yet the hash still verifies.
    assert row.after == {"f": 10**16, "s": "☃"}
    assert row.before["big"] == TRICKY["big"] and row.before["unicode"] == TRICKY["unicode"]
    assert row.ts == entry.ts and row.id == entry.id
    assert row.hash == appended.hash == link_hash(row.prev_hash, row.chain_row())
