"""Cache hit latency through the gateway against a miss straight to the mock provider, in one run.  Not a test.

Three modes, each with its own prompt:

  exact          a non-streaming chat completion answered from the exact cache
  exact-stream   a streamed one, replayed byte for byte from a recorded stream
  semantic       a paraphrase (cosine >= the default 0.96 threshold under the mock's embeddings) of a stored
                 question, answered from the semantic cache (embedding + search + exact-cache read)

and three targets per mode, measured in interleaved rounds whose order rotates:

  direct-llm     the same request straight to the mock, with an LLM-like profile per request
                 (x-mock-ttft-ms 200, 5 chunks 20 ms apart): what a miss costs against a real provider
  direct-zero    the same request straight to the zero-latency mock: the floor of any upstream call
  nexus-hit      through the gateway (exact + semantic cache on), with the LLM-like knobs still sent, so a
                 request that missed would show up as ~300 ms

Open loop at ``--rate`` per target (``bench/loadgen.py``'s ``run_load``, in this process, pinned to the side
core), latency from the scheduled send time.  The storage, processes and pinning are ``bench/run.py``'s (same
helpers): a fresh ``nexus_bench_cache`` database, the mock on the side core, one gateway on the gateway core.
Before measuring, one request per mode checks the gateway answers it from the cache (``X-Nexus-Cache: hit`` /
``semantic``); the gateway's semantic-lookup counters (``/metrics``) are read around each semantic run, so
lookups that ran over the 20 ms budget (and went upstream) are reported, not hidden.

    .venv/bin/python bench/cache.py                 # 3 rounds x 5 s per target and mode: ~3 minutes
    .venv/bin/python bench/cache.py --quick         # 1 round x 2 s

Results: ``bench/results/<date>-cache.json`` and ``.md``.  Every process it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

import loadgen
import run
from nexus.crypto import secretfiles
from nexus.net.http1.client import HttpClient

BENCH_DB = f"postgresql://{run.HOST}:5432/nexus_bench_cache"
LLM_KNOBS = {"x-mock-ttft-ms": "200", "x-mock-chunks": "5", "x-mock-chunk-delay-ms": "20"}
# Prose, so the prompt reads like a user's (and is not one repeated byte).
PROMPT = ("the quarterly report shows revenue growth in every region while costs stayed flat; please summarise the "
          "key points for the board and list the risks we should watch")
QUESTION = "What is the capital city of France and what is its population?"
PARAPHRASE = "What is the capital city of France and what is its population today?"
TARGETS = ("direct-llm", "direct-zero", "nexus-hit")
MODES = ("exact", "exact-stream", "semantic")


@attrs.frozen
class Mode:
    name: str
    stream: bool
    stored: bytes  # the request whose answer the cache holds
    measured: bytes  # the request measured (the same one, or a paraphrase)
    expect: str  # X-Nexus-Cache of a measured request through the gateway


def chat(prompt: str, system: str, model: str, stream: bool) -> bytes:
    return json.dumps({"model": model, "stream": stream, "temperature": 0, "max_tokens": 64, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": prompt}]}).encode()


def modes(model: str) -> list[Mode]:
    prose = PROMPT
    return [
        Mode("exact", False, chat(prose, "bench exact", model, False), chat(prose, "bench exact", model, False),
             "hit"),
        Mode("exact-stream", True, chat(prose, "bench stream", model, True),
             chat(prose, "bench stream", model, True), "hit"),
        Mode("semantic", False, chat(QUESTION, "bench semantic", model, False),
             chat(PARAPHRASE, "bench semantic", model, False), "semantic"),
    ]


def _headers(pairs: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.lower().encode(), v.encode()) for k, v in pairs.items())


def semantic_counts(gateway: str) -> dict[str, float]:
    """The gateway's ``nexus_semantic_cache_lookups_total`` by result."""
    _status, text = run.http("GET", gateway + "/metrics")
    pattern = rb'^nexus_semantic_cache_lookups_total\{result="([a-z_]+)"\} (\S+)$'
    return {k.decode(): float(v) for k, v in re.findall(pattern, text, re.M)}


