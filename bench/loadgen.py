"""HTTP load generator for the gateway benchmarks: open loop at a fixed arrival rate, or
closed loop for the ceiling.  Not a test.

Open loop (the default).  Request ``i`` is due at ``start + i / rate`` whatever happened
to the requests before it, so a slow server shows up as latency instead of as a lower
send rate.  ``connections`` worker tasks share that schedule: a free worker claims the
next slot, sleeps until it is due and sends; when every worker is busy the slot waits for
one, as a request waits for a connection in any pooled client.  Latency is measured from
the *scheduled* send time (so queueing in the server, or in our capped pool behind a slow
server, is counted: no coordinated omission); ``service_ms`` is measured from the actual
send and ``send_lag_ms`` is the difference.  Trio's timers wake up to 1 ms late (epoll
takes milliseconds), so ``send_lag_ms`` sits around 0.5 ms on an idle loop: that part is
the same for every target and cancels out of an overhead (target minus direct).  A request
still waiting for a worker when its deadline (scheduled time + ``timeout``) has passed is
not sent and counts as ``timeout_queued``.

Closed loop (``closed``).  Each of ``connections`` workers sends back to back for the
whole run: the achieved rate is the ceiling of the target, the latencies are those of a
saturated server (and suffer from coordinated omission by construction; use them only
beside the rate).

Streaming (``stream``).  The body is read as it arrives; ``ttft_ms`` is the time to the
first server-sent event (the first body chunk when the answer is not
``text/event-stream``), ``latency_ms`` the time to the end of the body.

Only requests due (or, closed loop, sent) after ``warmup`` and before ``warmup +
duration`` are measured; ``achieved_rate`` counts successful completions inside that
window.  With ``cpu_pid`` the CPU seconds (user + system, every thread) of that process
over the window are read from ``/proc`` and divided by the completions: CPU per request.
Each core's busy and stolen share over the window (``/proc/stat``) is reported too, so a
figure taken while something else loaded the box can be told apart.

Library use: ``await run_load(LoadSpec(...))`` returns a ``LoadResult`` (attrs; see
``as_json``).  Command line, printing one JSON object on stdout::

    .venv/bin/python bench/loadgen.py http://127.0.0.1:3062/v1/chat/completions \\
        --rate 300 --duration 10 --warmup 2 --body-kb 1 --model gpt-4o-mini --core 1
    .venv/bin/python bench/loadgen.py URL --closed --connections 32 --duration 10 --cpu-pid PID

Resource handling: ``run_load`` owns its ``HttpClient`` and closes it; a request cut off
by its deadline discards its connection.  Error handling: every failure of a request is
counted in ``errors`` by kind (``http_<status>``, ``timeout``, ``timeout_queued``,
``connect``, ``protocol``, ``pool_timeout``, ``bad_sse``, or the exception class); only a bad spec
(``ValueError``) and cancellation propagate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import trio

from nexus.net.http1.client import (
    ConnectError,
    ConnectTimeout,
    HttpClient,
    HttpClientError,
    PoolTimeout,
    RemoteProtocolError,
)
from nexus.net.http1.types import Headers, Timeouts
from nexus.net.sse import SSEParser, SSEProtocolError

__all__ = [
    "CoreUsage",
    "CpuUsage",
    "LoadResult",
    "LoadSpec",
    "Summary",
    "chat_body",
    "core_ticks",
    "core_usage",
    "cpu_seconds",
    "percentile",
    "rss_kib",
    "run_load",
    "summarize",
]

OVERHEAD_HEADER = b"x-nexus-overhead-ms"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# A prompt that reads like prose, so that content scanners see words, not one repeated byte.
_PROSE = (
    "the quarterly report shows revenue growth in every region while costs stayed flat "
    "please summarise the key points for the board and list the risks we should watch "
    "customer churn fell after the new onboarding flow shipped and support tickets dropped "
    "explain the trade offs between caching and recomputation for this data pipeline"
)
_WORDS = _PROSE.split()


@attrs.frozen
class LoadSpec:
    """What to send, how often and for how long.  Times in seconds."""

    url: str
    body: bytes = attrs.field(repr=False)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    method: str = "POST"
    # Open loop: requests per second.  Ignored by the closed loop.
    rate: float = 100.0
    duration: float = 10.0
    warmup: float = 1.0
    # Worker tasks, each using at most one connection at a time: the concurrency cap.
    connections: int = 64
    # Per request, from its scheduled send time (open loop) or its send time (closed loop).
    timeout: float = 10.0
    stream: bool = False
    closed: bool = False
    cpu_pid: int | None = None

    def __attrs_post_init__(self) -> None:
        if not self.closed and not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.duration <= 0 or self.warmup < 0 or self.timeout <= 0:
            raise ValueError("duration and timeout must be positive, warmup not negative")
        if self.connections < 1:
            raise ValueError("connections must be at least 1")


@attrs.frozen
class Summary:
    """Distribution of one measure in milliseconds (``p999`` is the 99.9th percentile)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float


