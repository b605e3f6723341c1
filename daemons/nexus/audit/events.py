"""The traffic event: the record every pipe fills in, its wire encoding, and its COPY rows.

One :class:`TrafficEvent` per request through any pipe (gateway, proxy, agent).
Its ``event_id`` is a UUIDv7 minted by the emitting daemon (:func:`new_event_id`)
when the request starts; the row's ``ts`` is the millisecond inside it
(:func:`event_time`), which is what lets PostgreSQL de-duplicate redeliveries
(db/migrations/0005_traffic.sql).

Wire format (one JetStream message): the event as compact JSON (orjson, via a
cattrs converter that leaves out every field still at its default), then, when
the event carries inline bodies, one ``\\n`` and the bodies' raw bytes back to
back, each payload entry giving its ``body_len``.  orjson never writes a raw
newline, so the first ``\\n`` ends the JSON; bodies travel without base64, so
three 256 KiB bodies still fit NATS's default 1 MiB message.  Unknown keys are
ignored on decoding: a writer must accept events from newer agents.

The writer's hot path does not build records: :func:`stage_rows` maps the JSON
straight to binary COPY rows (``STAGE_EVENT_COLUMNS`` for the event staging
table, ``PAYLOAD_COLUMNS`` for ``traffic_event_payload``), checking each value's
JSON type, and leaves range and CHECK constraints to PostgreSQL.

Error handling: :func:`encode` raises ``ValueError`` for an event that breaks a
closed label set or a range (a bug in the emitting code); :func:`decode` and
:func:`stage_rows` raise :class:`DecodeError` for bytes that are not an event.
Pure: no I/O, no Trio.
"""

from __future__ import annotations

import operator
import random
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_unstructure_fn, override

__all__ = [
    "BLOCK",
    "CACHE_STATUSES",
    "CLIENT_CLOSED",
    "DECISIONS",
    "INGRESS_FORMATS",
    "KIND_ADMIN_AUDIT",
    "KIND_AGENT",
    "KIND_COMPLIANCE",
    "KIND_TRAFFIC",
    "PAYLOAD_COLUMNS",
    "PAYLOAD_KINDS",
    "PAYLOAD_TYPES",
    "SOURCES",
    "STAGE_EVENT_COLUMNS",
    "STAGE_EVENT_TYPES",
    "TRAFFIC_KINDS",
    "Attempt",
    "DecodeError",
    "HookResult",
    "Payload",
    "PayloadDigest",
    "SpillRef",
    "Staged",
    "TrafficEvent",
    "decode",
    "encode",
    "event_time",
    "new_event_id",
    "peek_event_id",
    "stage_rows",
    "validate",
]

# The last token of an event's subject (``nexus.event.<kind>``, see nexus.audit.stream).
KIND_TRAFFIC: Final = "ai-traffic"
KIND_COMPLIANCE: Final = "compliance"
KIND_AGENT: Final = "agent"  # traffic events of agents, republished by the hub
KIND_ADMIN_AUDIT: Final = "admin-audit"
TRAFFIC_KINDS: Final = frozenset({KIND_TRAFFIC, KIND_AGENT})

Source = Literal["gateway", "proxy", "agent"]
PayloadKind = Literal["request", "response", "response_stream"]
SOURCES: Final = frozenset({"gateway", "proxy", "agent"})
PAYLOAD_KINDS: Final = frozenset({"request", "response", "response_stream"})
CACHE_STATUSES: Final = frozenset({"hit", "miss", "bypass", "semantic"})
INGRESS_FORMATS: Final = frozenset({"openai", "anthropic", "gemini", "responses", "raw"})
BLOCK: Final = "block"
DECISIONS: Final = frozenset({"approve", "redact", BLOCK})
# The client went away before the answer was complete: error_code with status 499.
CLIENT_CLOSED: Final = "client_closed"
CLIENT_CLOSED_STATUS: Final = 499

_FORMAT_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DecodeError(ValueError):
    """The bytes are not a traffic event (bad framing, JSON, or a value of the wrong type)."""


# ------------------------------------------------------------------------------------------ ids

_last_id = 0
_RAND_B = (1 << 62) - 1


