"""What block and stream scans share: the match record, per-rule runtime data, the
Hyperscan match callback, per-thread scratch, and span confirmation.  Synchronous.

Hyperscan runs without start-of-match tracking, so a hit is a rule and the byte
offset where some match of it ends.  ``confirm`` turns hits into exact
character spans: for each rule, nearby ends are grouped and Python ``re``
searches a window reaching the rule's maximum width before the first end.  A
``re`` match is kept only when its end is one Hyperscan reported (so a window
edge can never fake a ``\\b`` or ``$``), its value passes the rule's validator,
and it is then reported as the ``v`` group's span when the rule has one.

Errors: nothing here raises on any input text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence

import attrs
import hyperscan

from nexus.policy import validators
from nexus.policy.rules import regex
from nexus.policy.rules.model import Rule

# Recorded hits per scan (or per stream chunk) before a scan switches to its
# overflow path; it bounds memory and callback time on pathological bodies.
HIT_CAP = 1 << 15

Span = tuple[int, int, int]  # (rule index, start, end)


@attrs.frozen(slots=True)
class Match:
    """One finding: character offsets into the scanned text (byte offsets from ``scan_bytes``)."""

    rule_id: str
    category: str
    severity: str
    start: int
    end: int


@attrs.frozen(slots=True)
class CompiledRule:
    rule: Rule
    regex: re.Pattern[str]
    value_group: bool
    width: int
    validator: validators.Validator | None

    @classmethod
    def of(cls, rule: Rule) -> CompiledRule:
        compiled = regex.compile_python(rule.pattern, rule.flags)
        return cls(
            rule=rule,
            regex=compiled,
            value_group="v" in compiled.groupindex,
            width=min(regex.width(compiled)[1], regex.MAX_WIDTH),
            validator=validators.get(rule.validator) if rule.validator else None,
        )


class Hits(list[tuple[int, int]]):
    """(rule index, end byte offset) pairs from one scan call; the callback's context."""

    __slots__ = ("halt", "overflow")

    def __init__(self, *, halt: bool) -> None:
        super().__init__()
        self.halt = halt
        self.overflow: set[int] = set()


def on_match(rule: int, _start: int, end: int, _flags: int, hits: Hits) -> bool | None:
    # Module-level on purpose: the binding keeps no reference to the callback.
    if len(hits) < HIT_CAP:
        hits.append((rule, end))
        return None
    hits.overflow.add(rule)
    return hits.halt


class Scratches(threading.local):
    """One Hyperscan scratch per database per thread (a scratch serves one scan at a time)."""

    def __init__(self, block: hyperscan.Database, single: hyperscan.Database, stream: hyperscan.Database) -> None:
        self.block = hyperscan.Scratch(block)
        self.single = hyperscan.Scratch(single)
        self.stream = hyperscan.Scratch(stream)


def encode(text: str) -> bytes:
    """UTF-8 for Hyperscan; a lone surrogate becomes one '?' so byte and character counts stay aligned."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _char_ends(enc: bytes, ends: Iterable[int]) -> dict[int, int]:
    """Character offset of each byte end that falls on a character boundary.

    A byte-mode pattern can end inside a multi-byte character; such an end can
    never be the end of a character-level ``re`` match, so it is left out.
    """
    out: dict[int, int] = {}
    prev_b = prev_c = 0
    size = len(enc)
    for b in sorted(set(ends)):
        if b < size and enc[b] & 0xC0 == 0x80:
            continue
        prev_c += len(enc[prev_b:b].decode("utf-8", "replace"))
        prev_b = b
        out[b] = prev_c
    return out


def _clusters(ends: list[int], gap: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    lo = hi = ends[0]
    for e in ends[1:]:
        if e - hi > gap:
            out.append((lo, hi))
            lo = e
        hi = e
    out.append((lo, hi))
    return out


def confirm(rules: Sequence[CompiledRule], text: str, enc: bytes, hits: Iterable[tuple[int, int]]) -> list[Span]:
    """Exact, validated spans for ``hits`` (byte ends into ``enc``, which is ``encode(text)``)."""
    by_rule: dict[int, set[int]] = {}
    for rule, end in hits:
        by_rule.setdefault(rule, set()).add(end)
    if not by_rule:
        return []
    out: list[Span] = []
    if len(text) == len(enc):
        for idx, ends in by_rule.items():
            out.extend(_confirm_rule(rules[idx], idx, text, ends))
        return out
    chars = _char_ends(enc, (e for ends in by_rule.values() for e in ends))
    for idx, ends in by_rule.items():
        cends = {chars[e] for e in ends if e in chars}
        if cends:
            out.extend(_confirm_rule(rules[idx], idx, text, cends))
    return out


def _confirm_rule(compiled: CompiledRule, idx: int, text: str, ends: set[int]) -> list[Span]:
    """Spans of one rule whose matches end at the character offsets ``ends``."""
    out: list[Span] = []
    width = compiled.width
    ordered = sorted(ends)
    search, fullmatch = compiled.regex.search, compiled.regex.fullmatch
    for lo, hi in _clusters(ordered, width):
        pos, endpos = max(0, lo - width), min(len(text), hi + 1)
        while pos < endpos:
            m = search(text, pos, endpos)
            if m is None:
                break
            if m.end() not in ends:
                # The window edge let re end where Hyperscan saw no match (a faked
                # '$' or '\b'): try the ends Hyperscan did report from this start.
                start = m.start()
                m = next((f for e in reversed(ordered) if start < e <= start + width
                          for f in (fullmatch(text, start, e),) if f is not None), None)
                if m is None:
                    pos = start + 1
                    continue
            span = _value(compiled, m)
            if span is not None:
                out.append((idx, *span))
            pos = max(m.end(), m.start() + 1)
    return out


def search_all(compiled: CompiledRule, idx: int, text: str, pos: int = 0, endpos: int | None = None) -> list[Span]:
    """Every validated match of one rule in ``text[pos:endpos]`` (the overflow path: no end filter)."""
    out: list[Span] = []
    for m in compiled.regex.finditer(text, pos, len(text) if endpos is None else endpos):
        span = _value(compiled, m)
        if span is not None:
            out.append((idx, *span))
    return out


def _value(compiled: CompiledRule, m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span("v") if compiled.value_group else m.span()
    if start < 0:
        start, end = m.span()
    if compiled.validator is not None and not compiled.validator(m.string[start:end]):
        return None
    return start, end


def to_matches(rules: Sequence[CompiledRule], spans: Iterable[Span], shift: int = 0) -> list[Match]:
    """Merge overlapping spans of the same rule; sort by start, end, rule id."""
    ordered = sorted(spans)
    merged: list[Span] = []
    for idx, start, end in ordered:
        if merged and merged[-1][0] == idx and start < merged[-1][2]:
            last = merged[-1]
            merged[-1] = (idx, last[1], max(last[2], end))
        else:
            merged.append((idx, start, end))
    out = []
    for idx, start, end in merged:
        rule = rules[idx].rule
        out.append(Match(rule.id, rule.category, rule.severity, start + shift, end + shift))
    out.sort(key=lambda m: (m.start, m.end, m.rule_id))
    return out