def load(url: str, body: bytes, headers: dict[str, str], stream: bool, args: argparse.Namespace,
         pid: int | None) -> dict[str, Any]:
    spec = loadgen.LoadSpec(url=url, body=body, headers=_headers({"content-type": "application/json", **headers}),
                            rate=args.rate, duration=args.duration, warmup=args.warmup, connections=64,
                            timeout=args.timeout, stream=stream, cpu_pid=pid)
    return trio.run(loadgen.run_load, spec).as_json()


def check(status: int, answer: bytes, what: str) -> None:
    if status != 200:
        raise run.BenchError(f"{what} answered {status}: {answer[:300]!r}")


def measure(args: argparse.Namespace, state: Path, procs: run.Processes) -> dict[str, Any]:
    notes: list[str] = ["A semantic hit is an exact-cache miss (one Valkey round trip), one embedding call to the "
                        "mock (on the busy side core), an in-memory search and the exact-cache read of the "
                        "neighbour's answer; an exact hit is one Valkey round trip."]
    idle = run.wait_quiet(args.wait_quiet)
    busy = {n: u["busy_pct"] for n, u in idle.items() if u["busy_pct"] > run.QUIET_PCT}
    if busy:
        notes.append("Cores busy before the start: " + ", ".join(f"{n} {p:.0f} %" for n, p in sorted(busy.items()))
                     + ": other work shared the box, so absolute figures and tails are noisier than on a quiet one;"
                     " the ratios within a round are the figures to read.")
    db = os.environ.get("NEXUS_DATABASE_URL") or BENCH_DB
    secrets = Path(os.environ.get("NEXUS_SECRETS_DIR") or state / "secrets")
    secretfiles.ensure(secrets)
    mock_port, gateway_port = run.free_port(), run.free_port()
    mock, gateway = f"http://{run.HOST}:{mock_port}", f"http://{run.HOST}:{gateway_port}"
    config = state / "bench-cache.toml"
    run.write_config(config, db=db, secrets=secrets, state=state, gateway_port=gateway_port, mock_port=mock_port)
    env = run.daemon_env(config)
    if "NEXUS_DATABASE_URL" not in os.environ:
        run.recreate_database(db)
    run.nexus_cli(["db", "migrate"], env)
    seeded = json.loads(run.nexus_cli(["db", "seed-demo", "--json", "--mock-url", mock], env).strip().splitlines()[-1])
    procs.start("mock-provider", [sys.executable, "-m", "nexus", "mock-provider"], env, args.side_core)
    run.wait_ready(procs, "mock-provider", f"{mock}/readyz", 30)
    gw_env = {**env, "NEXUS_GATEWAY__FORWARD_HEADERS": '["x-mock-"]', "NEXUS_GATEWAY__CACHE__ENABLED": "true",
              "NEXUS_GATEWAY__CACHE__SEMANTIC__ENABLED": "true",
              "NEXUS_GATEWAY__CACHE__SEMANTIC__EMBEDDING_MODEL": "mock-embedding"}
    procs.start("gateway", [sys.executable, "-m", "nexus", "gateway"], gw_env, args.gateway_core)
    run.wait_ready(procs, "gateway", f"{gateway}/readyz", 60)
    gw_pid = procs.procs["gateway"].pid
    key = {"authorization": f"Bearer {seeded['virtual_key']}"}

    results: dict[str, Any] = {}
    for mode in modes("mock-gpt"):
        direct_body = mode.measured.replace(b'"mock-gpt"', b'"gpt-4o-mini"')
        gw_headers = {**key, **LLM_KNOBS, **({"x-nexus-semantic-cache": "on"} if mode.name == "semantic" else {})}
        for body in (mode.stored, mode.measured):  # store, then check the measured request is answered from cache
            status, answer = run.http("POST", gateway + run.CHAT_PATH, body,
                                      {**gw_headers, "content-type": "application/json"}, timeout=10)
            check(status, answer, f"the gateway ({mode.name})")
        probe = trio.run(_cache_header, gateway + run.CHAT_PATH, mode.measured, gw_headers)
        if probe != mode.expect:
            raise run.BenchError(f"{mode.name}: the measured request got X-Nexus-Cache {probe!r}, not {mode.expect!r}")
        targets = {
            "direct-llm": (mock + run.CHAT_PATH, direct_body, LLM_KNOBS, None),
            "direct-zero": (mock + run.CHAT_PATH, direct_body, {}, None),
            "nexus-hit": (gateway + run.CHAT_PATH, mode.measured, gw_headers, gw_pid),
        }
        rounds = []
        for r in range(args.rounds):
            order = TARGETS[r % 3:] + TARGETS[:r % 3]
            entry: dict[str, Any] = {"order": list(order)}
            for name in order:
                url, body, headers, pid = targets[name]
                before = semantic_counts(gateway) if name == "nexus-hit" else {}
                print(f"{mode.name}: round {r + 1}, {name}", flush=True)
                entry[name] = load(url, body, headers, mode.stream, args, pid)
                if name == "nexus-hit" and mode.name == "semantic":
                    after = semantic_counts(gateway)
                    entry["semantic_lookups"] = {k: after[k] - before.get(k, 0.0) for k in after
                                                 if after[k] != before.get(k, 0.0)}
            rounds.append(entry)
        results[mode.name] = {"rounds": rounds, "overall": overall(rounds, mode.stream)}
    now = datetime.datetime.now()
    return {
        "meta": {"name": "cache", "date": now.strftime("%Y-%m-%d"), "time": now.isoformat(timespec="seconds"),
                 "commit": run._commit(), "cpu": run._cpu_model(), "cores": os.cpu_count(),
                 "python": platform.python_version(), "rate": args.rate, "rounds": args.rounds,
                 "duration": args.duration, "warmup": args.warmup, "llm_knobs": LLM_KNOBS,
                 "gateway_core": args.gateway_core, "side_core": args.side_core, "cores_before_start": idle,
                 "gateway_rss_kib": loadgen.rss_kib(gw_pid)},
        "notes": notes, "modes": results,
    }