def new_event_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits.

    Strictly increasing within the process (the random part counts up when the
    clock has not moved or went back), so ids minted together sort in order.
    """
    global _last_id
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & _RAND_B)
    if value <= _last_id:
        # Count up in the 74 random bits (12 of rand_a, 62 of rand_b) around the version and
        # variant bits; a carry out of them moves the millisecond, as RFC 9562 method 1 allows.
        last = _last_id
        counter = (((last >> 64) & 0xFFF) << 62 | (last & _RAND_B)) + 1
        last_ms = (last >> 80) + (counter >> 74)
        counter &= (1 << 74) - 1
        value = (last_ms << 80) | (0x7 << 76) | ((counter >> 62) << 64) | (0b10 << 62) | (counter & _RAND_B)
    _last_id = value
    return uuid.UUID(int=value)


def event_time(event_id: uuid.UUID) -> datetime:
    """The ``ts`` of an event's rows: the millisecond inside its UUIDv7 (SQL ``uuid7_time``)."""
    if (event_id.int >> 76) & 0xF != 7:
        raise ValueError(f"{event_id} is not a UUIDv7")
    return _EPOCH + timedelta(milliseconds=event_id.int >> 80)


# -------------------------------------------------------------------------------------- records


@attrs.frozen(slots=True)
class SpillRef:
    """Where a body too large to keep inline lives: ``{backend, key, size, sha256}``."""

    backend: Literal["fs", "s3"]
    key: str
    size: int
    sha256: bytes = attrs.field(repr=lambda b: b.hex())


@attrs.define(slots=True)
class Payload:
    """One captured body: inline (``body``) or in the spill store (``spill``), never both.

    ``size_bytes`` is the size seen on the wire; it exceeds the stored size when
    ``truncated``.  ``redacted``: what is stored is the text after redaction.
    A body larger than the emitter's ``inline_max`` is moved to the spill store
    by the emitter before the event is published.
    """

    kind: PayloadKind
    size_bytes: int
    body: bytes | None = attrs.field(default=None, repr=lambda b: "None" if b is None else f"<{len(b)} bytes>")
    spill: SpillRef | None = None
    content_type: str | None = None
    truncated: bool = False
    redacted: bool = False


@attrs.frozen(slots=True)
class PayloadDigest:
    """What capture level ``metadata`` keeps of a body: its size and SHA-256, no content."""

    kind: PayloadKind
    size_bytes: int
    sha256: str
    content_type: str | None = None


@attrs.define(slots=True, kw_only=True)
class Attempt:
    """One upstream try of the request (retries and fallbacks each add one)."""

    provider: str
    model: str
    outcome: str  # ok | error | timeout | rate_limited | circuit_open | ...
    status_code: int | None = None
    error_code: str | None = None
    credential_id: str | None = None
    duration_us: int | None = None


@attrs.define(slots=True, kw_only=True)
class HookResult:
    """What one compliance hook decided at one stage (the per-hook trace)."""

    hook: str
    decision: str | None = None
    reason: str | None = None
    rule_ids: list[str] = attrs.Factory(list)
    duration_us: int = 0
    error: str | None = None  # the hook failed; its fail mode decided
    detail: dict[str, Any] = attrs.Factory(dict)


