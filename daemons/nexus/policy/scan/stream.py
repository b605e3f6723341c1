"""Incremental scanning across chunk borders (Hyperscan stream mode).  Synchronous.

A ``StreamScan`` owns one Hyperscan stream.  ``feed(text)`` scans the next
chunk and returns the matches completed so far, with character offsets counted
from the start of the whole stream; a match split across any chunk border is
found, because Hyperscan carries its automaton state between chunks and the
scan keeps the last ``tail`` characters (the longest possible match plus one)
to cut exact spans from.  Matches that need the end of the stream (``$``) come
from ``close()``.

Resource handling: ``close()`` frees the Hyperscan stream; a ``StreamScan``
dropped without ``close()`` frees it when garbage-collected.  One task feeds a
stream at a time; feeds may happen on different threads (each uses its own
thread's scratch).

Binding quirks handled here (hyperscan 0.7-0.9): ``Stream.__enter__`` returns
a borrowed reference, so a stream is only safe when made by
``Database.stream`` (which adds the reference ``__enter__`` takes back);
``Stream.close`` mis-parses its ``scratch`` argument, so it runs on the
database's own scratch, one close at a time under ``_CLOSE_LOCK``.

Errors: ``feed``/``close`` never raise on any text; after ``close`` they return
no matches.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import hyperscan

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

# Re-entrant: a collector-run __del__ may close another stream inside a close.
_CLOSE_LOCK = threading.RLock()


class StreamScan:
    def __init__(self, db: hyperscan.Database, rules: Sequence[CompiledRule], scratches: Scratches, tail: int) -> None:
        self._db = db  # the hs stream borrows the database, callback and context: keep them alive here
        self._rules = rules
        self._scratches = scratches
        self._tail = tail
        self._hits = Hits(halt=False)
        self._stream = db.stream(on_match, context=self._hits)
        self._stream.__enter__()
        self._open = True
        self._buf = ""        # the kept tail plus the latest chunk
        self._buf_enc = b""   # encode(self._buf)
        self._c0 = 0          # stream character offset of self._buf[0]
        self._b0 = 0          # stream byte offset of self._buf_enc[0]
        self._last_end: dict[int, int] = {}

    def feed(self, text: str) -> list[Match]:
        return to_matches(self._rules, self.feed_spans(text))

    def close(self) -> list[Match]:
        return to_matches(self._rules, self.close_spans())

    def feed_spans(self, text: str) -> list[Span]:
        """``feed`` as (rule index, start, end) tuples, stream character offsets."""
        if not self._open or not text:
            return []
        enc = encode(text)
        self._hits.clear()
        self._hits.overflow.clear()
        self._stream.scan(enc, scratch=self._scratches.stream)
        self._buf += text
        self._buf_enc += enc
        spans = self._collect(final=False)
        self._trim()
        return spans

    def close_spans(self) -> list[Span]:
        if not self._open:
            return []
        self._open = False
        self._hits.clear()
        self._hits.overflow.clear()
        with _CLOSE_LOCK:
            self._stream.close()
        return self._collect(final=True)

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            try:
                with _CLOSE_LOCK:
                    self._stream.close()
            except hyperscan.error:
                pass  # the database scratch was busy (a close inside a close): that stream state leaks

    def _collect(self, *, final: bool) -> list[Span]:
        hits = [(rule, end - self._b0) for rule, end in self._hits if end >= self._b0]
        spans = confirm(self._rules, self._buf, self._buf_enc, hits)
        for idx in self._hits.overflow:
            # Too many hits in this chunk to record them all: search the whole buffer for this rule.
            limit = len(self._buf) if final else max(0, len(self._buf) - 1)
            spans.extend(search_all(self._rules[idx], idx, self._buf, 0, limit))
        out: list[Span] = []
        for idx, start, end in sorted(spans, key=lambda s: (s[0], s[2], s[1])):
            start, end = start + self._c0, end + self._c0
            if end > self._last_end.get(idx, -1):
                self._last_end[idx] = end
                out.append((idx, start, end))
        return out

    def _trim(self) -> None:
        cut = len(self._buf) - self._tail
        if cut <= 0:
            return
        head = self._buf[:cut]
        cut_b = cut if len(self._buf) == len(self._buf_enc) else len(encode(head))
        self._buf = self._buf[cut:]
        self._buf_enc = self._buf_enc[cut_b:]
        self._c0 += cut
        self._b0 += cut_b
