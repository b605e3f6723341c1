"""One comparable benchmark run of the gateway against the mock provider.  Not a test.

What it does, in order:

1. Storage: the database at ``$NEXUS_DATABASE_URL``, or a dedicated ``nexus_bench`` on the
   local PostgreSQL (dropped and created afresh each run, so every run starts from the
   same state); ``nexus db migrate``; ``nexus db seed-demo --json`` for a virtual key and
   the mock models.  Secrets live in ``<state-dir>/secrets`` (or ``$NEXUS_SECRETS_DIR``)
   and are kept, since the seeded credentials are sealed with them.  Valkey and NATS are
   the configured ones (``$NEXUS_VALKEY_URL``, ``$NEXUS_NATS_URL`` or the defaults).
2. Processes: the mock provider pinned to the side core (1) with request recording off,
   one gateway process pinned to the gateway core (0); both must answer ``/readyz``, and
   the gateway must answer one chat completion, else the run goes on direct-only and says
   why.  Optional peers (``--litellm``, ``--portkey``) are started on the gateway core
   when installed, and reported as absent otherwise.  Load generators
   (``bench/loadgen.py``, one process per measurement) run on the side core.
3. Scenarios, each target measured at the same rate with the same payload, in
   interleaved rounds whose order rotates (direct, nexus, … then nexus, …, direct):

   chat    open loop, non-streaming ~1 KiB chat, at each ``--rates`` (default 300 req/s);
           zero-latency mock.  Overhead = target - direct, p50 and p99, per round.
   stream  open loop, streaming, mock restarted with a time to first token and
           inter-chunk delay as its defaults (so the result does not depend on the gateway
           forwarding ``x-mock-*`` headers); TTFT overhead per round.
   max     closed loop with ``--max-conns`` connections through each gateway-like
           target: requests per second and the target's CPU per request.

   The overall figure of a scenario is the median over its rounds (the range is shown
   beside it).  The gateway's RSS and CPU are read from ``/proc``.
4. Output: ``bench/results/<YYYY-MM-DD>-<name>.json`` and ``.md``; the table is printed.

    .venv/bin/python bench/run.py                  # full run: ~5 minutes
    .venv/bin/python bench/run.py --quick          # smoke run: under a minute
    .venv/bin/python bench/run.py --rates 10,300,1000 --scenarios chat,max

Resource handling: every process it starts is in its own session, killed with its
process group on exit, error, Ctrl-C or SIGTERM (and told to die with us through
``PR_SET_PDEATHSIG``).  Only 127.0.0.1 is used.  Error handling: a failure to prepare
storage or start the mock stops the run (exit 1) with the daemon's last log lines; a
gateway or peer that is not ready is left out of the measurements with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg

import loadgen
from nexus.crypto import secretfiles
from report import render_markdown

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.py"
BENCH_DB = f"postgresql://{HOST}:5432/nexus_bench"
# Peer versions measured in the design notes; optional bench extras, never runtime dependencies.
LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
CHAT_PATH = "/v1/chat/completions"
# A core busier than this before the start means someone else is using the box.
QUIET_PCT = 15.0


class BenchError(Exception):
    """The run cannot go on; the message says why."""


@attrs.define
class Target:
    """Something to send chat completions to."""

    name: str
    url: str
    model: str
    headers: list[str]
    # The process whose CPU and memory we report; None for the mock itself.
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


# -- processes ---------------------------------------------------------------------------


def _child_setup(core: int) -> Callable[[], None]:
    def setup() -> None:
        if core < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {core})
        # Die with the bench even if it is killed without running its cleanup.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


class Processes:
    """Children started by this run; ``stop_all`` ends each one's process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], core: int) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup(core), start_new_session=True, cwd=ROOT,
            )
        self.procs[name] = proc
        return proc

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        # The group, not just the leader: npx leaves node running if only npx is told.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    """One request with the standard library (start-up probes only); (0, reason) when unreachable."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def wait_ready(procs: Processes, name: str, url: str, timeout: float, any_status: bool = False) -> None:
    proc = procs.procs[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}\nlast log lines:\n{procs.tail(name)}")
        status, _ = http("GET", url, timeout=1.0)
        if status == 200 or (any_status and status):
            return
        time.sleep(0.2)
    raise BenchError(f"{name} not ready at {url} after {timeout:.0f} s\nlast log lines:\n{procs.tail(name)}")