@attrs.define(slots=True, kw_only=True)
class TrafficEvent:
    """Everything recorded about one request; field names are the ``traffic_event`` columns.

    Ids of other rows (org, key, credential...) are UUID text.  Durations are
    microseconds, money micro-USD.  Token counts follow the column comments of
    0005_traffic.sql (``input_tokens`` includes cache reads and writes).
    ``attempts`` may stay 0 when ``attempt_log`` is filled: the row then counts
    the log.  The row's ``ts`` is :func:`event_time` of ``event_id``.
    """

    # identity
    event_id: uuid.UUID = attrs.Factory(new_event_id)
    source: Source
    thing_id: str | None = None
    org_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    virtual_key_id: str | None = None
    credential_id: str | None = None
    provider_id: str | None = None
    routing_rule_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    process_name: str | None = None
    # request
    method: str | None = None
    host: str | None = None
    path: str | None = None
    endpoint_type: str | None = None
    ingress_format: str | None = None
    stream: bool = False
    # status
    status_code: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    # routing
    requested_model: str | None = None
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    attempt_log: list[Attempt] = attrs.Factory(list)
    strategy_trace: Any = None  # JSON: how the routing strategy tree chose
    ab_arm: str | None = None
    # timing (µs)
    total_us: int | None = None
    upstream_ttfb_us: int | None = None
    upstream_total_us: int | None = None
    request_hooks_us: int | None = None
    response_hooks_us: int | None = None
    cache_lookup_us: int | None = None
    overhead_us: int | None = None
    # tokens and cost
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_micro_usd: int = 0
    cache_savings_micro_usd: int = 0
    # cache
    cache_status: str | None = None
    cache_similarity: float | None = None
    # compliance
    request_decision: str | None = None
    response_decision: str | None = None
    decision_reason: str | None = None
    rule_ids: list[str] = attrs.Factory(list)
    request_hooks: list[HookResult] = attrs.Factory(list)
    response_hooks: list[HookResult] = attrs.Factory(list)
    tags: list[str] = attrs.Factory(list)
    passthrough_flags: list[str] = attrs.Factory(list)
    kill_switch: bool = False
    attestation_verified: bool | None = None
    attested_agent_id: str | None = None
    bump_status: str | None = None
    attributes: dict[str, Any] = attrs.Factory(dict)
    # captured bodies
    payloads: list[Payload] = attrs.Factory(list)
    payload_digests: list[PayloadDigest] = attrs.Factory(list)

    @property
    def ts(self) -> datetime:
        return event_time(self.event_id)

    @property
    def kind(self) -> str:
        """The subject's last token: agents' events arrive through the hub on a subject of their own."""
        return KIND_AGENT if self.source == "agent" else KIND_TRAFFIC

    @property
    def client_closed(self) -> bool:
        return self.error_code == CLIENT_CLOSED

    def mark_client_closed(self) -> None:
        """The client went away before the answer was complete."""
        self.error_code = CLIENT_CLOSED
        self.status_code = CLIENT_CLOSED_STATUS

    @property
    def blocked(self) -> bool:
        return self.request_decision == BLOCK or self.response_decision == BLOCK

    @property
    def outcome(self) -> Literal["ok", "blocked", "client_closed", "error"]:
        """The one-word status the rollups and ``traffic tail`` use."""
        if self.blocked:
            return "blocked"
        if self.error_code == CLIENT_CLOSED:
            return "client_closed"
        if self.error_code is not None:
            return "error"
        return "ok"

    def attach(self, captured: Payload | PayloadDigest | None) -> None:
        """Add what :mod:`nexus.audit.capture` kept of a body (nothing for capture level ``off``)."""
        if isinstance(captured, Payload):
            self.payloads.append(captured)
        elif captured is not None:
            self.payload_digests.append(captured)

    def wire_size(self) -> int:
        """Bytes of inline bodies: the bulk of the encoded size, for quick estimates."""
        return sum(len(p.body) for p in self.payloads if p.body is not None)


# ------------------------------------------------------------------------------------ validation

_INT2 = (-(2**15), 2**15 - 1)
_INT4 = (-(2**31), 2**31 - 1)
_INT8 = (-(2**63), 2**63 - 1)


