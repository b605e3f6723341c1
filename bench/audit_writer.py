"""Ingest rate of the audit writer (JetStream → PostgreSQL) with 2 KiB bodies.  Not a test.

    .venv/bin/python bench/audit_writer.py [--events 100000] [--body 2048] [--response 512] [--runs 3]
                                           [--concurrency N]

Uses the PostgreSQL and NATS of ``NEXUS_DATABASE_URL`` / ``NEXUS_NATS_URL``
(default: loopback).  Each run: a fresh migrated database with today's
partitions, a JetStream stream of its own, ``--events`` traffic events published
through the emitter first (a request body of ``--body`` random bytes and a
response body of ``--response`` bytes each), then one ``AuditWriter`` (with
``writer_concurrency`` workers: the config default unless ``--concurrency``, each on
a pool connection of its own) started and timed until the last event is committed.  Prints one line per run, the median,
and a JSON summary on the last line.  Target (audit.md): ≥ 20,000 events/s with
2 KiB bodies on a 2-core box.

The wall-clock rate depends on whatever else the box runs, so each run also
reports the CPU the writer phase cost per event: this process (fetch, decode,
COPY, acks), the PostgreSQL backends serving it and the NATS server (read from
/proc; the NATS figure includes anyone else's traffic), and what rate those
costs allow on two otherwise idle cores (the writer's Python thread can use one
core; PostgreSQL and NATS the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs
import psycopg
import trio

from nexus.audit.emitter import Emitter
from nexus.audit.events import Payload, TrafficEvent, new_event_id
from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.cli.db import prepare_partitions
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.net.nats.jetstream import JetStream
from nexus.storage import migrate
from nexus.storage.pgpool import PgPool

PG = os.environ.get("NEXUS_DATABASE_URL", "postgresql://127.0.0.1:5432/nexus")
NATS = os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222")


def with_db(url: str, name: str) -> str:
    return f"{url.rpartition('/')[0]}/{name}"


async def until(done: Callable[[], bool]) -> None:
    # Polls counters the pipeline's tasks update; 5 ms is well below the resolution that matters.
    while True:
        if done():
            return
        await trio.sleep(0.005)


def event(org: str, key: str, i: int, body: int, response: int) -> TrafficEvent:
    request = os.urandom(body)
    answer = os.urandom(response)
    return TrafficEvent(
        source="gateway", org_id=org, virtual_key_id=key, request_id=f"bench-{i}", method="POST", host="gw",
        path="/v1/chat/completions", endpoint_type="chat", ingress_format="openai", status_code=200,
        requested_model="gpt-4o", provider="openai", model="gpt-4o", total_us=12_000 + i % 1000,
        upstream_ttfb_us=3000, input_tokens=120, output_tokens=40, cost_micro_usd=900, cache_status="miss",
        request_decision="approve",
        payloads=[Payload(kind="request", size_bytes=body, body=request, content_type="application/json"),
                  Payload(kind="response", size_bytes=response, body=answer, content_type="application/json")],
    )


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nats_pids() -> list[int]:
    """Every nats-server on the box (others' traffic included, so this overstates the writer's share)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "nats-server":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _backend_pids(db_url: str) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND pid <> pg_backend_pid()").fetchall()
    return [pid for (pid,) in rows]


