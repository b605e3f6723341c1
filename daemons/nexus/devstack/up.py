"""``nexus dev up`` (what ``make run`` calls): the whole stack on one developer box.

Uses the PostgreSQL, Valkey/Redis and NATS reachable at the configured URLs, or
starts private ones under the state directory; creates secrets, migrates, seeds
the demo, starts every daemon plus the mock provider as child processes with
their logs under ``<state>/logs``, waits until each answers ``/readyz``, prints
how to use it, and on Ctrl-C stops exactly what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import httpx

from nexus.cli.db import prepare_partitions, seed_rules
from nexus.config import ConfigError, NexusConfig, load_config
from nexus.crypto import secretfiles
from nexus.devstack import seed, services
from nexus.runtime.logs import redact_url
from nexus.storage import migrate, partitions

ORDER = ("mock-provider", "hub", "control-plane", "gateway", "proxy", "agent")


def _ports(config: NexusConfig) -> dict[str, int]:
    return {
        "mock-provider": config.mock_provider.listen.port, "hub": config.hub.listen.port,
        "control-plane": config.control_plane.listen.port, "gateway": config.gateway.listen.port,
        "proxy": config.proxy.admin.port, "agent": config.agent.listen.port,
    }


def _write_config(path: Path, urls: dict[str, str], state: Path) -> None:
    path.write_text(
        "# Written by `nexus dev up`; edit ../../nexus.toml-style settings here for this dev stack.\n"
        f'[storage]\ndatabase_url = "{urls["postgres"]}"\nvalkey_url = "{urls["valkey"]}"\n'
        f'nats_url = "{urls["nats"]}"\n\n[secrets]\ndir = "{state / "secrets"}"\n\n'
        f'[runtime]\nstate_dir = "{state / "var"}"\ndrain_timeout = 5.0\n\n'
        f'[audit]\nspill_dir = "{state / "var" / "spill"}"\nspool_dir = "{state / "var" / "spool"}"\n\n'
        '# Loopback only on a developer box; ports are the defaults unless NEXUS_*__LISTEN__PORT says otherwise.\n'
        '[gateway]\nforward_headers = ["x-mock-"]  # try the mock provider\'s knobs through the gateway\n\n'
        '[gateway.listen]\nhost = "127.0.0.1"\n\n[proxy.listen]\nhost = "127.0.0.1"\n'
    )


def _wait_ready(name: str, proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{_tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready on :{port} after {timeout:.0f}s; last log lines:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in children.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load_demo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def main(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).absolute()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # a private PostgreSQL runs as the postgres user and must reach its directory
    try:
        config = load_config(None)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    started: list[services._PrivateServer] = []
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls: dict[str, str] = {}
        daemon_ports = frozenset(_ports(config).values()) | {config.proxy.listen.port}
        for kind, url in (("postgres", config.storage.database_url), ("valkey", config.storage.valkey_url),
                          ("nats", config.storage.nats_url)):
            actual, server = services.ensure(kind, url, state, daemon_ports)
            urls[kind] = actual
            if server is not None:
                started.append(server)
                print(f"started a private {kind} at {redact_url(actual)} (data in {server.root})")
            else:
                print(f"using {kind} at {redact_url(actual)}")
        secrets_dir = state / "secrets"
        secretfiles.ensure(secrets_dir)
        if migrate.ensure_database(urls["postgres"]):
            print("created the database")
        applied = migrate.migrate(urls["postgres"], log=lambda _line: None)
        prepare_partitions(urls["postgres"])
        seed_rules(urls["postgres"])
        print(f"migrations: {len(applied)} applied" if applied else "migrations: up to date")
        demo_file = state / "demo.json"
        known = _load_demo(demo_file)
        mock_url = f"http://127.0.0.1:{config.mock_provider.listen.port}"
        demo = seed.seed_demo(urls["postgres"], secrets_dir, mock_url,
                              known_key=known.get("virtual_key"), known_password=known.get("admin_password"),
                              hooks=True, public_url=config.control_plane.public_url)
        fd = os.open(demo_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(attrs.asdict(demo), f)
        config_path = state / "nexus.toml"
        _write_config(config_path, urls, state)
        if args.no_daemons:
            print(f"storage ready; config in {config_path}")
            return 0

        logs = state / "logs"
        logs.mkdir(exist_ok=True)
        ports = _ports(load_config(config_path))
        for name in ORDER:
            if services.reachable("127.0.0.1", ports[name]):
                raise RuntimeError(f"port {ports[name]} for {name} is already in use (another `make run`?)")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))}
        env["NEXUS_CONFIG"] = str(config_path)
        # Variables beat the file: point them at what actually answers (a private server may have replaced them).
        env.update(NEXUS_DATABASE_URL=urls["postgres"], NEXUS_VALKEY_URL=urls["valkey"], NEXUS_NATS_URL=urls["nats"])
        for name in ORDER:
            log = logs / f"{name}.log"
            with open(log, "ab") as out:
                children[name] = subprocess.Popen(
                    [sys.executable, "-m", "nexus", name], env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
                )
        for name in ORDER:
            _wait_ready(name, children[name], ports[name], logs / f"{name}.log")
        _banner(demo, ports, logs)
        return _wait_for_interrupt(children, logs)
    except (RuntimeError, OSError, migrate.MigrationError, partitions.PartitionError,
            services.MissingBinary, secretfiles.SecretsError) as exc:
        print(f"nexus dev up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if children:
            print("stopping daemons…")
        _stop(children)
        for server in reversed(started):
            server.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_interrupt(children: dict[str, subprocess.Popen[bytes]], logs: Path) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    while True:
        for name, proc in children.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; last log lines:\n{_tail(logs / f'{name}.log')}",
                      file=sys.stderr)
                return 1
        time.sleep(0.5)


def _banner(demo: seed.DemoSeed, ports: dict[str, int], logs: Path) -> None:
    gw, cp = ports["gateway"], ports["control-plane"]
    print(f"""
Nexus is up.
  AI gateway      http://127.0.0.1:{gw}/v1
  control plane   http://127.0.0.1:{ports['control-plane']}
  hub             http://127.0.0.1:{ports['hub']}
  proxy           127.0.0.1:3128 (admin/health on :{ports['proxy']})
  mock provider   http://127.0.0.1:{ports['mock-provider']}
  logs            {logs}/<daemon>.log

Admin login:      {demo.admin_email} / {demo.admin_password}
Demo virtual key: {demo.virtual_key}
Models:           {', '.join(demo.models)}

Try it:
  curl -s http://127.0.0.1:{gw}/v1/chat/completions \\
    -H 'Authorization: Bearer {demo.virtual_key}' -H 'Content-Type: application/json' \\
    -d '{{"model": "mock-gpt", "messages": [{{"role": "user", "content": "Hello, Nexus"}}]}}'

Admin API (OpenAPI at http://127.0.0.1:{cp}/api/openapi.json):
  TOKEN=$(curl -s http://127.0.0.1:{cp}/api/auth/login -H 'Content-Type: application/json' \\
    -d '{{"email": "{demo.admin_email}", "password": "{demo.admin_password}"}}' \\
    | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')
  curl -s http://127.0.0.1:{cp}/api/admin/virtual-keys -H "Authorization: Bearer $TOKEN"

Ctrl-C stops everything this command started.""", flush=True)
