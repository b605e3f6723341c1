"""``nexus traffic tail | show``: follow traffic events live, and show one stored event in full.

``tail`` subscribes (core NATS, so it sees every event published to the stream
from now on and never moves a consumer) to ``nexus.event.>`` and prints one line
per event, or with ``--json`` the event's JSON as published (bodies travel after
it and are left out).  ``show ID`` reads the ``traffic_event`` row, its payloads
(spilled ones from the spill store, checked against their SHA-256) and prints the
event, the per-hook trace and the bodies.

Both are usable from tests: :func:`follow` is the Trio loop behind ``tail``, and
:func:`show` writes to any text stream.  Exit codes: 0 done, 1 not found or
unreachable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from nexus.audit.events import TRAFFIC_KINDS, DecodeError, SpillRef, decode
from nexus.audit.spill import FsSpillStore, SpillError
from nexus.audit.stream import EVENTS
from nexus.config import ConfigError, NexusConfig, load_config

if TYPE_CHECKING:
    import trio

# Trio, psycopg and the NATS client are imported by the command that needs them, so that
# adding these commands to the parser keeps `nexus --help` fast.

__all__ = ["add_parser", "follow", "format_event", "show"]

DEFAULT_MAX_BODY = 4096


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``traffic tail`` and ``traffic show`` to the ``nexus`` command line."""
    traffic = subparsers.add_parser("traffic", help="traffic events: follow them live, show one in full")
    sub = traffic.add_subparsers(dest="traffic_command", required=True, metavar="TRAFFIC_COMMAND")

    tail = sub.add_parser("tail", help="print every event as it is published (Ctrl-C to stop)",
                          description="Print every event published to the event stream, one line each.")
    tail.add_argument("--config", "-c", metavar="FILE", help="TOML config (default: $NEXUS_CONFIG or /etc/nexus)")
    tail.add_argument("--json", action="store_true", help="print each event's JSON as published")
    tail.add_argument("--subject", default=f"{EVENTS.prefix}.>", help="subject to follow (default: %(default)s)")
    tail.add_argument("--count", type=int, default=0, metavar="N", help="stop after N events (default: never)")
    tail.set_defaults(func=_tail_command)

    show_p = sub.add_parser("show", help="one stored event with its payloads and hook trace",
                            description="Show one stored traffic event with its payloads and hook trace.")
    show_p.add_argument("event_id", metavar="ID", help="the event id (a UUIDv7)")
    show_p.add_argument("--config", "-c", metavar="FILE", help="TOML config (default: $NEXUS_CONFIG or /etc/nexus)")
    show_p.add_argument("--json", action="store_true", help="print the event as one JSON object")
    show_p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                        help="bytes of each body to print (0: none, -1: all; default %(default)s)")
    show_p.set_defaults(func=_show_command)


def _config(args: argparse.Namespace) -> NexusConfig:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


# ------------------------------------------------------------------------------------------ tail


def _tail_command(args: argparse.Namespace) -> int:
    import trio

    config = _config(args)
    try:
        return trio.run(follow, config.storage.nats_url, args.subject, sys.stdout, args.json, args.count)
    except KeyboardInterrupt:
        return 0


async def follow(
    url: str,
    subject: str,
    out: TextIO,
    as_json: bool = False,
    count: int = 0,
    *,
    connect_timeout: float = 5.0,
    task_status: trio.TaskStatus[None] | None = None,
) -> int:
    """Print events on ``subject`` until cancelled, or ``count`` of them.

    Under ``nursery.start`` it reports started once subscribed.
    """
    import trio

    from nexus.net.nats.client import NatsClient

    client = NatsClient(url, name="nexus-traffic-tail")
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        if not await client.wait_ready(connect_timeout):
            print(f"cannot reach NATS: {client.state.detail}", file=sys.stderr)
            await client.aclose()
            return 1
        seen = 0
        with client.subscribe(subject, max_pending=65536) as sub:
            await client.flush()
            if task_status is not None:
                task_status.started()
            async for msg in sub:
                out.write((_json_line(msg.data) if as_json else format_event(msg.subject, msg.data)) + "\n")
                out.flush()
                seen += 1
                if count and seen >= count:
                    break
        await client.aclose()
    return 0


