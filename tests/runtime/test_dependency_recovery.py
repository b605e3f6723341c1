"""A running daemon follows its dependencies going away and coming back, without restarting."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nexus.devstack import services
from nexus.storage import migrate


def _readyz(port: int) -> tuple[int, dict[str, dict[str, object]]]:
    r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    return r.status_code, r.json()["dependencies"]


def _until(port: int, status: int, timeout: float = 20) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            code, deps = _readyz(port)
            if code == status:
                return deps
            last = deps
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}: {last}")


@pytest.mark.slow
def test_gateway_follows_each_dependency_restart(
    tmp_path: Path, private_postgres: services.PrivatePostgres, private_valkey: services.PrivateValkey,
    private_nats: services.PrivateNats, secrets_dir: Path,
) -> None:
    migrate.migrate(private_postgres.url, log=lambda _line: None)
    port = services.free_port()
    config = tmp_path / "nexus.toml"
    config.write_text(
        f'[storage]\ndatabase_url = "{private_postgres.url}"\nvalkey_url = "{private_valkey.url}"\n'
        f'nats_url = "{private_nats.url}"\n[gateway.listen]\nhost = "127.0.0.1"\nport = {port}\n'
        '[runtime]\ndrain_timeout = 2.0\n'
        f'[secrets]\ndir = "{secrets_dir}"\n'
    )
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nexus", "gateway", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _until(port, 200)
        for name, server in (("valkey", private_valkey), ("nats", private_nats), ("postgres", private_postgres)):
            server.stop()
            deps = _until(port, 503)
            assert deps[name]["ok"] is False, deps
            assert all(d["ok"] for n, d in deps.items() if n != name), deps
            server.start()
            _until(port, 200)
            assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()[-3000:]
