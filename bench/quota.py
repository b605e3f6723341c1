"""What quota enforcement costs the gateway: the same process, one key under no quota and one under an RPM, a
TPM and a USD budget, measured in interleaved rounds of one run.  Not a test.

Built on ``run.py`` (storage, processes, interleaved rounds, the closed-loop ceiling) and ``report.py`` (the
tables); this script only adds the quota key and the comparison:

- the seeded demo key (no limits, no policy: the engine answers without a Valkey round trip) is ``nexus``;
- a second key with ``rpm`` and ``tpm`` (sliding 60 s windows) and a ``cost_micro_usd`` daily policy, limits
  far above what the run spends, is ``nexus+quota``: every request runs the reserve script over three
  counters and a reconciliation (write-behind by default; ``--sync`` sets ``NEXUS_QUOTA_WRITE_BEHIND=0``);
- ``direct`` is the mock alone, as in ``run.py``.

The quota cost is ``nexus+quota`` minus ``nexus`` within each round (p50, p99), the median over rounds, and the
ratio of the two ceilings.  ``/v1/usage`` of the quota key is read at the end to show the counters moved.

    .venv/bin/python bench/quota.py                       # 3 rounds x 10 s at 300 req/s, 2 ceiling runs: ~4 min
    .venv/bin/python bench/quota.py --quick               # smoke: under a minute
    .venv/bin/python bench/quota.py --rates 300,1000 --wait-quiet 300

Results: ``bench/results/<date>-<name>.json`` and ``.md`` (default name ``quota``).  Resource handling and
errors as in ``run.py``: every process started is stopped on exit; a failure to prepare exits 1 with the
reason.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg

import loadgen
import run as bench
from nexus.crypto import secretfiles, vkeys
from report import render_markdown

NO_QUOTA, QUOTA = "nexus", "nexus+quota"
# Far above anything a run spends: the figures are about the checking, not about refusals.
RPM, TPM, USD_MICRO = 1_000_000_000, 10**12, 10**15


def quota_key(db: str, secrets: Path, seeded: dict[str, Any]) -> str:
    """A second demo key with RPM, TPM and a daily USD budget."""
    key = vkeys.generate()
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "INSERT INTO virtual_key (key_hash, key_prefix, name, kind, org_id, project_id, rpm, tpm) "
            "VALUES (%s, %s, 'bench-quota', 'application', %s, %s, %s, %s) RETURNING id",
            (vkeys.hash_key(secretfiles.key_hmac_secret(secrets), key), vkeys.display_prefix(key),
             seeded["org_id"], seeded["project_id"], RPM, TPM)).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO quota_policy (name, axis, virtual_key_id, unit, window_kind, calendar_period, soft_limit, "
            "hard_limit) VALUES ('bench usd', 'virtual_key', %s, 'cost_micro_usd', 'calendar', 'day', %s, %s)",
            (row[0], USD_MICRO // 2, USD_MICRO))
    return key


def _median(values: Sequence[float | None]) -> dict[str, float] | None:
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"median": round(statistics.median(got), 4), "min": round(min(got), 4), "max": round(max(got), 4)}


def quota_cost(scenarios: dict[str, Any]) -> dict[str, Any]:
    """``nexus+quota`` minus ``nexus`` per round (the two were measured minutes apart at most), medians."""
    out: dict[str, Any] = {"chat": []}
    for scen in scenarios.get("chat", []):
        entry: dict[str, Any] = {"rate": scen["rate"]}
        for m in ("latency_ms", "service_ms"):
            for p in ("p50", "p99"):
                entry[f"{m}_{p}"] = _median([
                    (r["results"][QUOTA].get(m) or {}).get(p, 0) - (r["results"][NO_QUOTA].get(m) or {}).get(p, 0)
                    for r in scen["rounds"]])
        cpu = scen["overall"]
        a, b = cpu[QUOTA].get("cpu_ms_per_request"), cpu[NO_QUOTA].get("cpu_ms_per_request")
        entry["cpu_ms_per_request"] = round(a["median"] - b["median"], 4) if a and b else None
        entry["errors"] = {QUOTA: cpu[QUOTA]["errors"], NO_QUOTA: cpu[NO_QUOTA]["errors"]}
        out["chat"].append(entry)
    mx = scenarios.get("max")
    if mx and QUOTA in mx and NO_QUOTA in mx:
        q, n = mx[QUOTA]["achieved_rate"], mx[NO_QUOTA]["achieved_rate"]
        out["max"] = {
            "ratio": round(q["median"] / n["median"], 4) if q and n and n["median"] else None,
            "rates": {QUOTA: q, NO_QUOTA: n},
            "cpu_ms_per_request": {QUOTA: mx[QUOTA]["cpu_ms_per_request"],
                                   NO_QUOTA: mx[NO_QUOTA]["cpu_ms_per_request"]},
        }
    return out


def _cell(m: dict[str, float] | None, digits: int = 3) -> str:
    if m is None:
        return "-"
    text = f"{m['median']:+.{digits}f}"
    return text + (f" ({m['min']:+.{digits}f}…{m['max']:+.{digits}f})" if m["min"] != m["max"] else "")


def render_quota(report: dict[str, Any]) -> str:
    cost = report["quota_cost"]
    lines = [
        "## Quota enforcement: nexus+quota minus nexus",
        "",
        f"Same gateway process; `{QUOTA}` is a key with RPM + TPM (sliding 60 s) and a daily USD budget "
        f"(reconciliation {'synchronous' if report['meta']['sync'] else 'write-behind'}), `{NO_QUOTA}` a key "
        "under no quota. Differences within each round, median over rounds (range in brackets).",
        "",
        "| rate req/s | latency p50 | latency p99 | service p50 | service p99 | gateway CPU ms/req | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in cost["chat"]:
        lines.append(f"| {e['rate']:g} | {_cell(e['latency_ms_p50'])} | {_cell(e['latency_ms_p99'])} "
                     f"| {_cell(e['service_ms_p50'])} | {_cell(e['service_ms_p99'])} "
                     f"| {e['cpu_ms_per_request'] if e['cpu_ms_per_request'] is not None else '-'} "
                     f"| {e['errors'][QUOTA] or 'none'} |")
    mx = cost.get("max")
    if mx:
        r = mx["rates"]
        lines += ["", f"Maximum throughput, {QUOTA} / {NO_QUOTA}: **{mx['ratio']}** "
                      f"({r[QUOTA]['median']:,.0f} / {r[NO_QUOTA]['median']:,.0f} req/s)."]
    usage = report.get("quota_usage")
    if usage:
        lines += ["", "Counters of the quota key at the end (`GET /v1/usage`): "
                  + "; ".join(f"{p['policy']} {p['used']:,} {p['unit']}" for p in usage.get("policies", [])) + "."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="quota")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sync", action="store_true", help="NEXUS_QUOTA_WRITE_BEHIND=0 (reconcile before answering)")
    p.add_argument("--rates", type=bench._floats, default=[300.0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--max-duration", type=float, default=10.0)
    p.add_argument("--max-runs", type=int, default=2)
    p.add_argument("--max-conns", type=int, default=32)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--state-dir", default=str(bench.ROOT / ".nexus" / "bench-quota"))
    p.add_argument("--results-dir", default=str(bench.BENCH / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.max_duration, args.max_runs = 1, 2.0, 0.5, 3.0, 1
    return args


def measure_all(args: argparse.Namespace, state: Path, procs: bench.Processes) -> dict[str, Any]:
    s = bench.Settings(
        rounds=args.rounds, duration=args.duration, warmup=args.warmup, body_kb=1.0, connections=256, timeout=10.0,
        stream_rate=0.0, stream_ttft_ms=0, stream_chunk_delay_ms=0, stream_chunks=1, max_conns=args.max_conns,
        max_duration=args.max_duration, max_runs=args.max_runs, side_core=1, gateway_core=0)
    notes: list[str] = []
    idle = bench.wait_quiet(args.wait_quiet)
    busy = {n: u["busy_pct"] for n, u in idle.items() if u["busy_pct"] > bench.QUIET_PCT}
    if busy:
        notes.append("Something else was running before the start (" + ", ".join(
            f"{n} {pct:.0f} % busy" for n, pct in sorted(busy.items())) + "): the box is shared; compare the two "
            "keys within a round rather than with other runs.")
    given_db = os.environ.get("NEXUS_DATABASE_URL")
    db = given_db or bench.BENCH_DB.replace("nexus_bench", "nexus_bench_quota")
    secrets = Path(os.environ.get("NEXUS_SECRETS_DIR") or state / "secrets")
    secretfiles.ensure(secrets)
    mock_port, gateway_port = bench.free_port(), bench.free_port()
    mock_url = f"http://{bench.HOST}:{mock_port}"
    config = state / "bench.toml"
    bench.write_config(config, db=db, secrets=secrets, state=state, gateway_port=gateway_port, mock_port=mock_port)
    env = bench.daemon_env(config)
    if args.sync:
        env["NEXUS_QUOTA_WRITE_BEHIND"] = "0"
    if not given_db:
        bench.recreate_database(db)
    bench.nexus_cli(["db", "migrate"], env)
    seeded = json.loads(bench.nexus_cli(["db", "seed-demo", "--json", "--mock-url", mock_url],
                                        env).strip().splitlines()[-1])
    limited = quota_key(db, secrets, seeded)
    procs.start("mock-provider", [sys.executable, "-m", "nexus", "mock-provider"], env, s.side_core)
    bench.wait_ready(procs, "mock-provider", f"{mock_url}/readyz", 30)
    direct = bench.Target("direct", f"{mock_url}{bench.CHAT_PATH}", "gpt-4o-mini", [])
    gateway = bench.start_gateway(procs, env, gateway_port, seeded["virtual_key"], s.gateway_core, notes)
    if gateway is None:
        raise bench.BenchError("the gateway did not start: " + "; ".join(notes))
    limited_target = bench.Target(QUOTA, gateway.url, gateway.model, [f"Authorization: Bearer {limited}"],
                                  gateway.proc)
    status, answer = bench.http("POST", gateway.url, loadgen.chat_body(0.2, "mock-gpt"),
                                {"Authorization": f"Bearer {limited}", "Content-Type": "application/json"})
    problem = bench._chat_problem(status, answer, False)
    if problem:
        raise bench.BenchError(f"the quota key's chat completion {problem}")
    targets = [direct, gateway, limited_target]
    scenarios: dict[str, Any] = {"chat": []}
    for rate in args.rates:
        print(f"chat at {rate:g} req/s", flush=True)
        scenarios["chat"].append(bench.interleaved(targets, s, f"chat@{rate:g}", rate=rate, stream=False))
    print("max throughput", flush=True)
    # Alternate the two keys run by run, so drift over the run favours neither.
    runs = max(1, s.max_runs)
    single = attrs.evolve(s, max_runs=1)
    parts: dict[str, list[dict[str, Any]]] = {NO_QUOTA: [], QUOTA: []}
    for k in range(runs):
        for t in bench.rotated([gateway, limited_target], k):
            parts[t.name].append(bench.max_throughput([t], single)[t.name])
    scenarios["max"] = {name: _merge_max(entries) for name, entries in parts.items()}
    notes += bench.load_notes(scenarios)
    _, usage = bench.http("GET", gateway.url.replace(bench.CHAT_PATH, "/v1/usage"),
                          headers={"Authorization": f"Bearer {limited}"})
    now = datetime.datetime.now()
    report: dict[str, Any] = {
        "meta": {
            "name": args.name, "date": now.strftime("%Y-%m-%d"), "time": now.isoformat(timespec="seconds"),
            "commit": bench._commit(), "cpu": bench._cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "gateway_core": s.gateway_core, "side_core": s.side_core,
            "rounds": s.rounds, "duration": s.duration, "warmup": s.warmup, "body_kb": s.body_kb,
            "connections": s.connections, "timeout": s.timeout, "rates": args.rates, "max_conns": s.max_conns,
            "max_duration": s.max_duration, "max_runs": runs, "targets": [t.name for t in targets],
            "cores_before_start": idle, "sync": args.sync,
        },
        "notes": notes,
        "scenarios": scenarios,
        "quota_usage": json.loads(usage) if usage.startswith(b"{") else None,
    }
    report["quota_cost"] = quota_cost(scenarios)
    return report


def _merge_max(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``max_throughput`` entry from single-run entries (medians over the runs)."""
    runs = [r for e in entries for r in e["runs"]]
    merged = {key: _median([(e[key] or {}).get("median") for e in entries])
              for key in ("achieved_rate", "cpu_ms_per_request", "latency_p50_ms", "latency_p99_ms", "own_cpu_pct",
                          "gateway_core_busy_pct", "side_core_busy_pct", "steal_pct")}
    errors: dict[str, int] = {}
    for e in entries:
        for kind, n in e["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    return {"runs": runs, **merged, "errors": errors}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state = Path(args.state_dir).absolute()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "var").mkdir(parents=True, exist_ok=True)
    procs = bench.Processes(state / "logs")
    with bench._sigterm_as_exit():
        try:
            report = measure_all(args, state, procs)
        except (bench.BenchError, OSError, secretfiles.SecretsError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{report['meta']['date']}-{report['meta']['name']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = render_markdown(report) + "\n" + render_quota(report)
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"results: {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