@attrs.frozen
class CpuUsage:
    pid: int
    seconds: float
    ms_per_request: float | None


@attrs.frozen
class CoreUsage:
    busy_pct: float
    steal_pct: float


@attrs.frozen
class LoadResult:
    mode: str  # "open" or "closed"
    url: str
    stream: bool
    target_rate: float | None
    duration: float
    warmup: float
    connections: int
    # Requests due (open) or sent (closed) inside the measurement window.
    count: int
    ok: int
    errors: dict[str, int]
    # Successful completions per second inside the window.
    achieved_rate: float
    latency_ms: Summary | None
    service_ms: Summary | None
    send_lag_ms: Summary | None
    ttft_ms: Summary | None
    # What the gateway said it added (X-Nexus-Overhead-Ms), when it said so.
    overhead_header_ms: Summary | None
    cpu: CpuUsage | None
    # Per core over the window, from /proc/stat: how busy it was (anything running on it,
    # ours or not) and how much time the hypervisor stole.  Shows when a figure is noisy.
    cores: dict[str, CoreUsage]
    # This process's own CPU over the whole run: the load generator must stay light.
    loadgen_cpu_s: float

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values: the smallest value with at least
    ``q`` % of the values at or below it."""
    if not ordered:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    rank = math.ceil(q / 100 * len(ordered) - 1e-9)
    return ordered[max(rank, 1) - 1]


def summarize(values: Sequence[float], scale: float = 1.0) -> Summary | None:
    """``Summary`` of ``values`` times ``scale`` (1000 turns seconds into ms); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return Summary(
        count=len(ordered),
        mean=round(sum(ordered) / len(ordered) * scale, 4),
        p50=round(percentile(ordered, 50) * scale, 4),
        p90=round(percentile(ordered, 90) * scale, 4),
        p99=round(percentile(ordered, 99) * scale, 4),
        p999=round(percentile(ordered, 99.9) * scale, 4),
        max=round(ordered[-1] * scale, 4),
    )