# -- storage -----------------------------------------------------------------------------


def _maintenance_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/postgres"))


def recreate_database(dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    try:
        with psycopg.connect(_maintenance_dsn(dsn), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as exc:
        raise BenchError(f"cannot drop the bench database {name}: {exc}") from None


def nexus_cli(args: Sequence[str], env: dict[str, str]) -> str:
    try:
        done = subprocess.run([sys.executable, "-m", "nexus", *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"nexus {' '.join(args)} took longer than 120 s") from None
    if done.returncode != 0:
        raise BenchError(f"nexus {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def daemon_env(config: Path) -> dict[str, str]:
    """Our environment without socket activation and without NEXUS_* settings other than the
    storage URLs, so the bench config file decides ports and behaviour."""
    keep = {"NEXUS_DATABASE_URL", "NEXUS_VALKEY_URL", "NEXUS_NATS_URL"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_", "NEXUS_")) or k in keep}
    env["NEXUS_CONFIG"] = str(config)
    return env


def write_config(path: Path, *, db: str, secrets: Path, state: Path, gateway_port: int, mock_port: int) -> None:
    path.write_text(
        "# Written by bench/run.py for one benchmark run.\n"
        f'[storage]\ndatabase_url = "{db}"\n\n[secrets]\ndir = "{secrets}"\n\n'
        f'[runtime]\nstate_dir = "{state / "var"}"\ndrain_timeout = 2.0\n\n'
        '[log]\nlevel = "warning"\n\n'
        f'[gateway.listen]\nhost = "{HOST}"\nport = {gateway_port}\n\n'
        f'[mock_provider]\nrecord_requests = false\n\n[mock_provider.listen]\nhost = "{HOST}"\nport = {mock_port}\n'
    )


# -- peers -------------------------------------------------------------------------------


def find_litellm() -> str | None:
    beside = Path(sys.executable).with_name("litellm")
    return str(beside) if beside.exists() else shutil.which("litellm")


def find_portkey() -> bool:
    """True when @portkey-ai/gateway is installed (globally or under the repo), so npx need
    not download it."""
    roots = [ROOT / "node_modules"]
    npm = shutil.which("npm")
    if npm:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            roots.append(Path(subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=20,
                                             check=False).stdout.strip()))
    return any((root / "@portkey-ai" / "gateway" / "package.json").exists() for root in roots)


def start_litellm(procs: Processes, exe: str, state: Path, mock_url: str, core: int) -> Target:
    port = free_port()
    config = state / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: mock-gpt\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_base: {mock_url}/v1\n      api_key: mock-openai-key\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    proc = procs.start("litellm", [exe, "--config", str(config), "--host", HOST, "--port", str(port),
                                   "--num_workers", "1"], env, core)
    wait_ready(procs, "litellm", f"http://{HOST}:{port}/health/liveliness", 120)
    return Target("litellm", f"http://{HOST}:{port}{CHAT_PATH}", "mock-gpt",
                  ["Authorization: Bearer sk-bench"], proc)


def start_portkey(procs: Processes, mock_url: str, core: int) -> Target:
    port = free_port()
    npx = shutil.which("npx") or "npx"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NODE_ENV"] = "production"
    proc = procs.start("portkey", [npx, "--no-install", f"@portkey-ai/gateway@{PORTKEY_VERSION}",
                                   f"--port={port}", "--headless"], env, core)
    wait_ready(procs, "portkey", f"http://{HOST}:{port}/", 60, any_status=True)
    return Target("portkey", f"http://{HOST}:{port}{CHAT_PATH}", "gpt-4o-mini",
                  ["x-portkey-provider: openai", f"x-portkey-custom-host: {mock_url}/v1",
                   "Authorization: Bearer mock-openai-key"], proc)


# -- measurements ------------------------------------------------------------------------


@attrs.frozen
class Settings:
    rounds: int
    duration: float
    warmup: float
    body_kb: float
    connections: int
    timeout: float
    stream_rate: float
    stream_ttft_ms: int
    stream_chunk_delay_ms: int
    stream_chunks: int
    max_conns: int
    max_duration: float
    max_runs: int
    side_core: int
    gateway_core: int


def measure(target: Target, s: Settings, *, rate: float = 0.0, stream: bool = False, closed: bool = False,
            duration: float | None = None, connections: int | None = None) -> dict[str, Any]:
    """One loadgen process on the side core against ``target``; its JSON result."""
    duration = duration if duration is not None else s.duration
    argv = [sys.executable, str(LOADGEN), target.url, "--core", str(s.side_core), "--duration", str(duration),
            "--warmup", str(s.warmup), "--timeout", str(s.timeout), "--body-kb", str(s.body_kb),
            "--model", target.model, "--connections", str(connections or s.connections)]
    argv += ["--closed"] if closed else ["--rate", str(rate)]
    if stream:
        argv.append("--stream")
    if target.pid is not None:
        argv += ["--cpu-pid", str(target.pid)]
    for header in target.headers:
        argv += ["--header", header]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=s.warmup + duration + s.timeout + 60,
                              check=False, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"loadgen against {target.name} did not finish in time") from None
    if done.returncode != 0:
        raise BenchError(f"loadgen failed against {target.name}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def rotated(targets: list[Target], k: int) -> list[Target]:
    k %= len(targets)
    return targets[k:] + targets[:k]


def _delta(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if a is None or b is None:
        return None
    return round(float(a[key]) - float(b[key]), 4)


def overheads(result: dict[str, Any], direct: dict[str, Any], measures: Sequence[str]) -> dict[str, float | None]:
    """Target minus direct for p50 and p99 of each measure."""
    out: dict[str, float | None] = {}
    for m in measures:
        for p in ("p50", "p99"):
            out[f"{m}_{p}"] = _delta(result.get(m), direct.get(m), p)
    return out


def interleaved(targets: list[Target], s: Settings, label: str, *, rate: float, stream: bool) -> dict[str, Any]:
    """``s.rounds`` rounds over every target in rotating order; per-round results and overheads."""
    rounds: list[dict[str, Any]] = []
    for k in range(s.rounds):
        order = rotated(targets, k)
        results: dict[str, dict[str, Any]] = {}
        for target in order:
            results[target.name] = measure(target, s, rate=rate, stream=stream)
            r = results[target.name]
            lat = r["latency_ms"] or {}
            print(f"  {label} round {k + 1}/{s.rounds} {target.name:8} ok {r['ok']}/{r['count']} "
                  f"p50 {lat.get('p50', float('nan')):.3f} ms p99 {lat.get('p99', float('nan')):.3f} ms",
                  flush=True)
        direct = results["direct"]
        measures = ("latency_ms", "service_ms", "ttft_ms") if stream else ("latency_ms", "service_ms")
        rounds.append({
            "order": [t.name for t in order],
            "results": results,
            "overhead_ms": {t.name: overheads(results[t.name], direct, measures) for t in targets
                            if t.name != "direct"},
        })
    return {"rate": rate, "stream": stream, "rounds": rounds, "overall": overall(targets, rounds, s)}


def _median(values: Sequence[float | None]) -> dict[str, float] | None:
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"median": round(statistics.median(got), 4), "min": round(min(got), 4), "max": round(max(got), 4)}


def core_load(results: Sequence[dict[str, Any]], s: Settings) -> dict[str, dict[str, float] | None]:
    """How busy the two cores were during these measurements (whatever ran there) and the
    worst steal: what tells a noisy figure from a real one."""

    def pick(core: int, key: str) -> list[float | None]:
        return [((r.get("cores") or {}).get(f"cpu{core}") or {}).get(key) for r in results]

    steal = [max((c["steal_pct"] for c in (r.get("cores") or {}).values()), default=None) for r in results]
    return {"gateway_core_busy_pct": _median(pick(s.gateway_core, "busy_pct")),
            "side_core_busy_pct": _median(pick(s.side_core, "busy_pct")), "steal_pct": _median(steal)}


def overall(targets: list[Target], rounds: list[dict[str, Any]], s: Settings) -> dict[str, Any]:
    """Per target: medians over the rounds of each figure (with the range)."""
    out: dict[str, Any] = {}
    for t in targets:
        results = [r["results"][t.name] for r in rounds]
        entry: dict[str, Any] = {
            "count": sum(r["count"] for r in results),
            "ok": sum(r["ok"] for r in results),
            "errors": _sum_errors(results),
            "achieved_rate": _median([r["achieved_rate"] for r in results]),
        }
        for m in ("latency_ms", "service_ms", "ttft_ms", "overhead_header_ms"):
            if any(r.get(m) for r in results):
                entry[m] = {p: _median([(r.get(m) or {}).get(p) for r in results])
                            for p in ("mean", "p50", "p90", "p99", "p999", "max")}
        cpu = [r["cpu"]["ms_per_request"] for r in results if r.get("cpu")]
        if cpu:
            entry["cpu_ms_per_request"] = _median(cpu)
        if t.name != "direct":
            keys = rounds[0]["overhead_ms"][t.name].keys()
            entry["overhead_ms"] = {key: _median([r["overhead_ms"][t.name][key] for r in rounds]) for key in keys}
        entry.update(core_load(results, s))
        out[t.name] = entry
    return out


def _sum_errors(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for kind, n in r["errors"].items():
            total[kind] = total.get(kind, 0) + n
    return total


def max_throughput(targets: list[Target], s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in targets:
        runs = []
        for k in range(s.max_runs):
            r = measure(t, s, closed=True, duration=s.max_duration, connections=s.max_conns)
            runs.append(r)
            cpu = (r.get("cpu") or {}).get("ms_per_request")
            print(f"  max run {k + 1}/{s.max_runs} {t.name:8} {r['achieved_rate']:,.0f} req/s, "
                  f"CPU {cpu} ms/req, errors {r['errors']}", flush=True)
        out[t.name] = {
            "runs": runs,
            "achieved_rate": _median([r["achieved_rate"] for r in runs]),
            "cpu_ms_per_request": _median([(r.get("cpu") or {}).get("ms_per_request") for r in runs]),
            "latency_p50_ms": _median([(r.get("latency_ms") or {}).get("p50") for r in runs]),
            "latency_p99_ms": _median([(r.get("latency_ms") or {}).get("p99") for r in runs]),
            "errors": _sum_errors(runs),
            "own_cpu_pct": _median([r["cpu"]["seconds"] / r["duration"] * 100 if r.get("cpu") else None
                                    for r in runs]),
            **core_load(runs, s),
        }
    return out


# -- report ------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _commit() -> str:
    """HEAD, with ``+dirty`` when daemons/ has changes not in it (read-only git calls)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    status = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--", "daemons"],
                            capture_output=True, text=True, cwd=ROOT, check=False)
    commit = head.stdout.strip() or "unknown"
    return commit + "+dirty" if status.stdout.strip() else commit


# -- main --------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="nexus", help="results file name: <date>-<name>.json/.md")
    p.add_argument("--scenarios", default="chat,stream,max", help="comma list of chat, stream, max")
    p.add_argument("--hooks", action="store_true",
                   help="also measure the gateway with every default compliance hook on (same process, another key)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s, short max run (< 1 minute)")
    p.add_argument("--rates", type=_floats, default=[300.0], help="chat rates, req/s (e.g. 10,300,1000)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per round")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    p.add_argument("--body-kb", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=256, help="open-loop concurrency cap")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, from its scheduled time")
    p.add_argument("--stream-rate", type=float, default=100.0)
    p.add_argument("--stream-ttft-ms", type=int, default=200)
    p.add_argument("--stream-chunk-delay-ms", type=int, default=20)
    p.add_argument("--stream-chunks", type=int, default=5)
    p.add_argument("--max-conns", type=int, default=32)
    p.add_argument("--max-duration", type=float, default=10.0)
    p.add_argument("--max-runs", type=int, default=2)
    p.add_argument("--no-gateway", action="store_true", help="measure the mock directly only")
    p.add_argument("--litellm", action="store_true", help=f"also LiteLLM proxy (pinned {LITELLM_VERSION}) if installed")
    p.add_argument("--portkey", action="store_true", help=f"also Portkey gateway {PORTKEY_VERSION} if installed")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="on a shared box: wait up to this long for both cores to be idle before starting")
    p.add_argument("--gateway-core", type=int, default=0)
    p.add_argument("--side-core", type=int, default=1, help="core of the mock provider and the load generator")
    p.add_argument("--state-dir", default=str(ROOT / ".nexus" / "bench"), help="secrets, config and logs")
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    args = p.parse_args(argv)
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = set(args.scenarios) - {"chat", "stream", "max"}
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
        args.max_duration, args.max_runs = 3.0, 1
    return args



def run_with_private_nats(
    label: str, state: Path, out: str | None, default_name: str,
    measure: Callable[[Path, Processes, Any], dict[str, Any]], render: Callable[[dict[str, Any]], str],
) -> int:
    """The frame of a benchmark on its own NATS: state dirs, every process stopped, results written.

    ``measure(state, procs, nats)`` starts what it needs; the private JetStream data (events the run
    published, up to GBs after a soak) is removed afterwards.  Exit status 1 with the reason on failure.
    """
    from nexus.devstack.services import PrivateNats

    state = state.absolute()
    for sub in ("logs", "var", "nats"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    procs = Processes(state / "logs")
    nats = PrivateNats(state / "nats")
    try:
        with _sigterm_as_exit():
            report = measure(state, procs, nats)
    except (BenchError, OSError) as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        nats.stop()
        shutil.rmtree(state / "nats" / "jetstream", ignore_errors=True)
    path = Path(out) if out else BENCH / "results" / f"{datetime.date.today().isoformat()}-{default_name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = render(report)
    path.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0

@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    def handler(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state = Path(args.state_dir).absolute()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "var").mkdir(parents=True, exist_ok=True)
    procs = Processes(state / "logs")
    with _sigterm_as_exit():
        try:
            run(args, state, procs)
        except (BenchError, OSError, secretfiles.SecretsError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    return 0


def run(args: argparse.Namespace, state: Path, procs: Processes) -> dict[str, Any]:
    s = Settings(
        rounds=args.rounds, duration=args.duration, warmup=args.warmup, body_kb=args.body_kb,
        connections=args.connections, timeout=args.timeout, stream_rate=args.stream_rate,
        stream_ttft_ms=args.stream_ttft_ms, stream_chunk_delay_ms=args.stream_chunk_delay_ms,
        stream_chunks=args.stream_chunks, max_conns=args.max_conns, max_duration=args.max_duration,
        max_runs=args.max_runs, side_core=args.side_core, gateway_core=args.gateway_core,
    )
    notes: list[str] = []
    idle_check = wait_quiet(args.wait_quiet)
    busy = {name: u["busy_pct"] for name, u in idle_check.items() if u["busy_pct"] > QUIET_PCT}
    if busy:
        notes.append("Something else was running before the start ("
                     + ", ".join(f"{name} {pct:.0f} % busy" for name, pct in sorted(busy.items()))
                     + "): expect noisier figures than on a quiet box; see 'cores busy %'.")
    given_db = os.environ.get("NEXUS_DATABASE_URL")
    db = given_db or BENCH_DB
    secrets = Path(os.environ.get("NEXUS_SECRETS_DIR") or state / "secrets")
    secretfiles.ensure(secrets)
    mock_port, gateway_port = free_port(), free_port()
    mock_url = f"http://{HOST}:{mock_port}"
    config = state / "bench.toml"
    write_config(config, db=db, secrets=secrets, state=state, gateway_port=gateway_port, mock_port=mock_port)
    env = daemon_env(config)

    print(f"storage: {'given database' if given_db else 'fresh nexus_bench database'}", flush=True)
    if not given_db:
        recreate_database(db)
    nexus_cli(["db", "migrate"], env)
    seeded = json.loads(nexus_cli(["db", "seed-demo", "--json", "--mock-url", mock_url], env).strip().splitlines()[-1])
    hooks_key = hooked_key(db, secrets, seeded) if args.hooks else None

    def start_mock(profile: dict[str, int]) -> None:
        mock_env = dict(env)
        for key, value in profile.items():
            mock_env[f"NEXUS_MOCK_PROVIDER__{key.upper()}"] = str(value)
        procs.start("mock-provider", [sys.executable, "-m", "nexus", "mock-provider"], mock_env, args.side_core)
        wait_ready(procs, "mock-provider", f"{mock_url}/readyz", 30)

    start_mock({})
    direct = Target("direct", f"{mock_url}{CHAT_PATH}", "gpt-4o-mini", [])
    status, answer = http("POST", direct.url, loadgen.chat_body(0.2, direct.model),
                          {"Content-Type": "application/json"})
    problem = _chat_problem(status, answer, False)
    if problem:
        raise BenchError(f"the mock provider's chat completion {problem}")
    targets = [direct]
    gateway: Target | None = None
    if args.no_gateway:
        notes.append("Gateway not measured (--no-gateway).")
    else:
        gateway = start_gateway(procs, env, gateway_port, seeded["virtual_key"], args.gateway_core, notes)
        if gateway is not None:
            targets.append(gateway)
            if hooks_key is not None:
                # Same process, another key: the one whose requests run every default hook over all the rules.
                targets.append(Target("nexus+hooks", gateway.url, gateway.model,
                                      [f"Authorization: Bearer {hooks_key}"], gateway.proc))
    if args.litellm:
        exe = find_litellm()
        label = f"LiteLLM proxy {LITELLM_VERSION}"
        if exe is None:
            notes.append(f"{label} requested but not installed (pip install 'litellm[proxy]=={LITELLM_VERSION}' "
                         "beside the bench); not measured.")
        else:
            _add_peer(targets, notes, label, lambda: start_litellm(procs, exe, state, mock_url, args.gateway_core))
    if args.portkey:
        label = f"Portkey gateway {PORTKEY_VERSION}"
        if not find_portkey():
            notes.append(f"{label} requested but not installed (npm install -g @portkey-ai/gateway@{PORTKEY_VERSION})"
                         "; not measured.")
        else:
            _add_peer(targets, notes, label, lambda: start_portkey(procs, mock_url, args.gateway_core))

    memory: dict[str, dict[str, int]] = {}
    cpu_start = 0.0
    if gateway is not None and gateway.pid is not None:
        memory["after start"] = loadgen.rss_kib(gateway.pid)
        cpu_start = loadgen.cpu_seconds(gateway.pid)

    scenarios: dict[str, Any] = {}
    if "chat" in args.scenarios:
        scenarios["chat"] = []
        for rate in args.rates:
            print(f"chat at {rate:g} req/s", flush=True)
            scenarios["chat"].append(interleaved(targets, s, f"chat@{rate:g}", rate=rate, stream=False))
    if "max" in args.scenarios:
        gateways = [t for t in targets if t.name != "direct"]
        if gateways:
            print("max throughput", flush=True)
            scenarios["max"] = max_throughput(gateways, s)
        else:
            notes.append("Maximum throughput not measured: no gateway to measure.")
    if gateway is not None and gateway.pid is not None:
        memory["after chat and max"] = loadgen.rss_kib(gateway.pid)
    if "stream" in args.scenarios:
        procs.stop("mock-provider")
        start_mock({"ttft_ms": s.stream_ttft_ms, "chunk_delay_ms": s.stream_chunk_delay_ms,
                    "chunks": s.stream_chunks})
        print(f"stream at {s.stream_rate:g} req/s", flush=True)
        scenarios["stream"] = interleaved(targets, s, "stream", rate=s.stream_rate, stream=True)
    if gateway is not None and gateway.pid is not None:
        memory["end"] = loadgen.rss_kib(gateway.pid)
    notes += load_notes(scenarios)

    now = datetime.datetime.now()
    report: dict[str, Any] = {
        "meta": {
            "name": args.name, "date": now.strftime("%Y-%m-%d"), "time": now.isoformat(timespec="seconds"),
            "commit": _commit(), "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "gateway_core": args.gateway_core, "side_core": args.side_core, "rounds": s.rounds,
            "duration": s.duration, "warmup": s.warmup, "body_kb": s.body_kb, "connections": s.connections,
            "timeout": s.timeout, "rates": args.rates, "stream_rate": s.stream_rate,
            "stream_ttft_ms": s.stream_ttft_ms, "stream_chunk_delay_ms": s.stream_chunk_delay_ms,
            "stream_chunks": s.stream_chunks, "max_conns": s.max_conns, "max_duration": s.max_duration,
            "max_runs": s.max_runs, "targets": [t.name for t in targets], "cores_before_start": idle_check,
        },
        "notes": notes,
        "scenarios": scenarios,
        "gateway_memory": memory,
    }
    if gateway is not None and gateway.pid is not None:
        report["gateway_cpu_seconds_total"] = round(loadgen.cpu_seconds(gateway.pid) - cpu_start, 2)
    write_report(report, Path(args.results_dir))
    return report


def load_notes(scenarios: dict[str, Any]) -> list[str]:
    """Notes on outside load, read from the figures: CPU use on the gateway core while only
    the mock was measured, and a ceiling run in which the gateway did not get its core."""
    notes: list[str] = []
    idle_core = [_get_median(scen["overall"]["direct"], "gateway_core_busy_pct")
                 for scen in [*scenarios.get("chat", []), *filter(None, [scenarios.get("stream")])]]
    seen = [v for v in idle_core if v is not None]
    if seen and max(seen) > QUIET_PCT:
        notes.append(f"Outside load: the gateway core was {min(seen):.0f}-{max(seen):.0f} % busy while only the mock "
                     "was measured (it should be idle then); other work on the box inflates the tails.")
    for name, e in scenarios.get("max", {}).items():
        own, cpu = _get_median(e, "own_cpu_pct"), _get_median(e, "cpu_ms_per_request")
        if own is not None and own < 85 and cpu:
            notes.append(f"Maximum throughput of {name}: it got only {own:.0f} % of its core, so the req/s is "
                         f"below its ceiling; at {cpu:.3f} ms of CPU per request a free core would give about "
                         f"{1000 / cpu:,.0f} req/s.")
    return notes


def _get_median(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return float(value["median"]) if value else None


def wait_quiet(patience: float) -> dict[str, dict[str, float]]:
    """Sample the cores for a second, again and again for up to ``patience`` seconds until
    none is busier than ``QUIET_PCT``; the last sample."""
    deadline = time.monotonic() + patience
    announced = False
    while True:
        before = loadgen.core_ticks()
        time.sleep(1.0)
        usage = {name: attrs.asdict(u) for name, u in loadgen.core_usage(before, loadgen.core_ticks()).items()}
        if all(u["busy_pct"] <= QUIET_PCT for u in usage.values()) or time.monotonic() >= deadline:
            return usage
        if not announced:
            load = ", ".join(f"{n} {u['busy_pct']:.0f} %" for n, u in sorted(usage.items()))
            print(f"waiting up to {patience:.0f} s for the cores to be quiet ({load})", flush=True)
            announced = True


def _add_peer(targets: list[Target], notes: list[str], label: str, start: Callable[[], Target]) -> None:
    try:
        targets.append(start())
    except BenchError as exc:
        notes.append(f"{label} did not start: {str(exc).splitlines()[0]}")


def hooked_key(db: str, secrets: Path, seeded: dict[str, Any]) -> str:
    """A second demo key with the default compliance hooks (all rule packs) scoped to it alone."""
    import psycopg

    from nexus.crypto import vkeys
    from nexus.devstack.seed import DEFAULT_HOOKS

    key = vkeys.generate()
    with psycopg.connect(db) as conn:
        key_id = conn.execute(
            "INSERT INTO virtual_key (key_hash, key_prefix, name, kind, org_id, project_id) "
            "VALUES (%s, %s, 'bench-hooks', 'application', %s, %s) RETURNING id",
            (vkeys.hash_key(secretfiles.key_hmac_secret(secrets), key), vkeys.display_prefix(key),
             seeded["org_id"], seeded["project_id"])).fetchone()[0]  # type: ignore[index]
        for name, implementation, stage, priority, stream_mode, config in DEFAULT_HOOKS:
            conn.execute(
                "INSERT INTO hook_config (name, implementation, stage, priority, stream_mode, config, scope_kind, "
                "virtual_key_id) VALUES (%s, %s, %s, %s, %s, %s, 'virtual_key', %s)",
                (f"bench-{name}", implementation, stage, priority, stream_mode, json.dumps(config), key_id))
    return key


def start_gateway(procs: Processes, env: dict[str, str], port: int, key: str, core: int,
                  notes: list[str]) -> Target | None:
    """The gateway, or None (with a note) when it does not start or does not answer a chat
    completion yet."""
    base = f"http://{HOST}:{port}"
    procs.start("gateway", [sys.executable, "-m", "nexus", "gateway"], env, core)
    try:
        wait_ready(procs, "gateway", f"{base}/readyz", 60)
    except BenchError as exc:
        notes.append(f"Gateway not measured: {str(exc).splitlines()[0]} "
                     f"(its log: {procs.log_dir / 'gateway.log'}).")
        procs.stop("gateway")
        return None
    target = Target("nexus", f"{base}{CHAT_PATH}", "mock-gpt", [f"Authorization: Bearer {key}"],
                    procs.procs["gateway"])
    for stream in (False, True):
        body = loadgen.chat_body(0.2, "mock-gpt", stream=stream)
        status, answer = http("POST", target.url, body, {"Authorization": f"Bearer {key}",
                                                         "Content-Type": "application/json"}, timeout=10)
        problem = _chat_problem(status, answer, stream)
        if problem:
            notes.append(f"Gateway not measured: a {'streaming' if stream else 'non-streaming'} chat completion "
                         f"{problem}")
            procs.stop("gateway")
            return None
    return target


def _chat_problem(status: int, answer: bytes, stream: bool) -> str:
    """Why ``answer`` is not a chat completion (an empty string when it is one)."""
    text = " ".join(answer[:300].decode(errors="replace").split())
    if status != 200:
        return f"answered {status}: {text}"
    if stream:
        return "" if b"data:" in answer and b"chat.completion.chunk" in answer else f"is not an SSE stream: {text}"
    try:
        choices = json.loads(answer).get("choices")
    except (ValueError, AttributeError):
        choices = None
    return "" if choices else f"has no choices: {text}"


def write_report(report: dict[str, Any], results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"{report['meta']['date']}-{report['meta']['name']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = render_markdown(report)
    stem.with_suffix(".md").write_text(md + "\n")
    print()
    print(md)
    print(f"results: {stem}.json, {stem}.md")


if __name__ == "__main__":
    raise SystemExit(main())