def validate(event: TrafficEvent) -> None:
    """Check the closed label sets and ranges the database would refuse; raise ``ValueError``.

    The writer stores whatever a well-typed event says (it must not refuse an
    event from a newer agent), so labels are checked here, where they are made.
    """
    problems: list[str] = []
    if (event.event_id.int >> 76) & 0xF != 7:
        problems.append(f"event_id {event.event_id} is not a UUIDv7")
    if event.source not in SOURCES:
        problems.append(f"source {event.source!r} not in {sorted(SOURCES)}")
    if event.cache_status is not None and event.cache_status not in CACHE_STATUSES:
        problems.append(f"cache_status {event.cache_status!r} not in {sorted(CACHE_STATUSES)}")
    if event.ingress_format is not None and event.ingress_format not in INGRESS_FORMATS:
        problems.append(f"ingress_format {event.ingress_format!r} not in {sorted(INGRESS_FORMATS)}")
    for name in ("request_decision", "response_decision"):
        decision = getattr(event, name)
        if decision is not None and decision not in DECISIONS:
            problems.append(f"{name} {decision!r} not in {sorted(DECISIONS)}")
    if event.status_code is not None and not 100 <= event.status_code <= 599:
        problems.append(f"status_code {event.status_code} outside 100..599")
    if event.cache_similarity is not None and not -1.0 <= event.cache_similarity <= 1.0:
        problems.append(f"cache_similarity {event.cache_similarity} outside -1..1")
    for value, (name, high) in zip(_range_values(event), _RANGES, strict=True):
        if value is not None and not 0 <= value <= high:
            problems.append(f"{name} {value} outside 0..{high}")
    kinds: set[str] = set()
    for p in event.payloads:
        if p.kind not in PAYLOAD_KINDS or p.kind in kinds:
            problems.append(f"payload kind {p.kind!r} unknown or repeated")
        kinds.add(p.kind)
        if (p.body is None) == (p.spill is None):
            problems.append(f"payload {p.kind}: exactly one of body and spill must be set")
        if p.size_bytes < 0:
            problems.append(f"payload {p.kind}: negative size")
    if problems:
        raise ValueError("invalid traffic event: " + "; ".join(problems))


# Counters and durations are never negative; the upper bound is the column's type.
_RANGES: tuple[tuple[str, int], ...] = (
    ("attempts", _INT2[1]),
    *((name, _INT8[1]) for name in ("total_us", "upstream_ttfb_us", "upstream_total_us")),
    *((name, _INT4[1]) for name in ("request_hooks_us", "response_hooks_us", "cache_lookup_us", "overhead_us")),
    *((name, _INT4[1]) for name in (
        "input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens", "cache_creation_tokens")),
    ("cost_micro_usd", _INT8[1]),
    ("cache_savings_micro_usd", _INT8[1]),
)
# One C call fetches them all: validate() runs on every emit.
_range_values: Callable[[TrafficEvent], tuple[Any, ...]] = operator.attrgetter(*(name for name, _ in _RANGES))


# -------------------------------------------------------------------------------- wire encoding


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(omit_if_default=True)
    # UUIDs pass through unstructured: orjson writes them as text.
    conv.register_structure_hook(uuid.UUID, lambda v, _t: uuid.UUID(v))
    conv.register_structure_hook(bytes, lambda v, _t: bytes.fromhex(v))
    conv.register_unstructure_hook(bytes, bytes.hex)
    conv.register_unstructure_hook(SpillRef, _unstructure_spill)
    conv.register_unstructure_hook(Payload, _unstructure_payload)
    # event_id has a factory default: omit_if_default would mint an id just to compare with it.
    conv.register_unstructure_hook(
        TrafficEvent, make_dict_unstructure_fn(
            TrafficEvent, conv, _cattrs_omit_if_default=True, event_id=override(omit_if_default=False)
        )
    )
    return conv


def _unstructure_spill(ref: SpillRef) -> dict[str, Any]:
    return {"backend": ref.backend, "key": ref.key, "size": ref.size, "sha256": ref.sha256.hex()}


def _unstructure_payload(p: Payload) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": p.kind, "size_bytes": p.size_bytes}
    if p.body is not None:
        out["body_len"] = len(p.body)
    if p.spill is not None:
        out["spill"] = _unstructure_spill(p.spill)
    if p.content_type is not None:
        out["content_type"] = p.content_type
    if p.truncated:
        out["truncated"] = True
    if p.redacted:
        out["redacted"] = True
    return out


_CONVERTER = _converter()
_unstructure_event: Callable[[TrafficEvent], dict[str, Any]] = _CONVERTER.get_unstructure_hook(TrafficEvent)


