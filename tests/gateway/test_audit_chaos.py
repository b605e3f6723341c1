"""Nothing lost through the real daemons: a gateway and a hub on a private NATS that goes away for a while under
traffic; every request the gateway answered appears in PostgreSQL exactly once (spool, then replay)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from nexus.devstack import services
from tests.gateway.conftest import Stack, daemon_env, start_daemon, stop, wait_ready


def _send(gateway: str, key: str, tag: str, n: int, start: int) -> list[str]:
    ids = []
    for i in range(start, start + n):
        rid = f"{tag}-{i:04d}"
        resp = httpx.post(gateway + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {key}", "x-request-id": rid},
                          json={"model": "mock-gpt", "messages": [{"role": "user", "content": f"event {i}"}]})
        assert resp.status_code == 200
        ids.append(rid)
    return ids


def _stored(db: str, tag: str) -> dict[str, int]:
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT request_id, count(*) FROM traffic_event WHERE request_id LIKE %s "
                            "GROUP BY request_id", (f"{tag}-%",)).fetchall()
    return {r[0]: r[1] for r in rows}


@pytest.mark.slow
def test_nats_outage_under_traffic_loses_nothing(stack: Stack, valkey_url: str, tmp_path: Path,
                                                 private_nats: services.PrivateNats) -> None:
    gw_port, hub_port = services.free_port(), services.free_port()
    env = daemon_env(stack.db_url, valkey_url, private_nats.url, stack.secrets,
                     NEXUS_GATEWAY__LISTEN__PORT=str(gw_port), NEXUS_HUB__LISTEN__PORT=str(hub_port),
                     NEXUS_AUDIT__SPOOL_DIR=str(tmp_path / "spool"), NEXUS_AUDIT__SPILL_DIR=str(tmp_path / "spill"))
    gateway = start_daemon("gateway", env, tmp_path / "gateway.log")
    hub = start_daemon("hub", env, tmp_path / "hub.log")
    tag = f"chaos-{uuid.uuid4().hex[:8]}"
    try:
        wait_ready(f"http://127.0.0.1:{gw_port}", gateway, tmp_path / "gateway.log")
        wait_ready(f"http://127.0.0.1:{hub_port}", hub, tmp_path / "hub.log")
        url = f"http://127.0.0.1:{gw_port}"
        sent = _send(url, stack.key, tag, 20, 0)
        private_nats.stop()
        sent += _send(url, stack.key, tag, 30, 20)  # answered while NATS is down: spooled
        assert list((tmp_path / "spool").iterdir()), "nothing was spooled"
        private_nats.start()
        deadline = time.monotonic() + 60
        stored: dict[str, int] = {}
        while time.monotonic() < deadline:
            stored = _stored(stack.db_url, tag)
            if len(stored) == len(sent):
                break
            time.sleep(0.5)
        assert sorted(stored) == sorted(sent), f"missing: {sorted(set(sent) - set(stored))[:5]}"
        assert set(stored.values()) == {1}
        assert gateway.poll() is None and hub.poll() is None
    finally:
        stop(gateway)
        stop(hub)
