"""``nexus traffic show ID`` (the real command, in a process of its own) prints a 1 MiB spilled response back
byte for byte: emitter → spill store → JetStream → writer → PostgreSQL → CLI."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys

import orjson
import pytest
import trio

from nexus.audit.emitter import Emitter
from nexus.audit.events import Payload
from nexus.audit.stream import EventStream
from nexus.audit.writer import AuditWriter
from nexus.config.schema import AuditConfig
from nexus.net.nats.client import NatsClient
from nexus.storage.pgpool import PgPool

from .conftest import eventually, make_event

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def _text_body() -> bytes:
    """1 MiB of JSON text with multi-byte characters, as a long answer would be."""
    line = '{"choices":[{"message":{"content":"Grüße, naïve café — 東京 ✓ %06d"}}]}\n'
    out = bytearray()
    i = 0
    while len(out) < MIB:
        out += (line % i).encode()
        i += 1
    return bytes(out[:MIB]).decode("utf-8", "ignore").encode()


def _show(db_url: str, spill_dir: str, event_id: str, *extra: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(NEXUS_DATABASE_URL=db_url, NEXUS_AUDIT__SPILL_DIR=spill_dir,
               PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, "-m", "nexus", "traffic", "show", event_id, *extra], env=env,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


async def test_show_prints_a_1_mib_spilled_response_back_identical(
    nats: NatsClient, pool: PgPool, db_url: str, stream: EventStream, audit_config: AuditConfig, org_id: str,
    nursery: trio.Nursery,
) -> None:
    em = Emitter(nats, audit_config, stream=stream)
    await nursery.start(em.run)
    writer = AuditWriter(pool, nats, audit_config, stream=stream)
    await nursery.start(writer.run)
    text = _text_body()
    binary = os.urandom(MIB)
    events = [make_event(org_id, 0), make_event(org_id, 1)]
    for event, body in zip(events, (text, binary), strict=True):
        event.payloads[1] = Payload(kind="response", size_bytes=len(body), body=body, content_type="application/json")
        em.emit(event)
    await eventually(lambda: writer.inserted == 2, seconds=20, what="both stored")

    # Text: printed whole with --max-body -1, after the payload's header line.
    out = await trio.to_thread.run_sync(lambda: _show(db_url, audit_config.spill_dir, str(events[0].event_id),
                                                      "--max-body", "-1"))
    header = f"payload response: {MIB} bytes application/json spilled (fs:{hashlib.sha256(text).hexdigest()})\n"
    assert header.encode() in out
    printed = out.split(header.encode(), 1)[1]
    assert printed.endswith(b"\n")
    assert printed[:-1] == text

    # Any bytes: --json carries the body whole (base64 when it is not UTF-8).
    out = await trio.to_thread.run_sync(lambda: _show(db_url, audit_config.spill_dir, str(events[1].event_id),
                                                      "--json"))
    doc = orjson.loads(out)
    response = next(p for p in doc["payloads"] if p["kind"] == "response")
    assert response["spill_key"] == hashlib.sha256(binary).hexdigest() and response["size_bytes"] == MIB
    assert response["body_encoding"] == "base64" and base64.b64decode(response["body"]) == binary