def _json_line(data: bytes) -> str:
    cut = data.find(b"\n")
    return (data if cut < 0 else data[:cut]).decode("utf-8", "replace")


def format_event(subject: str, data: bytes) -> str:
    """One line for ``tail``: time, source, outcome, status, request, model, tokens, cost, duration, id."""
    if subject.rsplit(".", 1)[-1] not in TRAFFIC_KINDS:
        return f"{subject} {len(data)} bytes"
    try:
        ev = decode(data)
    except DecodeError as exc:
        return f"{subject} undecodable event ({exc})"
    when = ev.ts.strftime("%H:%M:%S.%f")[:-3]
    request = " ".join(x for x in (ev.method, f"{ev.host or ''}{ev.path or ''}") if x) or "-"
    model = f"{ev.provider}/{ev.model}" if ev.provider else (ev.model or ev.requested_model or "-")
    total = f"{ev.total_us / 1000:.1f}ms" if ev.total_us is not None else "-"
    return (f"{when} {ev.source:<7} {ev.outcome:<13} {ev.status_code or '-':>3} {request} {model}"
            f" in={ev.input_tokens} out={ev.output_tokens} ${ev.cost_micro_usd / 1e6:.6f} {total}"
            f" {ev.event_id}")


# ------------------------------------------------------------------------------------------ show


def _show_command(args: argparse.Namespace) -> int:
    config = _config(args)
    return show(config.storage.database_url, config.audit.spill_dir, args.event_id, sys.stdout,
                as_json=args.json, max_body=args.max_body)


def show(dsn: str, spill_dir: str, event_id: str, out: TextIO, *, as_json: bool = False,
         max_body: int = DEFAULT_MAX_BODY) -> int:
    """Print one stored event; returns the exit code."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        eid = uuid.UUID(event_id)
    except ValueError:
        print(f"not an event id: {event_id!r}", file=sys.stderr)
        return 2
    if (eid.int >> 76) & 0xF != 7:
        print(f"{event_id} is not a UUIDv7, so it is no event id", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(dsn, row_factory=dict_row, connect_timeout=10) as conn:
            where = " WHERE event_id = %s AND ts = uuid7_time(%s)"
            row = conn.execute("SELECT * FROM traffic_event" + where, (eid, eid)).fetchone()
            payloads = conn.execute(
                "SELECT kind, content_type, size_bytes, truncated, redacted, body, spill_backend, spill_key,"
                " spill_size, spill_sha256 FROM traffic_event_payload" + where + " ORDER BY kind", (eid, eid),
            ).fetchall()
    except psycopg.Error as exc:
        print(f"cannot read the event: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    if row is None:
        print(f"no stored event {eid}", file=sys.stderr)
        return 1
    store = FsSpillStore(spill_dir)
    bodies = [_body(store, p) for p in payloads]
    if as_json:
        out.write(orjson.dumps(_as_json(row, payloads, bodies), default=str).decode() + "\n")
    else:
        _print_event(out, row, payloads, bodies, max_body)
    return 0


def _body(store: FsSpillStore, payload: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
    """The payload's bytes (inline or read back from the spill store), or an error text."""
    if payload["body"] is not None:
        return bytes(payload["body"]), None
    ref = SpillRef(backend=payload["spill_backend"], key=payload["spill_key"], size=payload["spill_size"],
                   sha256=bytes(payload["spill_sha256"]))
    if ref.backend != store.backend:
        return None, f"stored in backend {ref.backend}, which this command cannot read"
    try:
        return store.get(ref), None
    except SpillError as exc:
        return None, str(exc)


