"""Memory soak of the gateway while NATS is down: steady load, full capture, the spool growing.  Not a test.

    .venv/bin/python bench/audit_soak.py [--duration 600] [--rate 200] [--body-kb 2] [--sample 10]

What it does:

1. Storage: a fresh database ``nexus_bench_soak`` on the local PostgreSQL (dropped and created
   again; ``$NEXUS_SOAK_DATABASE_URL`` to use another), migrated and seeded with the demo key
   and mock models; Valkey is the configured one; NATS is a *private* server of its own under
   the state directory, so stopping it disturbs nobody.
2. Processes (``bench/run.py``'s helpers): the mock provider and the load generator on the
   side core, one gateway on the gateway core with ``[audit] capture = "full"`` (the default)
   and its spool and spill directories under the state directory.
3. The gateway answers one chat completion with NATS up; then NATS is stopped and the load
   generator sends ``--rate`` non-streaming chat completions per second of ``--body-kb`` KiB
   for ``--duration`` seconds (open loop).  Every ``--sample`` seconds: the gateway's RSS
   (``/proc``), its CPU, the spool's size on disk and the emitter's metrics (``/metrics``).
4. NATS is started again and the spool's replay is followed (RSS too) until it is empty or
   ``--drain-timeout`` passes.
5. ``<out>.json`` (every sample) and ``<out>.md`` (the tables), ``--out`` defaulting to
   ``bench/results/<date>-audit-soak``.

Memory is "flat" when the RSS over the load, after its first minute, moves by at most 10 %
(performance.md: ±10 % over a soak) and its fitted slope is under 1 MiB per minute.

Resource handling: every process it starts (and the private NATS) is stopped on exit,
error, Ctrl-C or SIGTERM, and the private stream's files are deleted.  Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import loadgen
import run as bench
from nexus.devstack.services import PrivateNats

SOAK_DB = f"postgresql://{bench.HOST}:5432/nexus_bench_soak"
METRICS = ("nexus_audit_spool_bytes", "nexus_audit_queue_bytes", "nexus_audit_events_total",
           "nexus_audit_events_lost_total")


def metrics(base: str) -> dict[str, float]:
    """The emitter's figures from the gateway's /metrics (label sets flattened into the name)."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(METRICS):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def dir_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    total = files = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
                files += 1
        except OSError:
            continue
    return total, files