def encode(event: TrafficEvent) -> bytes:
    """The message body for JetStream (see the module docstring); validates first."""
    validate(event)
    head = _unstructure_event(event)
    head["v"] = _FORMAT_VERSION
    data = orjson.dumps(head)
    bodies = [p.body for p in event.payloads if p.body is not None]
    if not bodies:
        return data
    # One join: the bodies are copied once, on the request's hot path.
    return b"".join((data, b"\n", *bodies))


def _split(data: bytes) -> tuple[dict[str, Any], memoryview]:
    cut = data.find(b"\n")
    head_bytes, tail = (data, b"") if cut < 0 else (data[:cut], data[cut + 1 :])
    try:
        head = orjson.loads(head_bytes)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(head, dict):
        raise DecodeError("the event is not a JSON object")
    return head, memoryview(tail)


def _payload_entries(head: dict[str, Any], tail: memoryview) -> list[tuple[dict[str, Any], bytes | None]]:
    """Each payload entry with its body sliced off the trailer, checking the lengths add up."""
    entries = head.get("payloads") or []
    if not isinstance(entries, list):
        raise DecodeError("payloads is not a list")
    out: list[tuple[dict[str, Any], bytes | None]] = []
    offset = 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise DecodeError("a payload entry is not an object")
        length = entry.get("body_len")
        body = None
        if length is not None:
            if type(length) is not int or length < 0 or offset + length > len(tail):
                raise DecodeError("payload body_len does not match the bytes after the JSON")
            body = bytes(tail[offset : offset + length])
            offset += length
        out.append((entry, body))
    if offset != len(tail):
        raise DecodeError(f"{len(tail) - offset} bytes after the last payload body")
    return out


def decode(data: bytes) -> TrafficEvent:
    """Rebuild the record from a message (``traffic tail``, tests); raise :class:`DecodeError`."""
    head, tail = _split(data)
    entries = _payload_entries(head, tail)
    if "event_id" not in head:
        # Structuring would mint a fresh id from the field's default.
        raise DecodeError("the event has no event_id")
    # Payload entries describe the trailer; they are rebuilt below, not structured.
    head.pop("payloads", None)
    try:
        event = _CONVERTER.structure(head, TrafficEvent)
        for entry, body in entries:
            spill = entry.get("spill")
            event.payloads.append(Payload(
                kind=entry["kind"],
                size_bytes=entry["size_bytes"],
                body=body,
                spill=None if spill is None else _CONVERTER.structure(spill, SpillRef),
                content_type=entry.get("content_type"),
                truncated=bool(entry.get("truncated", False)),
                redacted=bool(entry.get("redacted", False)),
            ))
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"not a traffic event: {exc}") from None
    return event


def peek_event_id(data: bytes) -> str | None:
    """The event id of a message that may not decode, for the dead-letter row; None if unreadable."""
    try:
        head, _tail = _split(data)
    except DecodeError:
        return None
    value = head.get("event_id")
    return value if isinstance(value, str) and _UUID.fullmatch(value) else None


# ------------------------------------------------------------------------------------ COPY rows

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Value kinds of the staging columns.  The staging tables keep uuid, inet and jsonb as text:
# PostgreSQL casts them in the INSERT ... SELECT, far cheaper than building Python objects.
_TEXT, _BOOL, _INT2K, _INT4K, _INT8K, _FLOAT, _TEXTS, _JSON, _TS = range(9)
_COPY_TYPE = {_TEXT: "text", _BOOL: "bool", _INT2K: "int2", _INT4K: "int4", _INT8K: "int8",
              _FLOAT: "float4", _TEXTS: "text[]", _JSON: "text", _TS: "timestamptz"}
_BOUNDS = {_INT2K: _INT2, _INT4K: _INT4, _INT8K: _INT8}