def chat_body(kb: float, model: str, *, stream: bool = False, max_tokens: int = 64) -> bytes:
    """An OpenAI chat-completions request of about ``kb`` KiB (exact unless smaller than
    its skeleton), with a deterministic prose prompt."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for a finance team."},
            {"role": "user", "content": ""},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        payload["stream"] = True
    room = int(kb * 1024) - len(json.dumps(payload).encode())
    rng = random.Random(1)
    words: list[str] = []
    size = -1
    while size < room:
        words.append(rng.choice(_WORDS))
        size += len(words[-1]) + 1
    payload["messages"][1]["content"] = " ".join(words)[: max(room, 0)]
    return json.dumps(payload).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def core_ticks() -> dict[str, list[int]]:
    """Per-core tick counters of ``/proc/stat`` (user nice system idle iowait irq softirq steal)."""
    out: dict[str, list[int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                out[name] = [int(v) for v in values[:8]]
    return out


def core_usage(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, CoreUsage]:
    """Busy and stolen share of each core between two ``core_ticks`` samples, in %."""
    out: dict[str, CoreUsage] = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (b - a for a, b in zip(start, end, strict=True))
        total = user + nice + system + idle + iowait + irq + softirq + steal
        if total > 0:
            busy = user + nice + system + irq + softirq
            out[name] = CoreUsage(round(100 * busy / total, 1), round(100 * steal / total, 1))
    return out


def rss_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in KiB, from ``/proc/<pid>/status``."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _error_kind(exc: HttpClientError) -> str:
    if isinstance(exc, ConnectError | ConnectTimeout):
        return "connect"
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, RemoteProtocolError):
        return "protocol"
    return type(exc).__name__


class _Recorder:
    """State of one run.  Samples are seconds; they are appended only for measured requests."""

    __slots__ = (
        "body",
        "client",
        "count",
        "errors",
        "headers",
        "lag",
        "latency",
        "method",
        "ok",
        "ok_in_window",
        "overhead",
        "service",
        "stream",
        "timeout",
        "ttft",
        "url",
        "window_end",
        "window_start",
    )

    def __init__(self, spec: LoadSpec, client: HttpClient, window_start: float, window_end: float) -> None:
        self.client = client
        self.url = spec.url
        self.method = spec.method
        self.body = spec.body
        self.stream = spec.stream
        self.timeout = spec.timeout
        headers = list(spec.headers)
        if spec.body and not any(name.lower() == b"content-type" for name, _ in headers):
            headers.append((b"content-type", b"application/json"))
        self.headers = headers
        self.window_start = window_start
        self.window_end = window_end
        self.count = 0
        self.ok = 0
        self.ok_in_window = 0
        self.errors: dict[str, int] = {}
        self.latency: list[float] = []
        self.service: list[float] = []
        self.lag: list[float] = []
        self.ttft: list[float] = []
        self.overhead: list[float] = []

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def exchange(self, due: float, measured: bool) -> None:
        """One request due at ``due``; records it when ``measured``."""
        if measured:
            self.count += 1
        deadline = due + self.timeout
        sent = trio.current_time()
        if sent >= deadline:
            if measured:
                self._error("timeout_queued")
            return
        status = 0
        first = 0.0
        overhead: bytes | None = None
        failure = ""
        with trio.CancelScope(deadline=deadline) as scope:
            try:
                if self.stream:
                    async with self.client.stream(self.method, self.url, self.headers, self.body) as resp:
                        status = resp.status
                        overhead = resp.headers.get_bytes(OVERHEAD_HEADER)
                        first = await self._drain(resp.headers, resp.iter_bytes())
                else:
                    got = await self.client.request(self.method, self.url, self.headers, self.body)
                    status = got.status
                    overhead = got.headers.get_bytes(OVERHEAD_HEADER)
            except HttpClientError as exc:
                failure = _error_kind(exc)
            except SSEProtocolError:
                failure = "bad_sse"
        done = trio.current_time()
        if scope.cancelled_caught:
            failure = "timeout"
        elif not failure and not 200 <= status < 300:
            failure = f"http_{status}"
        if not failure and self.window_start <= done <= self.window_end:
            self.ok_in_window += 1
        if not measured:
            return
        if failure:
            self._error(failure)
            return
        self.ok += 1
        self.latency.append(done - due)
        self.service.append(done - sent)
        self.lag.append(sent - due)
        if first:
            self.ttft.append(first - due)
        if overhead is not None:
            try:
                self.overhead.append(float(overhead))
            except ValueError:
                self._error("bad_overhead_header")

    async def _drain(self, headers: Headers, chunks: AsyncIterator[bytes]) -> float:
        """Read a streamed body to its end; the time its first event (or byte) arrived."""
        first = 0.0
        parser = SSEParser() if (headers.get_bytes(b"content-type") or b"").startswith(b"text/event-stream") else None
        async for chunk in chunks:
            if not first and (parser is None or parser.feed(chunk)):
                first = trio.current_time()
        return first


async def _open_loop(rec: _Recorder, spec: LoadSpec, start: float) -> None:
    interval = 1.0 / spec.rate
    total = round((spec.warmup + spec.duration) * spec.rate)
    first_measured = math.ceil(spec.warmup * spec.rate - 1e-9)
    next_slot = 0

    async def worker() -> None:
        nonlocal next_slot
        while next_slot < total:
            slot = next_slot
            next_slot += 1
            due = start + slot * interval
            await trio.sleep_until(due)
            await rec.exchange(due, slot >= first_measured)

    async with trio.open_nursery() as nursery:
        for _ in range(spec.connections):
            nursery.start_soon(worker)


async def _closed_loop(rec: _Recorder, spec: LoadSpec, start: float) -> None:
    end = start + spec.warmup + spec.duration
    measure_from = start + spec.warmup

    async def worker() -> None:
        await trio.sleep_until(start)
        while (now := trio.current_time()) < end:
            await rec.exchange(now, now >= measure_from)

    async with trio.open_nursery() as nursery:
        for _ in range(spec.connections):
            nursery.start_soon(worker)


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` and summarise it.  See the module docstring for what is measured."""
    own_cpu = _own_cpu()
    # Our deadline per request must fire before any of the client's own timeouts.
    slack = spec.timeout + 1.0
    timeouts = Timeouts(connect=min(5.0, slack), first_byte=slack, read=slack, pool_acquire=slack)
    start = trio.current_time() + 0.05
    window = (start + spec.warmup, start + spec.warmup + spec.duration)
    cpu: list[float] = []
    cores: list[dict[str, list[int]]] = []

    async def sample_cpu(pid: int | None) -> None:
        for at in window:
            await trio.sleep_until(at)
            cores.append(core_ticks())
            if pid is not None:
                cpu.append(cpu_seconds(pid))

    async with HttpClient(max_connections_per_origin=spec.connections, timeouts=timeouts) as client:
        rec = _Recorder(spec, client, *window)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_cpu, spec.cpu_pid)
            if spec.closed:
                await _closed_loop(rec, spec, start)
            else:
                await _open_loop(rec, spec, start)

    usage = None
    if spec.cpu_pid is not None and len(cpu) == 2:
        spent = cpu[1] - cpu[0]
        per = round(spent / rec.ok_in_window * 1000, 4) if rec.ok_in_window else None
        usage = CpuUsage(pid=spec.cpu_pid, seconds=round(spent, 3), ms_per_request=per)
    return LoadResult(
        mode="closed" if spec.closed else "open",
        url=spec.url,
        stream=spec.stream,
        target_rate=None if spec.closed else spec.rate,
        duration=spec.duration,
        warmup=spec.warmup,
        connections=spec.connections,
        count=rec.count,
        ok=rec.ok,
        errors=dict(sorted(rec.errors.items())),
        achieved_rate=round(rec.ok_in_window / spec.duration, 2),
        latency_ms=summarize(rec.latency, 1000),
        service_ms=summarize(rec.service, 1000),
        send_lag_ms=None if spec.closed else summarize(rec.lag, 1000),
        ttft_ms=summarize(rec.ttft, 1000),
        overhead_header_ms=summarize(rec.overhead),
        cpu=usage,
        cores=core_usage(cores[0], cores[1]) if len(cores) == 2 else {},
        loadgen_cpu_s=round(_own_cpu() - own_cpu, 3),
    )


