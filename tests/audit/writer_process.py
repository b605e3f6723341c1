"""Run an audit writer in a process of its own, for the test that kills it with SIGKILL mid-batch.

Usage: python writer_process.py DB_URL NATS_URL STREAM PREFIX DURABLE ACK_WAIT
Prints ``started`` once the writer task runs, then runs until killed.
"""

from __future__ import annotations

import sys

import trio

from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.storage.pgpool import PgPool


async def main(db_url: str, nats_url: str, name: str, prefix: str, durable: str, ack_wait: str) -> None:
    config = AuditConfig(writer_batch_interval=0.2, writer_ack_wait=float(ack_wait))
    nats = NatsClient(nats_url, name="audit-writer-process")
    pool = PgPool(db_url, max_size=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(nats.run)
        await nursery.start(pool.run)
        writer = AuditWriter(pool, nats, config, stream=EventStream(name=name, prefix=prefix), durable=durable)
        await nursery.start(writer.run)
        print("started", flush=True)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:7])