# (column, kind, value when absent, SQL type of the target column)
_EVENT_SPEC: tuple[tuple[str, int, Any, str], ...] = (
    ("event_id", _TEXT, None, "uuid"),
    # Not read from the JSON: computed from event_id (cheaper here than uuid7_time() per row).
    ("ts", _TS, None, "timestamptz"),
    ("source", _TEXT, None, "text"),
    *((name, _TEXT, None, "uuid") for name in (
        "thing_id", "org_id", "project_id", "user_id", "virtual_key_id", "credential_id", "provider_id",
        "routing_rule_id")),
    ("request_id", _TEXT, None, "text"),
    ("trace_id", _TEXT, None, "text"),
    ("source_ip", _TEXT, None, "inet"),
    *((name, _TEXT, None, "text") for name in (
        "user_agent", "process_name", "method", "host", "path", "endpoint_type", "ingress_format")),
    ("stream", _BOOL, False, "boolean"),
    ("status_code", _INT2K, None, "smallint"),
    ("error_code", _TEXT, None, "text"),
    ("error_message", _TEXT, None, "text"),
    ("requested_model", _TEXT, None, "text"),
    ("provider", _TEXT, None, "text"),
    ("model", _TEXT, None, "text"),
    ("attempts", _INT2K, 0, "smallint"),
    ("attempt_log", _JSON, None, "jsonb"),
    ("strategy_trace", _JSON, None, "jsonb"),
    ("ab_arm", _TEXT, None, "text"),
    *((name, _INT8K, None, "bigint") for name in ("total_us", "upstream_ttfb_us", "upstream_total_us")),
    *((name, _INT4K, None, "integer") for name in (
        "request_hooks_us", "response_hooks_us", "cache_lookup_us", "overhead_us")),
    *((name, _INT4K, 0, "integer") for name in (
        "input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens", "cache_creation_tokens")),
    ("cost_micro_usd", _INT8K, 0, "bigint"),
    ("cache_savings_micro_usd", _INT8K, 0, "bigint"),
    ("cache_status", _TEXT, None, "text"),
    ("cache_similarity", _FLOAT, None, "real"),
    ("request_decision", _TEXT, None, "text"),
    ("response_decision", _TEXT, None, "text"),
    ("decision_reason", _TEXT, None, "text"),
    ("rule_ids", _TEXTS, [], "text[]"),
    ("request_hooks", _JSON, None, "jsonb"),
    ("response_hooks", _JSON, None, "jsonb"),
    ("tags", _TEXTS, [], "text[]"),
    ("passthrough_flags", _TEXTS, [], "text[]"),
    ("kill_switch", _BOOL, False, "boolean"),
    ("attestation_verified", _BOOL, None, "boolean"),
    ("attested_agent_id", _TEXT, None, "uuid"),
    ("bump_status", _TEXT, None, "text"),
    ("attributes", _JSON, "{}", "jsonb"),
)

STAGE_EVENT_COLUMNS: Final[tuple[str, ...]] = tuple(spec[0] for spec in _EVENT_SPEC)
STAGE_EVENT_TYPES: Final[tuple[str, ...]] = tuple(_COPY_TYPE[spec[1]] for spec in _EVENT_SPEC)
# The SQL type each staged event column becomes in traffic_event (the writer casts to it).
EVENT_SQL_TYPES: Final[dict[str, str]] = {spec[0]: spec[3] for spec in _EVENT_SPEC}

# Payload rows go straight into traffic_event_payload (the writer copies only those of events it
# inserted), so their key columns carry the real types.
PAYLOAD_COLUMNS: Final = (
    "event_id", "ts", "kind", "content_type", "size_bytes", "truncated", "redacted", "body",
    "spill_backend", "spill_key", "spill_size", "spill_sha256",
)
PAYLOAD_TYPES: Final = (
    "uuid", "timestamptz", "text", "text", "int8", "bool", "bool", "bytea", "text", "text", "int8", "bytea",
)


class Staged:
    """One event's COPY rows: ``event`` in ``STAGE_EVENT_COLUMNS`` order, then its payloads.

    A plain slotted class: the writer makes tens of thousands per second.
    """

    __slots__ = ("event", "event_id", "ms", "payloads", "ts")

    def __init__(
        self, event_id: str, ms: int, ts: datetime, event: list[Any], payloads: list[tuple[Any, ...]],
    ) -> None:
        self.event_id = event_id
        self.ms = ms  # the Unix milliseconds of ts
        self.ts = ts
        self.event = event
        self.payloads = payloads  # PAYLOAD_COLUMNS without event_id and ts

    def payload_rows(self) -> list[tuple[Any, ...]]:
        """The payload rows in ``PAYLOAD_COLUMNS`` order."""
        if not self.payloads:
            return []
        key = (uuid.UUID(self.event_id), self.ts)
        return [(*key, *row) for row in self.payloads]