def _header(text: str) -> tuple[bytes, bytes]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")


def _spec_from_args(args: argparse.Namespace) -> LoadSpec:
    if args.body_file is not None:
        with open(args.body_file, "rb") as f:
            body = f.read()
    else:
        body = chat_body(args.body_kb, args.model, stream=args.stream, max_tokens=args.max_tokens)
    return LoadSpec(
        url=args.url,
        body=body,
        headers=tuple(args.header),
        method=args.method,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        timeout=args.timeout,
        stream=args.stream,
        closed=args.closed,
        cpu_pid=args.cpu_pid,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    parser.add_argument("--connections", type=int, default=64, help="concurrency cap (closed loop: workers)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, from its scheduled time")
    parser.add_argument("--closed", action="store_true", help="closed loop: maximum throughput")
    parser.add_argument("--stream", action="store_true", help="read the body as a stream; measure TTFT")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--header", "-H", type=_header, action="append", default=[], help="'Name: value'")
    parser.add_argument("--body-file", help="request body (default: a generated chat body)")
    parser.add_argument("--body-kb", type=float, default=1.0, help="size of the generated chat body in KiB")
    parser.add_argument("--model", default="gpt-4o-mini", help="model of the generated chat body")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of the generated chat body")
    parser.add_argument("--cpu-pid", type=int, help="report CPU per request of this process")
    parser.add_argument("--core", type=int, help="pin this process to one CPU core")
    args = parser.parse_args(argv)
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    try:
        spec = _spec_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    result = trio.run(run_load, spec)
    json.dump(result.as_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
