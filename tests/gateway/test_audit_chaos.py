"""Nothing lost through the real daemons: a gateway and a hub on a private NATS, under steady traffic, while one
part of the pipeline goes away for 10 s (NATS, the hub's PostgreSQL, the hub itself SIGKILLed mid-batch) or the
gateway is SIGKILLed right after answering (block mode).  Every request the gateway answered appears in
PostgreSQL exactly once, with the SHA-256 of its request and response bodies intact."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import httpx
import psycopg
import pytest

from nexus.devstack import services
from nexus.storage import migrate
from tests.gateway.conftest import Stack, daemon_env, start_daemon, stop, wait_ready

pytestmark = pytest.mark.slow

OUTAGE_S = 10.0
# A prompt of ~2 KiB, so each event carries real bodies.
_FILLER = "lorem ipsum dolor sit amet " * 70


def _body(tag: str, i: int) -> bytes:
    return (b'{"model":"mock-gpt","messages":[{"role":"user","content":"' + f"{tag}-{i:05d} {_FILLER}".encode()
            + b'"}]}')


@attrs.define
class Answered:
    request_sha: bytes
    response_sha: bytes


class Load:
    """Chat completions sent back to back from ``threads`` threads until stopped; what was answered."""

    def __init__(self, url: str, key: str, tag: str, *, threads: int = 2, pace: float = 0.01) -> None:
        self.url = url + "/v1/chat/completions"
        self.key = key
        self.tag = tag
        self.pace = pace
        self.answered: dict[str, Answered] = {}
        self.failures: list[str] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def send(self, client: httpx.Client) -> None:
        with self._lock:
            i = self._next
            self._next += 1
        rid = f"{self.tag}-{i:05d}"
        body = _body(self.tag, i)
        try:
            resp = client.post(self.url, content=body, timeout=30,
                               headers={"authorization": f"Bearer {self.key}", "x-request-id": rid,
                                        "content-type": "application/json"})
        except httpx.HTTPError as exc:
            self.failures.append(f"{rid}: {exc!r}")
            return
        if resp.status_code != 200:
            self.failures.append(f"{rid}: {resp.status_code} {resp.text[:200]}")
            return
        with self._lock:
            self.answered[rid] = Answered(hashlib.sha256(body).digest(), hashlib.sha256(resp.content).digest())

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                self.send(client)
                time.sleep(self.pace)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)


def _stored(db: str, tag: str) -> dict[str, list[tuple[int, bytes | None, bytes | None]]]:
    """request id → one (event count, request sha256, response sha256) per stored event."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT e.request_id, e.event_id,"
            " (SELECT sha256(body) FROM traffic_event_payload p WHERE p.event_id = e.event_id AND p.ts = e.ts"
            "  AND p.kind = 'request'),"
            " (SELECT sha256(body) FROM traffic_event_payload p WHERE p.event_id = e.event_id AND p.ts = e.ts"
            "  AND p.kind = 'response')"
            " FROM traffic_event e WHERE e.request_id LIKE %s", (f"{tag}-%",)).fetchall()
    out: dict[str, list[tuple[int, bytes | None, bytes | None]]] = {}
    for rid, _eid, req_sha, resp_sha in rows:
        out.setdefault(rid, []).append((1, bytes(req_sha) if req_sha else None,
                                        bytes(resp_sha) if resp_sha else None))
    return out


