"""Scanner throughput: all rules in one Hyperscan pass versus the same patterns one by one in Python re.

Bodies of 1 KB, 64 KB and 1 MB in three mixes, repeated to size:
"typical" (this repository's Python sources and README: code and prose, with
one corpus near miss per ~4 KB), "near-miss" (only the corpus's benign prompts:
a version string, order number or role address every ~200 bytes) and "dense"
(every corpus prompt: a finding every ~80 bytes, the confirmation worst case).
Also reports the cost of a stream feed per chunk.  Not a test.

    .venv/bin/python bench/scan.py [--core 0] [--seconds 2] [--re-sizes 1024,65536] [--out results.json]

Prints one line per figure and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.policy.corpus_metrics import load_corpus  # noqa: E402

from nexus.policy.rules import all_rules, load_packs  # noqa: E402
from nexus.policy.rules.regex import compile_python  # noqa: E402
from nexus.policy.scan import Scanner  # noqa: E402

SIZES = (1024, 64 * 1024, 1024 * 1024)


def body(size: int, mix: str) -> str:
    samples = load_corpus()
    benign = [s.text for s in samples if not s.labels]
    if mix == "typical":
        sources = [p for p in sorted((ROOT / "daemons" / "nexus").rglob("*.py")) if "policy" not in p.parts]
        chunks = [p.read_text(encoding="utf-8") for p in sources] + [(ROOT / "README.md").read_text(encoding="utf-8")]
        text = "\n".join(chunks)
        parts = [text[i:i + 4096] + "\n" + benign[n % len(benign)] for n, i in enumerate(range(0, len(text), 4096))]
        text = "".join(parts)
    elif mix == "near-miss":
        text = "\n\n".join(benign)
    else:
        text = "\n\n".join(s.text for s in samples)
    return (text * (size // len(text) + 1))[:size]


def rate(fn: object, seconds: float) -> float:
    """Seconds per call, best of three rounds of at least ``seconds``/3 each."""
    assert callable(fn)
    best = float("inf")
    for _ in range(3):
        calls, started = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= seconds / 3:
                break
        best = min(best, elapsed / calls)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per Hyperscan figure")
    ap.add_argument("--re-sizes", default="1024,65536", help="body sizes to time with Python re (slow)")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".pytest_cache" / "d" / "nexus-hyperscan")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = ap.parse_args()
    if args.core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})

    rules = all_rules(load_packs())
    started = time.perf_counter()
    scanner = Scanner.build(rules, cache_dir=args.cache_dir)
    print(f"{len(rules)} rules ready in {time.perf_counter() - started:.2f}s (cache: {args.cache_dir})")
    patterns = [compile_python(r.pattern, r.flags) for r in rules]
    re_sizes = {int(s) for s in args.re_sizes.split(",") if s}

    results: dict[str, object] = {"rules": len(rules)}
    for mix, size in [(m, s) for m in ("typical", "near-miss", "dense") for s in SIZES]:
        text = body(size, mix)
        hs_s = rate(lambda text=text: scanner.scan(text), args.seconds)
        row: dict[str, float] = {"hyperscan_mb_s": size / hs_s / 1e6, "hyperscan_us": hs_s * 1e6,
                                 "matches": len(scanner.scan(text))}
        line = (f"{mix:>9} {size:>8} B  all rules, one pass: {row['hyperscan_mb_s']:8.1f} MB/s "
                f"({row['hyperscan_us']:9.1f} us)")
        if size in re_sizes:
            t0 = time.perf_counter()
            for pattern in patterns:
                for _ in pattern.finditer(text):
                    pass
            re_s = time.perf_counter() - t0
            row.update(re_mb_s=size / re_s / 1e6, re_us=re_s * 1e6, speedup=re_s / hs_s)
            line += f"   python re one by one: {row['re_mb_s']:6.3f} MB/s   speed-up {row['speedup']:6.0f}x"
        line += f"   matches {row['matches']}"
        print(line)
        results[f"{mix}_{size}"] = row

    text = body(200_000, "typical")
    for chunk in (20, 1000):
        chunks = [text[i:i + chunk] for i in range(0, len(text), chunk)]

        def feed_all(chunks: list[str] = chunks) -> None:
            stream = scanner.stream()
            for c in chunks:
                stream.feed(c)
            stream.close()

        per = rate(feed_all, args.seconds) / len(chunks)
        print(f"stream, {chunk:>4}-char chunks: {per * 1e6:6.1f} us per feed")
        results[f"stream_us_per_feed_{chunk}"] = per * 1e6
    summary = json.dumps(results)
    if args.out:
        args.out.write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
