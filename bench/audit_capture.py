"""Gateway throughput with full body capture on versus off, interleaved in one run.  Not a test.

    .venv/bin/python bench/audit_capture.py [--rounds 5] [--duration 10] [--body-kb 1] [--rate 300]

Target (audit.md): throughput with ``[audit] capture = "full"`` ≥ 95 % of ``capture = "off"``,
same run.  Built from ``bench/run.py``'s pieces:

- Storage: a fresh database ``nexus_bench_capture`` on the local PostgreSQL, migrated and
  seeded with the demo key and the mock models; Valkey is the configured one; NATS is a
  *private* server (JetStream on, under the state directory, pinned to the side core), so
  the events of the run fill nobody else's stream.  No hub runs: the stream keeps what the
  gateways publish, and the directory is deleted at the end.
- Processes: the mock provider and every load generator on the side core (1); two gateway
  processes on the gateway core (0), identical but for ``capture`` (``full`` and ``off``),
  each with spool and spill directories of its own.  Only one is under load at a time.
- Measurements, in rounds whose order rotates (full → off, then off → full, …):
  ``fixed``: open loop at ``--rate`` (default 2,000 req/s, below every ceiling) through
  the mock directly and through each gateway: the gateway's CPU per request (user and
  system), the NATS server's, and the latency each adds; then ``max``: closed loop with
  ``--max-conns`` connections for ``--duration`` seconds: requests per second and the
  gateway's CPU per request at its ceiling.
- Output: ``<out>.json`` and ``<out>.md`` (``--out``, default
  ``bench/results/<date>-audit-capture``).

Throughput ratio = median over the rounds of full / off.  On a shared box the wall-clock
ceiling moves with other people's load; the gateway's CPU per request is the steadier
figure, so its ratio (off / full: the ceiling each would have on a core of its own) is
reported beside it.  On two cores the closed-loop ceiling is often set by the side core
(load generator, mock and NATS together) rather than by the gateway: the NATS server's CPU
per request is reported so that a difference it makes can be told from the gateway's.

Resource handling: every process it starts (and the private NATS) is stopped on exit,
error, Ctrl-C or SIGTERM.  Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import loadgen
import run as bench
from nexus.devstack.services import PrivateNats

CAPTURE_DB = f"postgresql://{bench.HOST}:5432/nexus_bench_capture"
LEVELS = ("full", "off")


def start_gateway(procs: bench.Processes, name: str, env: dict[str, str], port: int, key: str,
                  core: int) -> bench.Target:
    base = f"http://{bench.HOST}:{port}"
    procs.start(name, [sys.executable, "-m", "nexus", "gateway"], env, core)
    bench.wait_ready(procs, name, f"{base}/readyz", 60)
    target = bench.Target(name, f"{base}{bench.CHAT_PATH}", "mock-gpt", [f"Authorization: Bearer {key}"],
                          procs.procs[name])
    status, answer = bench.http("POST", target.url, loadgen.chat_body(0.2, "mock-gpt"),
                                {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, timeout=10)
    problem = bench._chat_problem(status, answer, False)
    if problem:
        raise bench.BenchError(f"{name}: a chat completion {problem}")
    return target


def metric(target: bench.Target, name: str) -> float:
    """One sample of the gateway's /metrics (0 when absent)."""
    base = target.url.removesuffix(bench.CHAT_PATH)
    status, body = bench.http("GET", base + "/metrics")
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.rpartition(" ")[2])
    return total


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measured(t: bench.Target, s: bench.Settings, nats_pid: int, **kw: Any) -> dict[str, Any]:
    """``bench.measure`` plus where the CPU went: the gateway's user/system split and the NATS server's CPU,
    both scaled to the gateway's CPU per request that loadgen measured over its window."""
    gw0 = cpu_split(t.pid) if t.pid else (0.0, 0.0)
    nats0 = loadgen.cpu_seconds(nats_pid)
    r = bench.measure(t, s, **kw)
    nats_s = loadgen.cpu_seconds(nats_pid) - nats0
    gw_ms = (r.get("cpu") or {}).get("ms_per_request")
    if t.pid and gw_ms:
        user, system = (b - a for a, b in zip(gw0, cpu_split(t.pid), strict=True))
        whole = user + system
        if whole > 0:
            r["gateway_user_ms_per_request"] = round(gw_ms * user / whole, 4)
            r["gateway_sys_ms_per_request"] = round(gw_ms * system / whole, 4)
            r["nats_ms_per_request"] = round(gw_ms * nats_s / whole, 4)
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per closed-loop run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--body-kb", type=float, default=1.0)
    p.add_argument("--max-conns", type=int, default=32)
    p.add_argument("--rate", type=float, default=2000.0, help="open-loop rate of the fixed-rate rounds (0: skip)")
    p.add_argument("--chat-rounds", type=int, default=5, help="fixed-rate rounds")
    p.add_argument("--gateway-core", type=int, default=0)
    p.add_argument("--side-core", type=int, default=1)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--state-dir", default=str(bench.ROOT / ".nexus" / "bench-capture"))
    p.add_argument("--out", default=None, help="results path without suffix")
    args = p.parse_args()
    return bench.run_with_private_nats('capture bench', Path(args.state_dir), args.out, 'audit-capture',
                                       lambda state, procs, nats: measure_all(args, state, procs, nats), render)