def assert_all_stored_once(db: str, tag: str, answered: dict[str, Answered], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    stored = _stored(db, tag)
    while time.monotonic() < deadline and not set(answered) <= set(stored):
        time.sleep(0.5)
        stored = _stored(db, tag)
    missing = sorted(set(answered) - set(stored))
    assert not missing, f"{len(missing)} of {len(answered)} answered requests not stored, e.g. {missing[:5]}"
    time.sleep(1.0)  # a duplicate would show up right behind
    stored = _stored(db, tag)
    twice = {rid: len(events) for rid, events in stored.items() if len(events) != 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"
    for rid, want in answered.items():
        [(_, request_sha, response_sha)] = stored[rid]
        assert request_sha == want.request_sha, f"{rid}: request body changed"
        assert response_sha == want.response_sha, f"{rid}: response body changed"


@attrs.define
class Pipeline:
    """A gateway and a hub (its writer) as daemons on a private NATS; restartable one by one."""

    stack: Stack
    valkey_url: str
    nats: services.PrivateNats
    dir: Path
    hub_db: str
    gateway_extra: dict[str, str] = attrs.Factory(dict)
    gateway: subprocess.Popen[bytes] | None = None
    hub: subprocess.Popen[bytes] | None = None
    gw_port: int = attrs.Factory(services.free_port)
    hub_port: int = attrs.Factory(services.free_port)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw_port}"

    def _env(self, db: str, **extra: str) -> dict[str, str]:
        return daemon_env(db, self.valkey_url, self.nats.url, self.stack.secrets,
                          NEXUS_GATEWAY__LISTEN__PORT=str(self.gw_port), NEXUS_HUB__LISTEN__PORT=str(self.hub_port),
                          NEXUS_AUDIT__SPOOL_DIR=str(self.dir / "spool"),
                          NEXUS_AUDIT__SPILL_DIR=str(self.dir / "spill"),
                          # A killed writer's unacked batch comes back after this, not the default 30 s.
                          NEXUS_AUDIT__WRITER_ACK_WAIT="2", NEXUS_AUDIT__WRITER_BATCH_INTERVAL="0.2", **extra)

    def start_gateway(self) -> None:
        self.starts += 1
        log = self.dir / f"gateway-{self.starts}.log"
        self.gateway = start_daemon("gateway", self._env(self.stack.db_url, **self.gateway_extra), log)
        wait_ready(self.url, self.gateway, log)

    def start_hub(self) -> None:
        self.starts += 1
        log = self.dir / f"hub-{self.starts}.log"
        self.hub = start_daemon("hub", self._env(self.hub_db), log)
        wait_ready(f"http://127.0.0.1:{self.hub_port}", self.hub, log)

    def kill(self, proc: subprocess.Popen[bytes] | None) -> None:
        assert proc is not None and proc.poll() is None, "the daemon died before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in (self.gateway, self.hub):
            if proc is not None:
                stop(proc)


@pytest.fixture
def pipeline_factory(stack: Stack, valkey_url: str, tmp_path: Path, private_nats: services.PrivateNats
                     ) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(hub_db: str | None = None, **gateway_extra: str) -> Pipeline:
        p = Pipeline(stack, valkey_url, private_nats, tmp_path, hub_db or stack.db_url, gateway_extra)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _tag() -> str:
    return f"chaos-{uuid.uuid4().hex[:8]}"


def test_nats_down_10s_under_load_spools_then_replays(stack: Stack, pipeline_factory: Callable[..., Pipeline]
                                                      ) -> None:
    p = pipeline_factory()
    p.start_gateway()
    p.start_hub()
    tag = _tag()
    with Load(p.url, stack.key, tag) as load:
        time.sleep(1.0)
        p.nats.stop()
        during = load.count()
        time.sleep(OUTAGE_S)
        during = load.count() - during
        assert list((p.dir / "spool").glob("*.spool")), "nothing was spooled"
        p.nats.start()
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    assert during > 100, f"only {during} requests answered during the outage"
    assert_all_stored_once(stack.db_url, tag, load.answered)
    assert p.gateway is not None and p.gateway.poll() is None


def test_postgres_down_10s_jetstream_holds_and_the_writer_catches_up(
    stack: Stack, pipeline_factory: Callable[..., Pipeline], private_postgres: services.PrivatePostgres,
) -> None:
    # The hub writes to a PostgreSQL of its own, so stopping it leaves the gateway's (keys, routes) alone.
    migrate.migrate(private_postgres.url, log=lambda _line: None)
    p = pipeline_factory(hub_db=private_postgres.url)
    p.start_gateway()
    p.start_hub()
    tag = _tag()
    with Load(p.url, stack.key, tag) as load:
        time.sleep(1.0)
        private_postgres.stop()
        time.sleep(OUTAGE_S)
        private_postgres.start()
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    assert len(load.answered) > 150
    assert_all_stored_once(private_postgres.url, tag, load.answered)
    assert p.hub is not None and p.hub.poll() is None


def test_hub_killed_mid_batch_and_restarted_after_10s(stack: Stack, pipeline_factory: Callable[..., Pipeline]
                                                      ) -> None:
    app = f"chaos-hub-{uuid.uuid4().hex[:8]}"
    p = pipeline_factory(hub_db=f"{stack.db_url}?application_name={app}")
    p.start_gateway()
    p.start_hub()
    tag = _tag()
    with Load(p.url, stack.key, tag) as load, psycopg.connect(stack.db_url, autocommit=True) as blocker, \
            psycopg.connect(stack.db_url, autocommit=True) as watcher:
        time.sleep(1.0)
        # Holding this lock stops the writer's rollup upsert, the last statement of its transaction: the events
        # and payloads of the batch are written but not committed when the hub dies.
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE usage_rollup_1d IN SHARE MODE")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                  " AND wait_event_type = 'Lock' AND query LIKE 'WITH %%'", (app,)).fetchone()
            if row and row[0]:
                break
            time.sleep(0.05)
        else:
            rows = watcher.execute("SELECT application_name, state, wait_event_type, left(query, 60) FROM"
                                   " pg_stat_activity").fetchall()
            pytest.fail(f"the hub's writer never waited inside its transaction: {rows}")
        p.kill(p.hub)
        blocker.execute("ROLLBACK")
        time.sleep(OUTAGE_S)
        p.start_hub()
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    assert len(load.answered) > 150
    assert_all_stored_once(stack.db_url, tag, load.answered)


def _answer_then_kill(p: Pipeline, key: str, tag: str, start: int, n: int) -> dict[str, Answered]:
    """``n`` requests from 8 threads at once; SIGKILL the gateway the moment the last answer arrived."""
    load = Load(p.url, key, tag)
    load._next = start
    with httpx.Client() as client:
        threads = [threading.Thread(target=lambda: [load.send(client) for _ in range(n // 8)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        p.kill(p.gateway)
    assert not load.failures, load.failures[:5]
    assert len(load.answered) == n // 8 * 8
    return load.answered


def test_block_mode_gateway_killed_right_after_answering_loses_nothing(
    stack: Stack, pipeline_factory: Callable[..., Pipeline],
) -> None:
    # Long batches: in spill mode these answers would still be in the gateway's memory when it dies.
    p = pipeline_factory(NEXUS_AUDIT__LOSS_MODE="block", NEXUS_AUDIT__BATCH_INTERVAL="0.3")
    tag = _tag()
    p.start_gateway()
    # NATS up: each answer waited for JetStream's ack.
    answered = _answer_then_kill(p, stack.key, tag, 0, 80)
    p.start_gateway()
    # NATS down: each answer waited for the spool's fsync.
    p.nats.stop()
    answered |= _answer_then_kill(p, stack.key, tag, 1000, 80)
    spooled = list((p.dir / "spool").glob("*.spool"))
    assert spooled and sum(f.stat().st_size for f in spooled) > 80 * 2048
    p.nats.start()
    p.start_gateway()  # replays the spool the killed one left
    p.start_hub()
    assert_all_stored_once(stack.db_url, tag, answered)
