"""``nexus rules test [FILE]`` and ``nexus rules scan [--jsonl] [--rules FILE]``.

``test`` compiles the packaged packs (or one pack file, or a directory of
packs) and checks every rule's examples and counterexamples; it exits 1 on
any failure and 2 when the packs do not load or compile.  ``scan`` reads stdin
and prints what the rules find: a table for plain text, or one JSON object per
input line with ``--jsonl`` (``{"id", "text"}`` in, ``{"id", "detections"}``
out, character offsets into ``text``).

Compiled databases are cached under ``--cache-dir`` (default
``$NEXUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/nexus``, else ``~/.cache/nexus``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from nexus.policy.rules import Rule, RulePackError, all_rules, load_pack_file, load_packs
from nexus.policy.scan import CompileError, Match, Scanner


def add_parser(subparsers: Any) -> None:
    """Add ``rules`` and its subcommands to the ``nexus`` argument parser."""
    rules = subparsers.add_parser("rules", help="rule packs: self-test and ad-hoc scanning")
    sub = rules.add_subparsers(dest="rules_command", required=True, metavar="RULES_COMMAND")

    def cache_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="where compiled databases are cached (default: ~/.cache/nexus or $NEXUS_CACHE_DIR)")

    test = sub.add_parser("test", help="compile the packs and check every example and counterexample",
                          description="Compile the packs and check every example and counterexample.")
    test.add_argument("file", nargs="?", type=Path, metavar="FILE",
                      help="a pack file or directory (default: the packaged packs)")
    cache_arg(test)
    test.set_defaults(func=run_test)

    scan = sub.add_parser("scan", help="scan stdin and print the matches",
                          description="Scan stdin and print the matches.")
    scan.add_argument("--jsonl", action="store_true",
                      help='read {"id", "text"} lines and write {"id", "detections"} lines')
    scan.add_argument("--rules", type=Path, metavar="FILE",
                      help="a pack file or directory instead of the packaged packs")
    cache_arg(scan)
    scan.set_defaults(func=run_scan)


def default_cache_dir() -> Path:
    if env := os.environ.get("NEXUS_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nexus"


def _load(source: Path | None) -> list[Rule]:
    if source is None:
        return all_rules(load_packs())
    if source.is_dir():
        return all_rules(load_packs(source))
    return list(load_pack_file(source).rules)


def _build(args: argparse.Namespace, source: Path | None) -> tuple[list[Rule], Scanner] | None:
    try:
        rules = _load(source)
        scanner = Scanner.build(rules, cache_dir=args.cache_dir or default_cache_dir())
    except (RulePackError, CompileError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return None
    return rules, scanner


def run_test(args: argparse.Namespace) -> int:
    from nexus.policy.scan.selftest import check_rules

    started = time.perf_counter()
    built = _build(args, args.file)
    if built is None:
        return 2
    rules, scanner = built
    failures = check_rules(scanner, rules)
    for failure in failures:
        print(failure.describe())
    examples = sum(len(r.examples) for r in rules)
    counter = sum(len(r.counterexamples) for r in rules)
    packs = len({r.pack for r in rules})
    verdict = f"{len(failures)} failure(s)" if failures else "ok"
    print(f"{len(rules)} rules in {packs} pack(s), {examples} examples, {counter} counterexamples: {verdict} "
          f"({time.perf_counter() - started:.1f}s)")
    return 1 if failures else 0


def run_scan(args: argparse.Namespace) -> int:
    built = _build(args, args.rules)
    if built is None:
        return 2
    _rules, scanner = built
    if args.jsonl:
        return _scan_jsonl(scanner, sys.stdin, sys.stdout)
    text = sys.stdin.buffer.read().decode("utf-8", "replace")
    _print_table(text, scanner.scan(text), sys.stdout)
    return 0


def _scan_jsonl(scanner: Scanner, src: TextIO, out: TextIO) -> int:
    status = 0
    for lineno, line in enumerate(src, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            text = doc["text"]
            if not isinstance(text, str):
                raise TypeError("'text' must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            print(f"line {lineno}: {exc}", file=sys.stderr)
            status = 1
            continue
        detections = [
            {"category": m.category, "rule": m.rule_id, "severity": m.severity, "start": m.start, "end": m.end}
            for m in scanner.scan(text)
        ]
        out.write(json.dumps({"id": doc.get("id"), "detections": detections}, ensure_ascii=False) + "\n")
        out.flush()
    return status


def _print_table(text: str, matches: list[Match], out: TextIO) -> None:
    if not matches:
        print("no matches", file=out)
        return
    print(f"{'start':>7} {'end':>7}  {'severity':<8} {'category':<18} {'rule':<42} text", file=out)
    for m in matches:
        excerpt = text[m.start:m.end].replace("\n", "\\n")
        if len(excerpt) > 40:
            excerpt = excerpt[:37] + "..."
        print(f"{m.start:>7} {m.end:>7}  {m.severity:<8} {m.category:<18} {m.rule_id:<42} {excerpt}", file=out)