def measure_all(args: argparse.Namespace, state: Path, procs: bench.Processes, nats: PrivateNats) -> dict[str, Any]:
    from nexus.crypto import secretfiles

    idle = bench.wait_quiet(args.wait_quiet)
    shutil.rmtree(state / "nats" / "jetstream", ignore_errors=True)
    nats.start()
    assert nats.proc is not None
    if args.side_core < (os.cpu_count() or 1):
        os.sched_setaffinity(nats.proc.pid, {args.side_core})
    db = os.environ.get("NEXUS_CAPTURE_DATABASE_URL", CAPTURE_DB)
    secrets = state / "secrets"
    secretfiles.ensure(secrets)
    mock_port = bench.free_port()
    mock_url = f"http://{bench.HOST}:{mock_port}"
    envs: dict[str, dict[str, str]] = {}
    ports: dict[str, int] = {}
    for level in LEVELS:
        ports[level] = bench.free_port()
        config = state / f"capture-{level}.toml"
        bench.write_config(config, db=db, secrets=secrets, state=state, gateway_port=ports[level],
                           mock_port=mock_port)
        var = state / "var" / level
        shutil.rmtree(var, ignore_errors=True)
        with open(config, "a") as f:
            f.write(f'\n[audit]\ncapture = "{level}"\nspool_dir = "{var / "spool"}"\nspill_dir = "{var / "spill"}"\n')
        envs[level] = bench.daemon_env(config) | {"NEXUS_NATS_URL": nats.url}
    env = envs["full"]
    if "NEXUS_CAPTURE_DATABASE_URL" not in os.environ:
        bench.recreate_database(db)
    bench.nexus_cli(["db", "migrate"], env)
    seeded = json.loads(bench.nexus_cli(["db", "seed-demo", "--json", "--mock-url", mock_url], env)
                        .strip().splitlines()[-1])
    procs.start("mock-provider", [sys.executable, "-m", "nexus", "mock-provider"], env, args.side_core)
    bench.wait_ready(procs, "mock-provider", f"{mock_url}/readyz", 30)
    targets = [start_gateway(procs, f"capture-{level}", envs[level], ports[level], seeded["virtual_key"],
                             args.gateway_core) for level in LEVELS]
    s = bench.Settings(
        rounds=args.chat_rounds, duration=args.duration, warmup=args.warmup, body_kb=args.body_kb, connections=256,
        timeout=10.0, stream_rate=0, stream_ttft_ms=0, stream_chunk_delay_ms=0, stream_chunks=0,
        max_conns=args.max_conns, max_duration=args.duration, max_runs=args.rounds, side_core=args.side_core,
        gateway_core=args.gateway_core,
    )
    assert nats.proc is not None
    nats_pid = nats.proc.pid
    fixed: list[dict[str, Any]] = []
    if args.rate > 0:
        # Both gateways at the same rate, below every ceiling: CPU per request compares like with like.
        direct = bench.Target("direct", f"{mock_url}{bench.CHAT_PATH}", "gpt-4o-mini", [])
        print(f"fixed rate {args.rate:g} req/s, {args.chat_rounds} rounds x {args.duration:g} s", flush=True)
        for k in range(args.chat_rounds):
            results: dict[str, Any] = {}
            order = bench.rotated([direct, *targets], k)
            for t in order:
                r = results[t.name] = measured(t, s, nats_pid, rate=args.rate)
                lat = r.get("latency_ms") or {}
                print(f"  round {k + 1}/{args.chat_rounds} {t.name:13} ok {r['ok']}/{r['count']} "
                      f"p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms"
                      f" CPU {(r.get('cpu') or {}).get('ms_per_request')}"
                      f" ms/req", flush=True)
            full, off = results["capture-full"], results["capture-off"]
            fixed.append({"order": [t.name for t in order], "results": results,
                          "cpu_ratio": ratio((off.get("cpu") or {}).get("ms_per_request"),
                                             (full.get("cpu") or {}).get("ms_per_request"))})
    rounds: list[dict[str, Any]] = []
    print(f"max throughput, {args.rounds} rounds x {args.duration:g} s, {args.body_kb:g} KiB chat", flush=True)
    for k in range(args.rounds):
        results = {}
        order = bench.rotated(targets, k)
        for t in order:
            before = metric(t, 'nexus_audit_events_total{stage="published"}')
            r = measured(t, s, nats_pid, closed=True, duration=args.duration, connections=args.max_conns)
            r["events_published"] = metric(t, 'nexus_audit_events_total{stage="published"}') - before
            results[t.name] = r
            cpu = (r.get("cpu") or {}).get("ms_per_request")
            print(f"  round {k + 1}/{args.rounds} {t.name:13} {r['achieved_rate']:,.0f} req/s, CPU {cpu} ms/req, "
                  f"errors {r['errors'] or 'none'}", flush=True)
        full, off = results["capture-full"], results["capture-off"]
        rounds.append({
            "order": [t.name for t in order], "results": results,
            "throughput_ratio": ratio(full["achieved_rate"], off["achieved_rate"]),
            "cpu_ratio": ratio((off.get("cpu") or {}).get("ms_per_request"),
                               (full.get("cpu") or {}).get("ms_per_request")),
        })
    spool = {level: sum(f.stat().st_size for f in (state / "var" / level).rglob("*.spool")) for level in LEVELS}
    now = datetime.datetime.now()
    summary: dict[str, Any] = {}
    for t in targets:
        runs = [r["results"][t.name] for r in rounds]
        steady = [r["results"][t.name] for r in fixed]

        def med(rs: list[dict[str, Any]], key: str) -> dict[str, float] | None:
            return bench._median([r.get(key) for r in rs])

        summary[t.name] = {
            "achieved_rate": bench._median([r["achieved_rate"] for r in runs]),
            "cpu_ms_per_request": bench._median([(r.get("cpu") or {}).get("ms_per_request") for r in runs]),
            "latency_p50_ms": bench._median([(r.get("latency_ms") or {}).get("p50") for r in runs]),
            "latency_p99_ms": bench._median([(r.get("latency_ms") or {}).get("p99") for r in runs]),
            "own_cpu_pct": bench._median([r["cpu"]["seconds"] / r["duration"] * 100 if r.get("cpu") else None
                                          for r in runs]),
            "nats_ms_per_request": med(runs, "nats_ms_per_request"),
            "errors": bench._sum_errors(runs),
            "rss_kib": loadgen.rss_kib(t.pid) if t.pid else None,
            **bench.core_load(runs, s),
            "fixed": {
                "cpu_ms_per_request": bench._median([(r.get("cpu") or {}).get("ms_per_request") for r in steady]),
                "user_ms_per_request": med(steady, "gateway_user_ms_per_request"),
                "sys_ms_per_request": med(steady, "gateway_sys_ms_per_request"),
                "nats_ms_per_request": med(steady, "nats_ms_per_request"),
                "latency_p50_ms": bench._median([(r.get("latency_ms") or {}).get("p50") for r in steady]),
                "latency_p99_ms": bench._median([(r.get("latency_ms") or {}).get("p99") for r in steady]),
                "errors": bench._sum_errors(steady) if steady else {},
                **bench.core_load(steady, s),
            } if steady else None,
        }
    return {
        "meta": {"name": "audit-capture", "date": now.strftime("%Y-%m-%d"), "time": now.isoformat(timespec="seconds"),
                 "commit": bench._commit(), "cpu": bench._cpu_model(), "cores": os.cpu_count(),
                 "gateway_core": args.gateway_core, "side_core": args.side_core, "rounds": args.rounds,
                 "duration": args.duration, "body_kb": args.body_kb, "max_conns": args.max_conns,
                 "rate": args.rate, "chat_rounds": args.chat_rounds, "cores_before_start": idle,
                 "load_avg_end": os.getloadavg()},
        "rounds": rounds,
        "summary": summary,
        "throughput_ratio": bench._median([r["throughput_ratio"] for r in rounds]),
        "cpu_ratio": bench._median([r["cpu_ratio"] for r in rounds]),
        "fixed_cpu_ratio": bench._median([r["cpu_ratio"] for r in fixed]),
        "fixed": fixed,
        "spool_bytes_left": spool,
    }


