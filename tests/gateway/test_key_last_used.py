"""``virtual_key.last_used_at`` is written off the request path, in batches, for keys that were accepted."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg

from tests.gateway.conftest import Stack, extra_gateway, make_key


def _last_used(stack: Stack, key_id: str) -> object:
    with psycopg.connect(stack.db_url) as conn:
        row = conn.execute("SELECT last_used_at FROM virtual_key WHERE id = %s", (key_id,)).fetchone()
    assert row is not None
    return row[0]


def test_used_keys_get_last_used_at(stack: Stack, valkey_url: str, tmp_path: Path) -> None:
    used, used_id = make_key(stack, name="last-used")
    _idle, idle_id = make_key(stack, name="never-used")
    revoked, revoked_id = make_key(stack, name="revoked-used", revoked=True)
    with extra_gateway(stack, valkey_url, tmp_path, NEXUS_GATEWAY__KEY_LAST_USED_INTERVAL="0.2") as gw:
        assert httpx.get(gw + "/v1/models", headers={"authorization": f"Bearer {used}"}).status_code == 200
        assert httpx.get(gw + "/v1/models", headers={"authorization": f"Bearer {revoked}"}).status_code == 401
        deadline = time.monotonic() + 10
        while _last_used(stack, used_id) is None:
            assert time.monotonic() < deadline, "last_used_at never written"
            time.sleep(0.1)
    assert _last_used(stack, idle_id) is None
    assert _last_used(stack, revoked_id) is None