def _bad(column: str, value: Any) -> DecodeError:
    return DecodeError(f"{column}: unexpected value {str(value)[:80]!r}")


def _column(column: str, kind: int, value: Any) -> Any:
    t = type(value)
    if kind == _TEXT:
        if t is str:
            return value
    elif kind == _JSON:
        return orjson.dumps(value).decode()
    elif kind in _BOUNDS:
        low, high = _BOUNDS[kind]
        if t is int and low <= value <= high:
            return value
    elif kind == _BOOL:
        if t is bool:
            return value
    elif kind == _FLOAT:
        if t is float or t is int:
            return float(value)
    elif kind == _TEXTS and t is list and all(type(item) is str for item in value):
        return value
    raise _bad(column, value)


def stage_rows(data: bytes) -> Staged:
    """Map a message to its staging rows without building records; raise :class:`DecodeError`.

    Absent keys take the column default; present ones must have the column's
    JSON type.  ``attributes`` gains ``payload_digests`` when the event has
    them, and ``attempts`` counts ``attempt_log`` when it was left at 0.
    """
    head, tail = _split(data)
    event_id = head.get("event_id")
    if type(event_id) is not str or not _UUID.fullmatch(event_id):
        raise _bad("event_id", event_id)
    get = head.get
    # The JSON leaves defaults out, so walking its keys visits far fewer than all columns.
    row = list(_EVENT_DEFAULTS)
    for key, value in head.items():
        slot = _EVENT_SLOTS.get(key)
        if slot is not None and value is not None:
            index, kind = slot
            # Text is most of what an event says: checked here without a call.
            row[index] = value if kind == _TEXT and type(value) is str else _column(key, kind, value)
    digests = get("payload_digests")
    if digests:
        attributes = get("attributes") or {}
        if type(attributes) is not dict:
            raise _bad("attributes", attributes)
        row[_ATTRIBUTES] = orjson.dumps({**attributes, "payload_digests": digests}).decode()
    if not row[_ATTEMPTS]:
        log = get("attempt_log")
        if type(log) is list:
            row[_ATTEMPTS] = len(log)
    payloads: list[tuple[Any, ...]] = []
    for entry, body in _payload_entries(head, tail):
        spill = entry.get("spill")
        payload_kind = entry.get("kind")
        size_bytes = entry.get("size_bytes")
        if type(payload_kind) is not str or type(size_bytes) is not int:
            raise _bad("payload", entry)
        if spill is None:
            ref: tuple[Any, ...] = (None, None, None, None)
        else:
            try:
                ref = (spill["backend"], spill["key"], spill["size"], bytes.fromhex(spill["sha256"]))
            except (KeyError, TypeError, ValueError):
                raise _bad("payload spill", spill) from None
            if type(ref[0]) is not str or type(ref[1]) is not str or type(ref[2]) is not int:
                raise _bad("payload spill", spill)
        content_type = entry.get("content_type")
        if content_type is not None and type(content_type) is not str:
            raise _bad("payload content_type", content_type)
        flags = (entry.get("truncated") is True, entry.get("redacted") is True)
        payloads.append((payload_kind, content_type, size_bytes, *flags, body, *ref))
    ms = int(event_id[:8] + event_id[9:13], 16)
    ts = _EPOCH + timedelta(milliseconds=ms)
    row[_TS_INDEX] = ts
    return Staged(event_id, ms, ts, row, payloads)


_EVENT_DEFAULTS: Final = tuple(spec[2] for spec in _EVENT_SPEC)
_EVENT_SLOTS: Final = {spec[0]: (index, spec[1]) for index, spec in enumerate(_EVENT_SPEC) if spec[1] != _TS}
_TS_INDEX = STAGE_EVENT_COLUMNS.index("ts")
_ATTRIBUTES = STAGE_EVENT_COLUMNS.index("attributes")
_ATTEMPTS = STAGE_EVENT_COLUMNS.index("attempts")