async def one_run(db_url: str, events: int, body: int, response: int, concurrency: int = 0) -> dict[str, float]:
    token = uuid.uuid4().hex[:8]
    stream = EventStream(name=f"BENCH_{token}", prefix=f"bench.{token}")
    with tempfile.TemporaryDirectory() as tmp:
        config = AuditConfig(spill_dir=f"{tmp}/spill", spool_dir=f"{tmp}/spool",
                             queue_max_bytes=1 << 30, writer_ack_wait=60.0)
        if concurrency:
            config = attrs.evolve(config, writer_concurrency=concurrency)
        workers = config.writer_concurrency
        nats = NatsClient(NATS, name="bench-audit")
        # One connection per worker, as the hub's pool (pg_pool_size 10) gives them.
        pool = PgPool(db_url, max_size=workers)
        async with trio.open_nursery() as nursery:
            await nursery.start(nats.run)
            await nursery.start(pool.run)
            assert await nats.wait_ready(5) and await pool.wait_ready(5)
            emitter = Emitter(nats, config, stream=stream)
            await nursery.start(emitter.run)
            org, key = str(uuid.uuid4()), str(uuid.uuid4())
            batch = [event(org, key, i, body, response) for i in range(min(events, 5000))]
            started = time.perf_counter()
            for i in range(events):
                e = batch[i % len(batch)]
                e.event_id = new_event_id()  # emit encodes at once, so the record can be reused
                emitter.emit(e)
                if i % 2000 == 1999:
                    await trio.lowlevel.checkpoint()
            await until(lambda: emitter.published >= events)
            publish_s = time.perf_counter() - started

            writer = AuditWriter(pool, nats, config, stream=stream, durable="bench")
            # Open the writer's connections first, so their backends can be measured from the start.
            async with contextlib.AsyncExitStack() as opened:
                for _ in range(workers):
                    await opened.enter_async_context(pool.connection())
            pids = await trio.to_thread.run_sync(_backend_pids, db_url)
            pg_before = sum(map(_cpu_seconds, pids))
            nats_pids = _nats_pids()
            nats_before = sum(map(_cpu_seconds, nats_pids))
            cpu_before = time.process_time()
            started = time.perf_counter()
            async with trio.open_nursery() as writing:
                await writing.start(writer.run)
                await until(lambda: writer.inserted >= events)
                write_s = time.perf_counter() - started
                py_us = (time.process_time() - cpu_before) / events * 1e6
                # Stopped before the stream goes, or it would ensure the stream again.
                writing.cancel_scope.cancel()
            pg_us = (sum(map(_cpu_seconds, pids)) - pg_before) / events * 1e6
            nats_us = (sum(map(_cpu_seconds, nats_pids)) - nats_before) / events * 1e6
            await emitter.aclose()
            await JetStream(nats).delete_stream(stream.name)
            nursery.cancel_scope.cancel()
    # Python is one thread; PostgreSQL and NATS spread over whatever the two cores have left.
    projected = min(1e6 / py_us, 2e6 / (py_us + pg_us + nats_us))
    return {"publish_per_s": events / publish_s, "write_per_s": events / write_s, "batches": writer.batches,
            "workers": workers,
            "python_us": py_us, "postgres_us": pg_us, "nats_us": nats_us, "projected_per_s": projected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--body", type=int, default=2048, help="request body bytes")
    parser.add_argument("--response", type=int, default=512, help="response body bytes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=0,
                        help="writer_concurrency (default: the config default)")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        name = f"nexus_bench_{uuid.uuid4().hex[:10]}"
        db_url = with_db(PG, name)
        migrate.ensure_database(db_url)
        try:
            migrate.migrate(db_url, log=lambda _line: None)
            prepare_partitions(db_url)
            result = trio.run(one_run, db_url, args.events, args.body, args.response, args.concurrency)
        finally:
            with psycopg.connect(with_db(PG, "postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        results.append(result)
        print(f"run {run + 1}: writer {result['write_per_s']:,.0f} events/s ({result['batches']:.0f} batches,"
              f" {result['workers']:.0f} workers);"
              f" CPU per event: python {result['python_us']:.1f} µs, postgres {result['postgres_us']:.1f} µs,"
              f" nats-server {result['nats_us']:.1f} µs"
              f" -> {result['projected_per_s']:,.0f} events/s on two idle cores;"
              f" emitter publish {result['publish_per_s']:,.0f} events/s", flush=True)
    write = statistics.median(r["write_per_s"] for r in results)
    publish = statistics.median(r["publish_per_s"] for r in results)
    projected = statistics.median(r["projected_per_s"] for r in results)
    print(f"median: writer {write:,.0f} events/s measured, {projected:,.0f} events/s projected on two idle cores;"
          f" emitter {publish:,.0f} events/s ({args.body} B request + {args.response} B response bodies,"
          " target writer >= 20,000/s)")
    print(json.dumps({"bench": "audit_writer", "events": args.events, "body": args.body, "response": args.response,
                      "workers": results[0]["workers"],
                      "writer_events_per_s": round(write), "writer_projected_per_s": round(projected),
                      "emitter_events_per_s": round(publish)}))


if __name__ == "__main__":
    main()
