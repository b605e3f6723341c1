"""Incremental scanning across chunk borders.  Synchronous.

A ``StreamScan`` keeps the last ``tail`` characters of the stream (the longest
match any rule can make, plus one character of context) and scans that tail
together with each new chunk in block mode.  Any match that ends in the new
chunk starts inside this window, so a secret split across any chunk borders is
found, with offsets counted in characters from the start of the whole stream.

A match that ends exactly at the end of what has arrived is held back until
the next chunk (or ``close()``): a following character could extend it, or
undo a ``\\b`` or ``$`` it ends with.  ``feed`` therefore reports a match one
chunk after its last character at the latest.  A match that a later chunk
extends (an optional suffix arriving late) is reported again, longer; the
spans overlap and a redaction covers both.  A match starting at the first
character of the window is ignored: that character is only there as context
for ``\\b`` and ``^``, and any real match ending in the new chunk starts later.

Why not Hyperscan stream mode: vectorscan 5.4.12 misses some matches whose
literal is split across stream writes (reproduced with
``\\.(?:Query|Exec|QueryRow)(?:Context)?\\s{0,2}\\(…`` cut after ``db.Q``),
and correctness across borders matters more than the bytes re-scanned.

Each feed only confirms the hits that end after what earlier feeds settled, so
a match sitting in the kept tail is not re-checked chunk after chunk.

Resource handling: nothing to close but Python objects; ``close()`` flushes the
held-back matches.  One task feeds a stream at a time; feeds may happen on
different threads.

Errors: ``feed``/``close`` never raise on any text; after ``close`` they return
no matches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nexus.policy.scan.core import CompiledRule, Match, Span, encode, to_matches

# (window, encode(window), byte floor, per-rule byte floors) -> (spans, rules with a hit at the window end)
WindowScan = Callable[[str, bytes, int, dict[int, int]], tuple[list[Span], set[int]]]


class StreamScan:
    def __init__(self, scan: WindowScan, rules: Sequence[CompiledRule], tail: int) -> None:
        self._scan = scan
        self._rules = rules
        self._tail = tail
        self._buf = ""     # the kept tail of the stream
        self._c0 = 0       # stream offset of self._buf[0]
        self._floor = -1   # hits ending at or before this stream offset are settled...
        self._low: dict[int, int] = {}  # ...except for these rules, held back at the last window end
        self._reported: set[tuple[int, int, int, int]] = set()  # (rule, start, end, match end) already out
        self._open = True

    def feed(self, text: str) -> list[Match]:
        return to_matches(self._rules, self.feed_spans(text))

    def close(self) -> list[Match]:
        return to_matches(self._rules, self.close_spans())

    def feed_spans(self, text: str) -> list[Span]:
        """``feed`` as ``core.Span`` tuples in stream offsets."""
        if not self._open or not text:
            return []
        window = self._buf + text
        end = self._c0 + len(window)
        spans, held = self._collect(window, end - 1)
        self._floor = end - 1
        # A hit at the window end may still grow, shrink or vanish: look at it, and
        # anything it could turn into, again on the next feed.
        self._low = {rule: end - 1 - self._rules[rule].width for rule in held}
        self._buf = window[-self._tail:]
        self._c0 = end - len(self._buf)
        self._reported = {key for key in self._reported if key[3] > self._c0}
        return spans

    def close_spans(self) -> list[Span]:
        if not self._open:
            return []
        self._open = False
        spans = self._collect(self._buf, self._c0 + len(self._buf))[0] if self._buf else []
        self._buf = ""
        return spans

    def _collect(self, window: str, last: int) -> tuple[list[Span], set[int]]:
        """New matches in ``window`` that end no later than ``last`` (stream offsets), and the held rules."""
        c0 = self._c0
        enc = encode(window)
        ascii_only = len(enc) == len(window)

        def to_bytes(offset: int) -> int:
            chars = min(max(0, offset - c0), len(window))
            return chars if ascii_only else len(encode(window[:chars]))

        floor = to_bytes(self._floor) if self._floor >= 0 else 0
        floors = {rule: to_bytes(f) if f >= c0 else 0 for rule, f in self._low.items()}
        spans, held = self._scan(window, enc, floor, floors)
        first = 1 if c0 else 0
        out: list[Span] = []
        for idx, s, e, ms, me in spans:
            key = (idx, s + c0, e + c0, me + c0)
            if ms >= first and key[3] <= last and key not in self._reported:
                self._reported.add(key)
                out.append((idx, key[1], key[2], ms + c0, key[3]))
        return out, held