async def _cache_header(url: str, body: bytes, headers: dict[str, str]) -> str:
    async with HttpClient() as client:
        resp = await client.request("POST", url, list(_headers({"content-type": "application/json", **headers})),
                                    body)
        return resp.headers.get("x-nexus-cache") or ""


def _median(values: Sequence[float | None]) -> float | None:
    seen = [v for v in values if v is not None]
    return round(statistics.median(seen), 3) if seen else None


def overall(rounds: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in TARGETS:
        runs = [r[name] for r in rounds]

        def med(measure: str, q: str, runs: list[dict[str, Any]] = runs) -> float | None:
            return _median([(x[measure] or {}).get(q) for x in runs])

        out[name] = {
            "ok_pct": round(100 * sum(x["ok"] for x in runs) / max(1, sum(x["count"] for x in runs)), 2),
            "p50": med("latency_ms", "p50"), "p90": med("latency_ms", "p90"), "p99": med("latency_ms", "p99"),
            "ttft_p50": med("ttft_ms", "p50") if stream else None,
            "overhead_header_p50": med("overhead_header_ms", "p50"),
            "cpu_ms_per_request": _median([(x["cpu"] or {}).get("ms_per_request") for x in runs]),
            "errors": {k: sum(x["errors"].get(k, 0) for x in runs) for x in runs for k in x["errors"]},
        }
    hit, llm, zero = out["nexus-hit"]["p50"], out["direct-llm"]["p50"], out["direct-zero"]["p50"]
    out["ratio_llm_over_hit_p50"] = round(llm / hit, 1) if hit and llm else None
    out["hit_minus_zero_p50"] = round(hit - zero, 3) if hit is not None and zero is not None else None
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render(report: dict[str, Any]) -> str:
    m = report["meta"]
    lines = [f"# Cache benchmark {m['date']}", "",
             f"Commit `{m['commit'][:10]}{'+dirty' if m['commit'].endswith('+dirty') else ''}`, {m['cpu']}, "
             f"{m['cores']} cores, Python {m['python']}. Gateway pinned to core {m['gateway_core']}; mock provider "
             f"and load generator on core {m['side_core']}. Open loop at {m['rate']:g} req/s per target, "
             f"{m['rounds']} interleaved rounds x {m['duration']:g} s (+{m['warmup']:g} s warm-up), latency from the "
             "scheduled send time in ms, medians over rounds. direct-llm = the mock with TTFT 200 ms and 5 chunks "
             "20 ms apart (a miss against an LLM-like upstream); direct-zero = the zero-latency mock; nexus-hit = "
             "through the gateway, answered from the cache.", ""]
    lines += [f"- {n}" for n in report["notes"]] + [""]
    lines += ["| mode | hit p50 / p99 | direct-llm p50 / p99 | direct-zero p50 / p99 | direct-llm ÷ hit (p50) | "
              "hit - direct-zero (p50) | X-Nexus-Overhead-Ms p50 (hit) | gateway CPU ms/hit | ok % (hit) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in report["modes"].items():
        o = res["overall"]
        h, d, z = o["nexus-hit"], o["direct-llm"], o["direct-zero"]
        ttft = f" (TTFT {_fmt(h['ttft_p50'])} vs {_fmt(d['ttft_p50'])})" if h["ttft_p50"] is not None else ""
        lines.append(f"| {name}{ttft} | {_fmt(h['p50'])} / {_fmt(h['p99'])} | {_fmt(d['p50'])} / {_fmt(d['p99'])} | "
                     f"{_fmt(z['p50'])} / {_fmt(z['p99'])} | {_fmt(o['ratio_llm_over_hit_p50'], 1)}x | "
                     f"{_fmt(o['hit_minus_zero_p50'])} | {_fmt(h['overhead_header_p50'])} | "
                     f"{_fmt(h['cpu_ms_per_request'])} | {_fmt(h['ok_pct'], 2)} |")
    semantic = report["modes"].get("semantic")
    if semantic:
        counts: dict[str, float] = {}
        for r in semantic["rounds"]:
            for k, v in r.get("semantic_lookups", {}).items():
                counts[k] = counts.get(k, 0.0) + v
        seen = ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items()))
        lines += ["", "Semantic lookups during the measured runs (warm-up included), from the gateway's "
                  f"`nexus_semantic_cache_lookups_total`: {seen}. A lookup over the 20 ms budget goes upstream "
                  "and shows in the hit p99."]
    lines += ["", "Per round (p50 ms):", "", "| mode | round | order | nexus-hit | direct-llm | direct-zero |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, res in report["modes"].items():
        for i, r in enumerate(res["rounds"], 1):
            cells = [_fmt((r[t]["latency_ms"] or {}).get("p50")) for t in ("nexus-hit", "direct-llm", "direct-zero")]
            lines.append(f"| {name} | {i} | {' → '.join(r['order'])} | {' | '.join(cells)} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round of 2 s per target and mode")
    p.add_argument("--rate", type=float, default=50.0, help="req/s per target (open loop)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--gateway-core", type=int, default=0)
    p.add_argument("--side-core", type=int, default=1)
    p.add_argument("--state-dir", default=str(run.ROOT / ".nexus" / "bench-cache"))
    p.add_argument("--results-dir", default=str(run.BENCH / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state = Path(args.state_dir).absolute()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / "var").mkdir(parents=True, exist_ok=True)
    if args.side_core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {args.side_core})  # the load generator runs in this process
    procs = run.Processes(state / "logs")
    with run._sigterm_as_exit():
        try:
            report = measure(args, state, procs)
        except (run.BenchError, OSError, secretfiles.SecretsError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{report['meta']['date']}-cache"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = render(report)
    stem.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"results: {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