def _as_json(row: Mapping[str, Any], payloads: list[dict[str, Any]],
             bodies: list[tuple[bytes | None, str | None]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    items = []
    for payload, (body, error) in zip(payloads, bodies, strict=True):
        item = {k: v for k, v in payload.items() if k not in ("body", "spill_sha256")}
        if payload["spill_sha256"] is not None:
            item["spill_sha256"] = bytes(payload["spill_sha256"]).hex()
        if body is not None:
            try:
                item["body"] = body.decode()
            except UnicodeDecodeError:
                item["body"] = base64.b64encode(body).decode()
                item["body_encoding"] = "base64"
        if error is not None:
            item["error"] = error
        items.append(item)
    out["payloads"] = items
    return out


_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("identity", ("source", "thing_id", "org_id", "project_id", "user_id", "virtual_key_id", "credential_id",
                  "provider_id", "routing_rule_id", "request_id", "trace_id", "source_ip", "user_agent",
                  "process_name")),
    ("request", ("method", "host", "path", "endpoint_type", "ingress_format", "stream", "status_code",
                 "error_code", "error_message")),
    ("routing", ("requested_model", "provider", "model", "attempts", "ab_arm", "strategy_trace")),
    ("timing (µs)", ("total_us", "upstream_ttfb_us", "upstream_total_us", "request_hooks_us", "response_hooks_us",
                     "cache_lookup_us", "overhead_us")),
    ("usage", ("input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens", "cache_creation_tokens",
               "cost_micro_usd", "cache_savings_micro_usd", "cache_status", "cache_similarity")),
    ("compliance", ("request_decision", "response_decision", "decision_reason", "rule_ids", "tags",
                    "passthrough_flags", "kill_switch", "attestation_verified", "attested_agent_id",
                    "bump_status")),
)
_DEFAULTS: Mapping[str, Any] = {"stream": False, "kill_switch": False, "attempts": 0, "rule_ids": [], "tags": [],
                                "passthrough_flags": [], "reasoning_tokens": 0, "cached_input_tokens": 0,
                                "cache_creation_tokens": 0, "cache_savings_micro_usd": 0}


def _value(value: Any) -> str:
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode()
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value)


def _print_event(out: TextIO, row: Mapping[str, Any], payloads: list[dict[str, Any]],
                 bodies: list[tuple[bytes | None, str | None]], max_body: int) -> None:
    out.write(f"event {row['event_id']}  at {_value(row['ts'])}  (stored {_value(row['received_at'])})\n")
    for title, names in _SECTIONS:
        shown = [(n, row[n]) for n in names if row[n] is not None and _DEFAULTS.get(n, object()) != row[n]]
        if shown:
            out.write(f"{title}:\n")
            for name, value in shown:
                out.write(f"  {name:<24} {_value(value)}\n")
    if row["attributes"]:
        out.write(f"attributes: {_value(row['attributes'])}\n")
    for attempt_no, attempt in enumerate(row["attempt_log"] or [], 1):
        if attempt_no == 1:
            out.write("attempts:\n")
        out.write(f"  {attempt_no}. {_value(attempt)}\n")
    for stage in ("request", "response"):
        hooks = row[f"{stage}_hooks"] or []
        if hooks:
            out.write(f"{stage} hooks:\n")
        for hook in hooks:
            rules = ",".join(hook.get("rule_ids") or [])
            extra = " ".join(f"{k}={_value(v)}" for k, v in hook.items()
                             if k not in ("hook", "decision", "duration_us", "rule_ids"))
            out.write(f"  {hook.get('hook', '?'):<24} {hook.get('decision') or '-':<8}"
                      f" {hook.get('duration_us', 0):>8} µs  {rules} {extra}".rstrip() + "\n")
    for payload, (body, error) in zip(payloads, bodies, strict=True):
        where = ("inline" if payload["body"] is not None
                 else f"spilled ({payload['spill_backend']}:{payload['spill_key']})")
        flags = "".join(f" {f}" for f in ("truncated", "redacted") if payload[f])
        out.write(f"payload {payload['kind']}: {payload['size_bytes']} bytes {payload['content_type'] or ''}"
                  f" {where}{flags}\n")
        if error is not None:
            out.write(f"  (body unavailable: {error})\n")
        elif body is not None and max_body != 0:
            shown_body = body if max_body < 0 else body[:max_body]
            out.write(shown_body.decode("utf-8", "replace"))
            if len(shown_body) < len(body):
                out.write(f"\n  … {len(body) - len(shown_body)} more bytes")
            out.write("\n")

