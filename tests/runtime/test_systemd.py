"""Daemons under (simulated) systemd: inherited socket, READY/WATCHDOG/STOPPING, draining on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus.devstack.services import PrivateValkey
from tests.runtime import systemd_harness


def config_file(tmp_path: Path, pg: str, valkey: str, nats: str, secrets: Path | None = None) -> Path:
    path = tmp_path / "nexus.toml"
    path.write_text(
        f'[storage]\ndatabase_url = "{pg}"\nvalkey_url = "{valkey}"\nnats_url = "{nats}"\n'
        f'[runtime]\ndrain_timeout = 10.0\n[log]\nlevel = "info"\n'
        + (f'[secrets]\ndir = "{secrets}"\n' if secrets else "")
    )
    return path


@pytest.fixture
def daemons() -> Iterator[list[systemd_harness.Activated]]:
    started: list[systemd_harness.Activated] = []
    yield started
    for d in started:
        d.stop()


def test_gateway_ready_serves_inherited_socket_and_stops_cleanly(
    tmp_path: Path, db_url: str, valkey_url: str, nats_url: str, secrets_dir: Path,
    daemons: list[systemd_harness.Activated],
) -> None:
    d = systemd_harness.start("gateway", config_file(tmp_path, db_url, valkey_url, nats_url, secrets_dir))
    daemons.append(d)
    d.wait_for("READY=1", 30)
    base = f"http://127.0.0.1:{d.port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["dependencies"]) == {"postgres", "valkey", "nats", "config", "quota"}
    assert "nexus_build_info" in httpx.get(f"{base}/metrics").text
    d.wait_for("WATCHDOG=1", 5)
    d.proc.send_signal(signal.SIGTERM)
    d.wait_for("STOPPING=1", 5)
    assert d.proc.wait(15) == 0


def test_hub_on_hypercorn_under_activation(
    tmp_path: Path, db_url: str, nats_url: str, valkey_url: str, daemons: list[systemd_harness.Activated]
) -> None:
    d = systemd_harness.start("hub", config_file(tmp_path, db_url, valkey_url, nats_url))
    daemons.append(d)
    d.wait_for("READY=1", 30)
    assert httpx.get(f"http://127.0.0.1:{d.port}/healthz").status_code == 200
    d.proc.send_signal(signal.SIGTERM)
    d.wait_for("STOPPING=1", 5)
    assert d.proc.wait(15) == 0


def test_ready_waits_for_dependencies(
    tmp_path: Path, db_url: str, nats_url: str, private_dir: Path, secrets_dir: Path,
    daemons: list[systemd_harness.Activated],
) -> None:
    valkey = PrivateValkey(private_dir / "valkey")  # not started yet: the gateway must wait for it
    d = systemd_harness.start("gateway", config_file(tmp_path, db_url, valkey.url, nats_url, secrets_dir))
    daemons.append(d)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{d.port}/readyz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ready.status_code == 503
        assert ready.json()["dependencies"]["valkey"]["ok"] is False
        time.sleep(1.0)
        assert not d.received("READY=1")
        valkey.start()
        d.wait_for("READY=1", 15)
        assert httpx.get(f"http://127.0.0.1:{d.port}/readyz").status_code == 200
    finally:
        valkey.stop()


def test_sigterm_drains_a_slow_request_in_flight(tmp_path: Path, daemons: list[systemd_harness.Activated]) -> None:
    d = systemd_harness.start("mock-provider", config_file(
        tmp_path, "postgresql://127.0.0.1/x", "redis://127.0.0.1:1/0", "nats://127.0.0.1:1"))
    daemons.append(d)
    d.wait_for("READY=1", 30)
    result: dict[str, object] = {}

    def slow_call() -> None:
        try:
            r = httpx.post(
                f"http://127.0.0.1:{d.port}/v1/chat/completions",
                json={"model": "mock-gpt", "messages": [{"role": "user", "content": "slow one"}]},
                headers={"x-mock-ttft-ms": "1500"}, timeout=20,
            )
            result["status"], result["body"] = r.status_code, r.json()
        except Exception as exc:
            result["error"] = exc

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.4)  # the request is now in flight inside the mock's TTFT wait
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    d.wait_for("STOPPING=1", 5)
    # Stopped accepting: new connections are refused while the old request drains.
    time.sleep(0.2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{d.port}/healthz", timeout=2)
    assert d.proc.wait(15) == 0
    caller.join(10)
    assert result.get("status") == 200, result
    assert "slow one" in str(result["body"])
    assert time.monotonic() - started >= 1.0  # it exited only after the request finished
