"""``nexus dev up`` (what ``make run`` runs): storage found or started, migrations, seed, every daemon, a curl
that works, and Ctrl-C stopping exactly what it started."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from nexus.devstack import services

MIGRATIONS = len(list((Path(__file__).resolve().parents[2] / "db" / "migrations").glob("[0-9]*.sql")))

DAEMON_PORT_KEYS = ("MOCK_PROVIDER__LISTEN", "HUB__LISTEN", "CONTROL_PLANE__LISTEN", "GATEWAY__LISTEN",
                    "PROXY__ADMIN", "PROXY__LISTEN", "AGENT__LISTEN")


def _env(**storage: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    for key in DAEMON_PORT_KEYS:
        env[f"NEXUS_{key}__PORT"] = str(services.free_port())
    env.update(storage)
    return env


def _run_until_banner(state: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "nexus", "dev", "up", "--state-dir", str(state)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
        if "Ctrl-C stops everything" in line:
            return proc, out
    proc.kill()
    raise AssertionError(f"no banner; output:\n{out}")


def _curl_from(banner: str) -> list[str]:
    block = banner.split("Try it:", 1)[1].split("Admin API", 1)[0]
    return shlex.split(block.replace("\\\n", " "))


def _admin_script(banner: str) -> str:
    """The admin API lines of the banner, as the shell script a user would paste."""
    return banner.split("Admin API", 1)[1].split("\n", 1)[1].split("Ctrl-C", 1)[0]


def _stop(proc: subprocess.Popen[str], ports: list[int]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    for port in ports:
        assert not services.reachable("127.0.0.1", port), f"port {port} still open after Ctrl-C"


@pytest.mark.slow
def test_dev_up_with_the_machines_storage(tmp_path: Path, pg_server_url: str, valkey_url: str,
                                          nats_url: str) -> None:
    name = f"nexus_devup_{uuid.uuid4().hex[:8]}"
    db = pg_server_url.rsplit("/", 1)[0] + "/" + name
    env = _env(NEXUS_DATABASE_URL=db, NEXUS_VALKEY_URL=valkey_url, NEXUS_NATS_URL=nats_url)
    state = tmp_path / "state"
    proc, banner = _run_until_banner(state, env)
    try:
        assert ("using postgres" in banner and f"migrations: {MIGRATIONS} applied" in banner) or "applied" in banner
        assert re.search(r"Admin login:\s+admin@nexus.local / \S+", banner)
        curl = _curl_from(banner)
        assert curl[0] == "curl"
        result = subprocess.run(curl, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "Hello, Nexus" in result.stdout
        admin = subprocess.run(["bash", "-c", _admin_script(banner)], capture_output=True, text=True, timeout=30)
        assert admin.returncode == 0 and '"items"' in admin.stdout and '"next_cursor"' in admin.stdout, admin
        for key in ("HUB__LISTEN", "CONTROL_PLANE__LISTEN", "PROXY__ADMIN", "AGENT__LISTEN"):
            port = env[f"NEXUS_{key}__PORT"]
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        _stop(proc, [int(env[f"NEXUS_{k}__PORT"]) for k in DAEMON_PORT_KEYS if k != "PROXY__LISTEN"])
        with psycopg.connect(pg_server_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    # A second run reuses the state: same key, nothing migrated again.
    proc, again = _run_until_banner(state, _env(NEXUS_DATABASE_URL=db, NEXUS_VALKEY_URL=valkey_url,
                                                NEXUS_NATS_URL=nats_url))
    try:
        assert f"migrations: {MIGRATIONS} applied" in again  # the database was dropped above, so it is rebuilt
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        with psycopg.connect(pg_server_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_dev_up_starts_private_storage_when_none_answers(tmp_path: Path) -> None:
    closed = [services.free_port() for _ in range(3)]
    env = _env(NEXUS_DATABASE_URL=f"postgresql://127.0.0.1:{closed[0]}/nexus",
               NEXUS_VALKEY_URL=f"redis://127.0.0.1:{closed[1]}/0", NEXUS_NATS_URL=f"nats://127.0.0.1:{closed[2]}")
    state = tmp_path / "state"
    proc, banner = _run_until_banner(state, env)
    try:
        for kind in ("postgres", "valkey", "nats"):
            assert f"started a private {kind}" in banner
        result = subprocess.run(_curl_from(banner), capture_output=True, text=True, timeout=30)
        assert "Hello, Nexus" in result.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    # Ctrl-C stopped the private servers it started, and nothing else.
    private_ports = [int(p) for p in re.findall(r"started a private \w+ at \w+://[^:]*:(\d+)", banner)]
    assert len(private_ports) == 3
    for port in private_ports:
        assert not services.reachable("127.0.0.1", port)
