"""Markdown tables of a ``bench/run.py`` result.  Not a test.

``render_markdown(report)`` turns the JSON that ``run.py`` writes into the tables it
prints and stores beside it; run on its own it re-renders a stored result::

    .venv/bin/python bench/report.py bench/results/2026-01-01-nexus.json

Pure apart from that command line: reads a dict, returns a string.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_markdown"]


def _fmt(v: float | None, signed: bool = False, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _cell(m: dict[str, float] | None, signed: bool = False, digits: int = 2) -> str:
    """Median with the range over rounds when there was more than one distinct value."""
    if m is None:
        return "-"
    text = _fmt(m["median"], signed, digits)
    if m["min"] != m["max"]:
        text += f" ({_fmt(m['min'], signed, digits)}…{_fmt(m['max'], signed, digits)})"
    return text


def _get(entry: dict[str, Any], *path: str) -> Any:
    cur: Any = entry
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _cores(entry: dict[str, Any]) -> str:
    """Gateway core / side core busy %, and steal when there was any."""
    gw, side = entry.get("gateway_core_busy_pct"), entry.get("side_core_busy_pct")
    if gw is None and side is None:
        return "-"
    text = f"{_fmt(gw and gw['median'], digits=0)} / {_fmt(side and side['median'], digits=0)}"
    steal = entry.get("steal_pct")
    if steal and steal["median"] > 0:
        text += f", steal {_fmt(steal['median'], digits=1)}"
    return text


def _short(commit: str) -> str:
    head, plus, rest = commit.partition("+")
    return head[:10] + plus + rest


def _ok_pct(entry: dict[str, Any]) -> str:
    return f"{100 * entry['ok'] / entry['count']:.1f}" if entry["count"] else "-"


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"# Gateway benchmark {meta['date']} ({meta['name']})",
        "",
        f"Commit `{_short(meta['commit'])}`, {meta['cpu']}, {meta['cores']} cores, Python {meta['python']}. "
        f"Gateway and peers pinned to core {meta['gateway_core']}; mock provider and load generator on core "
        f"{meta['side_core']}. Open loop at a fixed rate, latency from the scheduled send time; "
        f"{meta['rounds']} interleaved rounds x {meta['duration']} s (+{meta['warmup']} s warm-up), "
        f"{meta['body_kb']} KiB chat body; each figure is the median over rounds (range in brackets). "
        "'cores busy %' is how busy the gateway core / the side core were during the measurement, whoever "
        "used them: on a direct row the gateway core should be idle, so anything there is outside load.",
        "",
    ]
    lines += [f"- {note}" for note in report["notes"]]
    if report["notes"]:
        lines.append("")
    for scen in report["scenarios"].get("chat", []):
        lines += [f"## Non-streaming chat at {scen['rate']:g} req/s", "",
                  "| target | ok % | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | overhead p50 | overhead p99 "
                  "| service-time overhead p50 / p99 | X-Nexus-Overhead-Ms mean | CPU ms/req | cores busy % |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in scen["overall"].items():
            lat = e.get("latency_ms") or {}
            svc = (_cell(_get(e, "overhead_ms", "service_ms_p50"), True, 3) + " / "
                   + _cell(_get(e, "overhead_ms", "service_ms_p99"), True, 3)) if name != "direct" else "-"
            lines.append(
                f"| {name} | {_ok_pct(e)} | {_cell(e['achieved_rate'], digits=0)} | {_cell(lat.get('p50'), digits=3)} "
                f"| {_cell(lat.get('p90'), digits=3)} | {_cell(lat.get('p99'), digits=3)} "
                f"| {_cell(lat.get('p999'), digits=3)} "
                f"| {_cell(_get(e, 'overhead_ms', 'latency_ms_p50'), True, 3)} "
                f"| {_cell(_get(e, 'overhead_ms', 'latency_ms_p99'), True, 3)} | {svc} "
                f"| {_cell(_get(e, 'overhead_header_ms', 'mean'), digits=3)} "
                f"| {_cell(e.get('cpu_ms_per_request'), digits=3)} | {_cores(e)} |")
        lines += ["", *_round_table(scen, ("latency_ms",)), ""]
    scen = report["scenarios"].get("stream")
    if scen:
        lines += [f"## Streaming at {scen['rate']:g} req/s (mock: TTFT {meta['stream_ttft_ms']} ms, "
                  f"{meta['stream_chunks']} chunks {meta['stream_chunk_delay_ms']} ms apart)", "",
                  "| target | ok % | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms "
                  "| TTFT overhead p50 | TTFT overhead p99 | total overhead p50 | CPU ms/req | cores busy % |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in scen["overall"].items():
            ttft = e.get("ttft_ms") or {}
            lat = e.get("latency_ms") or {}
            lines.append(
                f"| {name} | {_ok_pct(e)} | {_cell(ttft.get('p50'), digits=2)} | {_cell(ttft.get('p99'), digits=2)} "
                f"| {_cell(lat.get('p50'), digits=2)} | {_cell(lat.get('p99'), digits=2)} "
                f"| {_cell(_get(e, 'overhead_ms', 'ttft_ms_p50'), True, 3)} "
                f"| {_cell(_get(e, 'overhead_ms', 'ttft_ms_p99'), True, 3)} "
                f"| {_cell(_get(e, 'overhead_ms', 'latency_ms_p50'), True, 3)} "
                f"| {_cell(e.get('cpu_ms_per_request'), digits=3)} | {_cores(e)} |")
        lines += ["", *_round_table(scen, ("ttft_ms",)), ""]
    mx = report["scenarios"].get("max")
    if mx:
        lines += [f"## Maximum throughput (closed loop, {meta['max_conns']} connections, "
                  f"{meta['max_runs']} x {meta['max_duration']} s)", "",
                  "| target | req/s | CPU ms/req | p50 ms | p99 ms | errors | target's own CPU % | cores busy % |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in mx.items():
            lines.append(f"| {name} | {_cell(e['achieved_rate'], digits=0)} "
                         f"| {_cell(e['cpu_ms_per_request'], digits=3)} | {_cell(e['latency_p50_ms'], digits=2)} "
                         f"| {_cell(e['latency_p99_ms'], digits=2)} | {e['errors'] or 'none'} "
                         f"| {_cell(e.get('own_cpu_pct'), digits=0)} | {_cores(e)} |")
        lines.append("")
    mem = report.get("gateway_memory")
    if mem:
        lines += ["## Gateway memory", "", "| when | RSS MiB | peak RSS MiB |", "| --- | --- | --- |"]
        for when, v in mem.items():
            lines.append(f"| {when} | {v.get('VmRSS', 0) / 1024:.1f} | {v.get('VmHWM', 0) / 1024:.1f} |")
        lines.append("")
    return "\n".join(lines)


def _round_table(scen: dict[str, Any], measures: Sequence[str]) -> list[str]:
    m = measures[0]
    names = [n for n in scen["overall"] if n != "direct"]
    if not names:
        return []
    head = "| round | order | direct p50 / p99 | " + " | ".join(
        f"{n} p50 / p99 | {n} overhead p50 / p99" for n in names) + " |"
    lines = [f"Per round ({m.removesuffix('_ms')}, ms):", "", head,
             "| " + " | ".join(["---"] * (3 + 2 * len(names))) + " |"]
    for k, r in enumerate(scen["rounds"], 1):
        d = r["results"]["direct"].get(m) or {}
        cells = [str(k), " → ".join(r["order"]), f"{_fmt(d.get('p50'), digits=3)} / {_fmt(d.get('p99'), digits=3)}"]
        for n in names:
            x = r["results"][n].get(m) or {}
            o = r["overhead_ms"][n]
            cells.append(f"{_fmt(x.get('p50'), digits=3)} / {_fmt(x.get('p99'), digits=3)}")
            cells.append(f"{_fmt(o.get(m + '_p50'), True, 3)} / {_fmt(o.get(m + '_p99'), True, 3)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path, help="a JSON file written by bench/run.py")
    args = parser.parse_args(argv)
    print(render_markdown(json.loads(args.result.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