def render(report: dict[str, Any]) -> str:
    meta, tr, cr = report["meta"], report["throughput_ratio"], report["cpu_ratio"]

    def cell(m: dict[str, float] | None, digits: int = 0) -> str:
        if not m:
            return "-"
        return f"{m['median']:,.{digits}f} ({m['min']:,.{digits}f}…{m['max']:,.{digits}f})"

    lines = [
        f"# Gateway throughput, full body capture on vs off ({meta['date']})",
        "",
        f"Two gateway processes on core {meta['gateway_core']}, identical but for `[audit] capture` (`full` keeps "
        f"request and response bodies in every traffic event and publishes them to JetStream; `off` publishes the "
        f"event without bodies), one under load at a time, in {meta['rounds']} interleaved rounds whose order "
        f"rotates; closed loop, {meta['max_conns']} connections, {meta['duration']:g} s per run, "
        f"{meta['body_kb']:g} KiB chat body, zero-latency mock and load generator on core {meta['side_core']}; "
        "NATS a private server with JetStream (file storage) pinned to the side core.",
        "",
        f"Commit {meta['commit']}; {meta['cpu']}, {meta['cores']} cores.  Other work on the box shows in 'cores "
        "busy %' (a figure well above the target's own CPU % means someone else used the gateway core): prefer the "
        "CPU-per-request ratio when the two disagree.",
        "",
        "| figure | capture full | capture off | full / off | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    full, off = report["summary"]["capture-full"], report["summary"]["capture-off"]
    lines.append(f"| max throughput, req/s (median, range) | {cell(full['achieved_rate'])} | "
                 f"{cell(off['achieved_rate'])} | **{cell(tr, 3) if tr else '-'}** | ≥ 0.95 |")
    lines.append(f"| gateway CPU per request, ms | {cell(full['cpu_ms_per_request'], 3)} | "
                 f"{cell(off['cpu_ms_per_request'], 3)} | off/full **{cell(cr, 3) if cr else '-'}** | ≥ 0.95 |")
    lines.append(f"| latency p50 / p99 at the ceiling, ms | {cell(full['latency_p50_ms'], 2)} / "
                 f"{cell(full['latency_p99_ms'], 2)} | {cell(off['latency_p50_ms'], 2)} / "
                 f"{cell(off['latency_p99_ms'], 2)} | | |")
    lines.append(f"| gateway's own CPU % / cores busy % (gateway core) | {cell(full['own_cpu_pct'])} / "
                 f"{cell(full['gateway_core_busy_pct'])} | {cell(off['own_cpu_pct'])} / "
                 f"{cell(off['gateway_core_busy_pct'])} | | |")
    lines.append(f"| NATS server CPU per request at the ceiling, ms | {cell(full['nats_ms_per_request'], 3)} | "
                 f"{cell(off['nats_ms_per_request'], 3)} | | |")
    lines.append(f"| side core busy % (load generator, mock, NATS) | {cell(full['side_core_busy_pct'])} | "
                 f"{cell(off['side_core_busy_pct'])} | | |")
    lines.append(f"| errors | {full['errors'] or 'none'} | {off['errors'] or 'none'} | | |")
    lines += ["", "Per round:", "", "| round | order | full req/s | off req/s | full/off | full CPU ms/req | "
              "off CPU ms/req | CPU off/full | events published (full / off) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, r in enumerate(report["rounds"], 1):
        f, o = r["results"]["capture-full"], r["results"]["capture-off"]
        lines.append(
            f"| {k} | {' → '.join(n.removeprefix('capture-') for n in r['order'])} | {f['achieved_rate']:,.0f} | "
            f"{o['achieved_rate']:,.0f} | {r['throughput_ratio']} | {(f.get('cpu') or {}).get('ms_per_request')} | "
            f"{(o.get('cpu') or {}).get('ms_per_request')} | {r['cpu_ratio']} | "
            f"{f['events_published']:,.0f} / {o['events_published']:,.0f} |")
    fixed = report.get("fixed")
    if fixed:
        fr = report["fixed_cpu_ratio"]
        ff, fo = full["fixed"], off["fixed"]
        lines += ["", f"Fixed rate, {meta['rate']:g} req/s open loop, {meta['chat_rounds']} rounds x "
                  f"{meta['duration']:g} s (medians, range in brackets):", "",
                  "| figure | capture full | capture off | off / full |", "| --- | --- | --- | --- |",
                  f"| gateway CPU per request, ms | {cell(ff['cpu_ms_per_request'], 3)} | "
                  f"{cell(fo['cpu_ms_per_request'], 3)} | **{cell(fr, 3) if fr else '-'}** |",
                  f"| of which user / system, ms | {cell(ff['user_ms_per_request'], 3)} / "
                  f"{cell(ff['sys_ms_per_request'], 3)} | {cell(fo['user_ms_per_request'], 3)} / "
                  f"{cell(fo['sys_ms_per_request'], 3)} | |",
                  f"| NATS server CPU per request, ms | {cell(ff['nats_ms_per_request'], 3)} | "
                  f"{cell(fo['nats_ms_per_request'], 3)} | |",
                  f"| latency p50 / p99, ms | {cell(ff['latency_p50_ms'], 2)} / {cell(ff['latency_p99_ms'], 2)} | "
                  f"{cell(fo['latency_p50_ms'], 2)} / {cell(fo['latency_p99_ms'], 2)} | |",
                  f"| cores busy % (gateway core / side core) | {cell(ff['gateway_core_busy_pct'])} / "
                  f"{cell(ff['side_core_busy_pct'])} | {cell(fo['gateway_core_busy_pct'])} / "
                  f"{cell(fo['side_core_busy_pct'])} | |", "",
                  "| round | order | direct p50 ms | full p50 / p99 ms | off p50 / p99 ms | full CPU ms/req | "
                  "off CPU ms/req | off/full |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k, r in enumerate(fixed, 1):
            res = r["results"]

            def lat(name: str, res: dict[str, Any] = res) -> str:
                x = res[name].get("latency_ms") or {}
                return f"{x.get('p50')} / {x.get('p99')}"

            lines.append(f"| {k} | {' → '.join(n.removeprefix('capture-') for n in r['order'])} | "
                         f"{(res['direct'].get('latency_ms') or {}).get('p50')} | {lat('capture-full')} | "
                         f"{lat('capture-off')} | {(res['capture-full'].get('cpu') or {}).get('ms_per_request')} | "
                         f"{(res['capture-off'].get('cpu') or {}).get('ms_per_request')} | {r['cpu_ratio']} |")
    lines += ["", f"Spool left at the end (should be 0: NATS was up throughout): {report['spool_bytes_left']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
