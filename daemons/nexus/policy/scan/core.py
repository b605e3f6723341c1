"""What block and stream scans share: the match record, per-rule runtime data, the
Hyperscan match callback, per-thread scratch, and span confirmation.  Synchronous.

Hyperscan runs without start-of-match tracking, so a hit is a rule and the byte
offset where some match of it ends.  ``confirm`` turns hits into exact
character spans: for each rule, nearby ends are grouped and Python ``re``
searches a window before the first end (48, then 160 characters, then the
rule's maximum width when the match found touches the window's edge).  A
``re`` match is kept only when its end is one Hyperscan reported (so a window
edge can never fake a ``\\b`` or ``$``), its value passes the rule's validator,
and it is then reported as the ``v`` group's span when the rule has one.

Errors: nothing here raises on any input text.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Iterable, Sequence

import attrs
import hyperscan

from nexus.policy import validators
from nexus.policy.rules import regex
from nexus.policy.rules.model import Rule

# Recorded hits per scan before it switches to its overflow path; it bounds
# memory and callback time on pathological bodies.
HIT_CAP = 1 << 15

# (rule index, value start, value end, whole-match start, whole-match end); streams need the whole match
Span = tuple[int, int, int, int, int]


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


Hits = list[tuple[int, int]]  # (rule index, end byte offset): the match callback's context


def _on_match(rule: int, _start: int, end: int, _flags: int, hits: Hits) -> bool:
    hits.append((rule, end))
    return len(hits) >= HIT_CAP  # True stops the scan


# Module-level on purpose: the binding keeps no reference to its callback.  The
# binding types the context as object; ours is always a Hits list.
on_match: Callable[[int, int, int, int, object], bool | None] = _on_match  # type: ignore[assignment]


class Scratches(threading.local):
    """One Hyperscan scratch per database per thread (a scratch serves one scan at a time)."""

    def __init__(self, block: hyperscan.Database, single: hyperscan.Database) -> None:
        self.block = hyperscan.Scratch(block)
        self.single = hyperscan.Scratch(single)


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


# Most matches are short: look this far back first, and further (up to the
# rule's full width) only when the match found touches the window's edge.
_REACH = (48, 160)


def _confirm_rule(compiled: CompiledRule, idx: int, text: str, ends: set[int]) -> list[Span]:
    """Spans of one rule whose matches end at the character offsets ``ends``."""
    out: list[Span] = []
    width = compiled.width
    ordered = sorted(ends)
    for lo, hi in _clusters(ordered, width):
        endpos = min(len(text), hi + 1)
        for reach in (*(r for r in _REACH if r < width), width):
            pos = max(0, lo - reach)
            spans, first = _search(compiled, idx, text, ends, ordered, pos, endpos)
            # A match starting at the window's edge may be the tail of a longer one.
            if reach >= width or pos == 0 or (first is not None and first > pos):
                out.extend(spans)
                break
    return out


def _search(compiled: CompiledRule, idx: int, text: str, ends: set[int], ordered: list[int], pos: int,
            endpos: int) -> tuple[list[Span], int | None]:
    """Validated spans in ``text[pos:endpos]`` and where the first real match starts (None: no match)."""
    out: list[Span] = []
    first: int | None = None
    width = compiled.width
    search, fullmatch = compiled.regex.search, compiled.regex.fullmatch
    while pos < endpos:
        m = search(text, pos, endpos)
        if m is None:
            break
        if m.end() not in ends:
            # The window edge let re end where Hyperscan saw no match (a faked
            # '$' or '\b'): try the ends Hyperscan did report from this start.
            start = m.start()
            lo, hi = bisect.bisect_right(ordered, start), bisect.bisect_right(ordered, start + width)
            m = next((f for e in reversed(ordered[lo:hi]) for f in (fullmatch(text, start, e),) if f is not None),
                     None)
            if m is None:
                pos = start + 1
                continue
        if first is None:
            first = m.start()
        span = _value(compiled, m)
        if span is not None:
            out.append((idx, *span, *m.span()))
        pos = max(m.end(), m.start() + 1)
    return out, first


def search_all(compiled: CompiledRule, idx: int, text: str) -> list[Span]:
    """Every validated match of one rule in ``text`` (the overflow path: no end filter)."""
    out: list[Span] = []
    for m in compiled.regex.finditer(text):
        span = _value(compiled, m)
        if span is not None:
            out.append((idx, *span, *m.span()))
    return out


def _value(compiled: CompiledRule, m: re.Match[str]) -> tuple[int, int] | None:
    start, end = m.span("v") if compiled.value_group else m.span()
    if start < 0:
        start, end = m.span()
    if compiled.validator is not None and not compiled.validator(m.string[start:end]):
        return None
    return start, end


def to_matches(rules: Sequence[CompiledRule], spans: Iterable[Span]) -> list[Match]:
    """Merge overlapping or touching spans of the same rule; sort by start, end, rule id."""
    merged: list[list[int]] = []
    for idx, start, end, _, _ in sorted(spans):
        if merged and merged[-1][0] == idx and start <= merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], end)
        else:
            merged.append([idx, start, end])
    out = []
    for idx, start, end in merged:
        rule = rules[idx].rule
        out.append(Match(rule.id, rule.category, rule.severity, start, end))
    out.sort(key=lambda m: (m.start, m.end, m.rule_id))
    return out