def sample(t0: float, phase: str, pid: int, base: str, spool: Path) -> dict[str, Any]:
    rss = loadgen.rss_kib(pid)
    spool_bytes, segments = dir_bytes(spool)
    m = metrics(base)
    return {
        "t": round(time.monotonic() - t0, 1), "phase": phase, "rss_kib": rss.get("VmRSS"), "hwm_kib": rss.get("VmHWM"),
        "cpu_s": round(loadgen.cpu_seconds(pid), 2), "spool_bytes": spool_bytes, "spool_segments": segments,
        "queue_bytes": m.get("nexus_audit_queue_bytes"),
        "accepted": m.get('nexus_audit_events_total{stage="accepted"}'),
        "spooled": m.get('nexus_audit_events_total{stage="spooled"}'),
        "published": m.get('nexus_audit_events_total{stage="published"}'),
        "replayed": m.get('nexus_audit_events_total{stage="replayed"}'),
        "lost": sum(v for k, v in m.items() if k.startswith("nexus_audit_events_lost_total")),
        "load_1m": os.getloadavg()[0],
    }


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def summarize(samples: list[dict[str, Any]], result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    load = [s for s in samples if s["phase"] == "load" and s["rss_kib"]]
    settled = [s for s in load if s["t"] - load[0]["t"] >= 60] or load
    rss = [s["rss_kib"] / 1024 for s in settled]
    start_t = load[0]["t"]
    slope = slope_per_minute([(s["t"], s["rss_kib"] / 1024) for s in settled])
    spread = (max(rss) - min(rss)) / min(rss) * 100 if rss else 0.0
    last = load[-1]
    spool_rate = slope_per_minute([(s["t"], s["spool_bytes"] / 2**20) for s in load])
    drain = [s for s in samples if s["phase"] == "drain"]
    drained = next((s for s in drain if s["spool_bytes"] == 0), None)
    return {
        "rss_first_mib": round(load[0]["rss_kib"] / 1024, 1),
        "rss_after_1min_mib": round(rss[0], 1), "rss_end_mib": round(rss[-1], 1),
        "rss_min_mib": round(min(rss), 1), "rss_max_mib": round(max(rss), 1),
        "rss_spread_pct": round(spread, 1), "rss_slope_mib_per_min": round(slope, 3),
        "flat": spread <= 10.0 and abs(slope) < 1.0,
        "spool_end_mib": round(last["spool_bytes"] / 2**20, 1), "spool_segments_end": last["spool_segments"],
        "spool_growth_mib_per_min": round(spool_rate, 2),
        "load_seconds": round(last["t"] - start_t, 1),
        "drain_seconds": round(drained["t"] - drain[0]["t"], 1) if drained and drain else None,
        "rss_after_drain_mib": round(drain[-1]["rss_kib"] / 1024, 1) if drain else None,
        "lost": last["lost"], "ok": result.get("ok"), "count": result.get("count"),
        "errors": result.get("errors"), "achieved_rate": result.get("achieved_rate"),
        "latency_ms": result.get("latency_ms"), "gateway_cpu_ms_per_request": (result.get("cpu") or {}).get(
            "ms_per_request"), "cores": result.get("cores"), "rate": args.rate, "body_kb": args.body_kb,
    }


def render(report: dict[str, Any]) -> str:
    s, meta = report["summary"], report["meta"]
    lat = s["latency_ms"] or {}
    lines = [
        f"# Gateway memory soak with NATS down ({meta['date']})",
        "",
        f"One gateway process (core {meta['gateway_core']}), full body capture, `loss_mode = \"spill\"`, its NATS "
        f"(a private server) stopped for the whole load: {s['rate']:g} req/s open loop, non-streaming chat of "
        f"{s['body_kb']:g} KiB, for {s['load_seconds']:.0f} s; mock provider and load generator on core "
        f"{meta['side_core']}.  RSS sampled every {meta['sample_s']:g} s.  Then NATS back and the spool replayed.",
        "",
        f"Commit {meta['commit']}; {meta['cpu']}, {meta['cores']} cores.  Other work on the box shows in the load "
        "average column; latency tails suffer from it, memory does not.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| requests ok / sent | {s['ok']} / {s['count']} (errors {s['errors'] or 'none'}) |",
        f"| achieved rate | {s['achieved_rate']:.1f} req/s |" if s["achieved_rate"] else "| achieved rate | - |",
        f"| latency p50 / p99 / max | {lat.get('p50', 0):.2f} / {lat.get('p99', 0):.2f} / {lat.get('max', 0):.1f} ms |",
        f"| gateway CPU per request | {s['gateway_cpu_ms_per_request']} ms |",
        f"| RSS at the first sample / after 1 min / at the end | {s['rss_first_mib']} / {s['rss_after_1min_mib']} / "
        f"{s['rss_end_mib']} MiB |",
        f"| RSS range after the first minute | {s['rss_min_mib']}-{s['rss_max_mib']} MiB "
        f"({s['rss_spread_pct']} %) |",
        f"| RSS slope after the first minute (least squares) | {s['rss_slope_mib_per_min']:+.3f} MiB/min |",
        f"| memory flat (±10 %, slope < 1 MiB/min) | {'yes' if s['flat'] else 'NO'} |",
        f"| spool at the end of the load | {s['spool_end_mib']} MiB in {s['spool_segments_end']} segment(s), "
        f"growing {s['spool_growth_mib_per_min']} MiB/min |",
        f"| events lost | {s['lost']:.0f} |",
        f"| spool replay once NATS was back | "
        f"{str(s['drain_seconds']) + ' s' if s['drain_seconds'] is not None else 'not finished'}; "
        f"RSS afterwards {s['rss_after_drain_mib']} MiB |",
        "",
        "## Samples",
        "",
        "| t (s) | phase | RSS MiB | spool MiB | segments | queue KiB | accepted | spooled | replayed | lost | "
        "load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in report["samples"]:
        lines.append(
            f"| {x['t']:.0f} | {x['phase']} | {(x['rss_kib'] or 0) / 1024:.1f} | {x['spool_bytes'] / 2**20:.1f} | "
            f"{x['spool_segments']} | {(x['queue_bytes'] or 0) / 1024:.0f} | {x['accepted'] or 0:.0f} | "
            f"{x['spooled'] or 0:.0f} | {x['replayed'] or 0:.0f} | {x['lost'] or 0:.0f} | {x['load_1m']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load with NATS down")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--body-kb", type=float, default=2.0)
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--drain-timeout", type=float, default=180.0)
    p.add_argument("--gateway-core", type=int, default=0)
    p.add_argument("--side-core", type=int, default=1)
    p.add_argument("--state-dir", default=str(bench.ROOT / ".nexus" / "bench-soak"))
    p.add_argument("--out", default=None, help="results path without suffix")
    args = p.parse_args()
    return bench.run_with_private_nats('soak', Path(args.state_dir), args.out, 'audit-soak',
                                       lambda state, procs, nats: soak(args, state, procs, nats), render)


def soak(args: argparse.Namespace, state: Path, procs: bench.Processes, nats: PrivateNats) -> dict[str, Any]:
    from nexus.crypto import secretfiles

    shutil.rmtree(state / "nats" / "jetstream", ignore_errors=True)
    nats.start()
    db = os.environ.get("NEXUS_SOAK_DATABASE_URL", SOAK_DB)
    secrets = state / "secrets"
    secretfiles.ensure(secrets)
    spool, spill = state / "var" / "spool", state / "var" / "spill"
    for d in (spool, spill):
        for f in d.rglob("*"):
            if f.is_file():
                f.unlink()
    mock_port, gateway_port = bench.free_port(), bench.free_port()
    mock_url, base = f"http://{bench.HOST}:{mock_port}", f"http://{bench.HOST}:{gateway_port}"
    config = state / "soak.toml"
    bench.write_config(config, db=db, secrets=secrets, state=state, gateway_port=gateway_port, mock_port=mock_port)
    with open(config, "a") as f:
        f.write(f'\n[audit]\ncapture = "full"\nloss_mode = "spill"\nspool_dir = "{spool}"\nspill_dir = "{spill}"\n')
    env = bench.daemon_env(config)
    env["NEXUS_NATS_URL"] = nats.url
    if "NEXUS_SOAK_DATABASE_URL" not in os.environ:
        bench.recreate_database(db)
    bench.nexus_cli(["db", "migrate"], env)
    seeded = json.loads(bench.nexus_cli(["db", "seed-demo", "--json", "--mock-url", mock_url], env)
                        .strip().splitlines()[-1])
    procs.start("mock-provider", [sys.executable, "-m", "nexus", "mock-provider"], env, args.side_core)
    bench.wait_ready(procs, "mock-provider", f"{mock_url}/readyz", 30)
    notes: list[str] = []
    gateway = bench.start_gateway(procs, env, gateway_port, seeded["virtual_key"], args.gateway_core, notes)
    if gateway is None or gateway.pid is None:
        raise bench.BenchError("; ".join(notes) or "gateway did not start")
    pid = gateway.pid
    t0 = time.monotonic()
    samples = [sample(t0, "start", pid, base, spool)]
    nats.stop()
    print(f"NATS stopped; {args.rate:g} req/s for {args.duration:g} s", flush=True)
    argv = [sys.executable, str(bench.LOADGEN), gateway.url, "--core", str(args.side_core), "--duration",
            str(args.duration), "--warmup", "0", "--timeout", "10", "--body-kb", str(args.body_kb),
            "--model", gateway.model, "--connections", "256", "--rate", str(args.rate), "--cpu-pid", str(pid)]
    for header in gateway.headers:
        argv += ["--header", header]
    with open(state / "logs" / "loadgen.err", "wb") as err:
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=bench.ROOT)
    next_at = time.monotonic() + args.sample
    while load.poll() is None:
        time.sleep(max(0.0, min(1.0, next_at - time.monotonic())))
        if time.monotonic() >= next_at:
            samples.append(sample(t0, "load", pid, base, spool))
            x = samples[-1]
            print(f"  t={x['t']:.0f}s rss {x['rss_kib'] / 1024:.1f} MiB spool {x['spool_bytes'] / 2**20:.1f} MiB "
                  f"accepted {x['accepted']} lost {x['lost']}", flush=True)
            next_at += args.sample
    out, _ = load.communicate()
    if load.returncode != 0:
        raise bench.BenchError(f"loadgen failed: {(state / 'logs' / 'loadgen.err').read_text()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    samples.append(sample(t0, "load", pid, base, spool))
    print("load done; NATS back, replaying the spool", flush=True)
    nats.start()
    deadline = time.monotonic() + args.drain_timeout
    samples.append(sample(t0, "drain", pid, base, spool))
    while time.monotonic() < deadline:
        time.sleep(5.0)
        samples.append(sample(t0, "drain", pid, base, spool))
        if samples[-1]["spool_bytes"] == 0:
            break
    if procs.procs["gateway"].poll() is not None:
        raise bench.BenchError(f"the gateway died: {procs.tail('gateway')}")
    report: dict[str, Any] = {
        "meta": {"date": datetime.date.today().isoformat(), "commit": bench._commit(), "cpu": bench._cpu_model(),
                 "cores": os.cpu_count(), "gateway_core": args.gateway_core, "side_core": args.side_core,
                 "sample_s": args.sample, "duration_s": args.duration},
        "loadgen": result,
        "samples": samples,
    }
    report["summary"] = summarize(samples, result, args)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
