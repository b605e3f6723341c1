"""The Scanner: every enabled rule in one Hyperscan pass, then exact spans.  Synchronous.

``Scanner.build(rules)`` compiles (or loads from ``cache_dir``; ``None`` means
no disk cache) the databases once; ``scan`` and ``scan_bytes`` may then run
concurrently from any number of threads (each thread gets its own scratch),
and ``stream()`` opens an incremental scan for chunked bodies
(``nexus.policy.scan.stream``).  Scans release the GIL inside Hyperscan, so
callers move bodies of 64 KB and more to a worker thread.

Throughput on this 2-core box, all ~500 rules, 64 KB bodies: ~300 MB/s on
prose, ~190-240 MB/s on source code, falling with the number of findings and
near misses to confirm (about 3 µs each); ``bench/scan.py`` measures it.

Bodies that make Hyperscan report more than ``core.HIT_CAP`` matches halt the
first pass; the scanner then asks the single-match database which rules hit
at all and runs only those through Python ``re`` over the whole text, so the
cost stays linear in the body.

Errors: ``CompileError`` from ``build``; ``scan``/``scan_bytes`` never raise on
any input (invalid UTF-8, lone surrogates, NUL bytes, huge bodies).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import hyperscan

from nexus.policy.rules.model import Rule
from nexus.policy.scan import compile as hs_compile
from nexus.policy.scan.core import (
    CompiledRule,
    Hits,
    Match,
    Scratches,
    Span,
    confirm,
    encode,
    on_match,
    search_all,
    to_matches,
)
from nexus.policy.scan.stream import StreamScan

# Hyperscan takes a 32-bit length: longer bodies are scanned as a stream of slices.
BLOCK_LIMIT = 1 << 30
_SLICE_CHARS = 1 << 26


def rules_hash(rules: Sequence[Rule]) -> str:
    """SHA-256 over everything that changes what a scan reports."""
    doc = [[r.id, r.category, r.severity, r.pattern, sorted(r.flags), r.validator] for r in rules]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()


class Scanner:
    """Immutable after ``build``; share one per rule set across threads."""

    rules_hash: str

    def __init__(self, rules: Sequence[Rule], dbs: hs_compile.Databases) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.rules_hash = rules_hash(self.rules)
        self._compiled = tuple(CompiledRule.of(r) for r in self.rules)
        self._tail = max(c.width for c in self._compiled) + 1
        self._dbs = dbs  # the scratches borrow these: keep them alive here
        self._scratches = Scratches(dbs.block, dbs.single)

    @classmethod
    def build(cls, rules: Sequence[Rule], *, cache_dir: Path | None = None) -> Scanner:
        return cls(rules, hs_compile.build(rules, cache_dir))

    def scan(self, text: str) -> list[Match]:
        """Matches in ``text``, character offsets, validators applied, sorted by start."""
        if not text:
            return []
        return to_matches(self._compiled, self._spans(text, encode(text)))

    def scan_bytes(self, data: bytes) -> list[Match]:
        """Matches in raw bytes, byte offsets; invalid UTF-8 is scanned as-is, never raised on."""
        if not data:
            return []
        data = bytes(data)
        try:
            text = data.decode("utf-8")
            enc = data
        except UnicodeDecodeError:
            # Each undecodable byte becomes one escape character, and one '?' for Hyperscan.
            text = data.decode("utf-8", "surrogateescape")
            enc = encode(text)
        matches = to_matches(self._compiled, self._spans(text, enc))
        if len(text) == len(data):
            return matches
        return _to_byte_offsets(text, matches)

    def stream(self) -> StreamScan:
        """A new incremental scan; ``close()`` it to get the matches that end the stream."""
        return StreamScan(self._window_spans, self._compiled, self._tail)

    def _spans(self, text: str, enc: bytes) -> list[Span]:
        if len(enc) >= BLOCK_LIMIT:
            return self._spans_streamed(text)
        return self._window_spans(text, enc, 0, {})[0]

    def _window_spans(self, text: str, enc: bytes, floor: int, floors: dict[int, int]) -> tuple[list[Span], set[int]]:
        """Spans of hits ending after byte ``floor`` (``floors[rule]`` for some rules), and the rules
        with a hit at the very end of ``enc`` (a stream holds those back)."""
        hits: Hits = []
        try:
            self._dbs.block.scan(enc, match_event_handler=on_match, context=hits, scratch=self._scratches.block)
        except hyperscan.ScanTerminated:
            return self._spans_overflow(text, enc), set()
        size = len(enc)
        at_end = {rule for rule, end in hits if end == size}
        if floor or floors:
            hits = [(rule, end) for rule, end in hits if end > floors.get(rule, floor)]
        return confirm(self._compiled, text, enc, hits), at_end

    def _spans_overflow(self, text: str, enc: bytes) -> list[Span]:
        hits: Hits = []  # one report per rule at most, far below the cap
        self._dbs.single.scan(enc, match_event_handler=on_match, context=hits, scratch=self._scratches.single)
        out: list[Span] = []
        for idx in sorted({rule for rule, _ in hits}):
            out.extend(search_all(self._compiled[idx], idx, text))
        return out

    def _spans_streamed(self, text: str) -> list[Span]:
        stream = self.stream()
        out: list[Span] = []
        for i in range(0, len(text), _SLICE_CHARS):
            out.extend(stream.feed_spans(text[i:i + _SLICE_CHARS]))
        out.extend(stream.close_spans())
        return out


def _to_byte_offsets(text: str, matches: list[Match]) -> list[Match]:
    points = sorted({p for m in matches for p in (m.start, m.end)})
    offsets: dict[int, int] = {}
    prev_c = prev_b = 0
    for c in points:
        prev_b += len(text[prev_c:c].encode("utf-8", "surrogateescape"))
        prev_c = c
        offsets[c] = prev_b
    return [Match(m.rule_id, m.category, m.severity, offsets[m.start], offsets[m.end]) for m in matches]
