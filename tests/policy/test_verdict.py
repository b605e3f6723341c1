"""Decisions, their precedence, span merging and application, the audit form (nexus/policy/verdict.py)."""

from __future__ import annotations

import itertools
import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.policy.exchange import Segment
from nexus.policy.verdict import (
    Decision,
    HookResult,
    Span,
    StageDecision,
    Verdict,
    apply_spans,
    approve,
    block,
    merge_spans,
    placeholder,
    redact,
    strictest,
    to_source,
)

D = Decision
ORDER = [D.ABSTAIN, D.APPROVE, D.MODIFY, D.BLOCK_SOFT, D.REJECT_HARD]
LOC = ("messages", 0, "content")


def s(start: int, end: int, rule: str = "R", loc: tuple[object, ...] = LOC) -> Span:
    return Span(loc, start, end, rule, placeholder(rule))  # type: ignore[arg-type]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ORDER, ORDER)))
def test_precedence_table(a: Decision, b: Decision) -> None:
    # hard reject > soft block > modify > approve > abstain, whatever the order of arrival.
    expected = ORDER[max(ORDER.index(a), ORDER.index(b))]
    assert strictest([a, b]) is expected
    assert strictest([b, a]) is expected


def test_precedence_ranks_and_blocks() -> None:
    assert [d.rank for d in ORDER] == sorted(d.rank for d in ORDER)
    assert len({d.rank for d in ORDER}) == 5
    assert strictest([]) is D.ABSTAIN
    assert [d.blocks for d in ORDER] == [False, False, False, True, True]


def test_record_factories() -> None:
    assert approve(("ok",), ("R",)) == Verdict(D.APPROVE, ("ok",), ("R",))
    assert redact((s(0, 1),), rule_ids=("R",)).decision is D.MODIFY
    assert block(("no",)).decision is D.REJECT_HARD
    soft = block(("later",), hard=False, status=429, retry_after_s=3.0)
    assert (soft.decision, soft.status, soft.retry_after_s) == (D.BLOCK_SOFT, 429, 3.0)


def test_merge_overlapping_spans() -> None:
    merged = merge_spans([s(10, 20, "B"), s(5, 12, "A"), s(30, 40, "C"), s(18, 25, "D"), s(40, 45, "E")])
    # A (earliest) absorbs B and D; C and E only touch, so each keeps its own placeholder.
    assert merged == [s(5, 25, "A"), s(30, 40, "C"), s(40, 45, "E")]


def test_merge_prefers_the_longest_span_on_a_tie_and_keeps_locators_apart() -> None:
    other = ("messages", 1, "content")
    merged = merge_spans([s(0, 3, "SHORT"), s(0, 8, "LONG"), s(2, 4, "IN"), s(1, 2, "X", other)])
    assert merged == [s(0, 8, "LONG"), s(1, 2, "X", other)]


def test_apply_spans() -> None:
    text = "mail bob@x.io or ann@y.io"
    assert apply_spans(text, merge_spans([s(5, 13, "EMAIL"), s(17, 25, "EMAIL")])) == (
        "mail [REDACTED_EMAIL] or [REDACTED_EMAIL]"
    )
    assert apply_spans(text, []) == text
    for bad in ([s(3, 2)], [s(0, 99)], [s(4, 6), s(5, 8)], [s(2, 2)]):
        with pytest.raises(ValueError):
            apply_spans(text, bad)


def test_to_source_maps_offsets_of_a_masked_text_back() -> None:
    text = "call bob@x.io or ann@y.io now"
    applied = merge_spans([s(5, 13, "E"), s(17, 25, "E")])
    view = apply_spans(text, applied)
    assert view == "call [REDACTED_E] or [REDACTED_E] now"
    now = view.index("now")
    assert to_source(s(now, now + 3), applied) == s(26, 29)
    assert to_source(s(0, 4), applied) == s(0, 4)
    # An edge inside a placeholder covers the whole span it replaced.
    assert to_source(s(7, 20), applied) == s(5, 16)
    assert to_source(s(18, view.index(" now")), applied) == s(14, 25)
    assert to_source(s(3, 5), []) == s(3, 5)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40), st.data())
def test_to_source_agrees_with_a_position_map(text: str, data: st.DataObject) -> None:
    n = len(text)
    bounds = st.tuples(st.integers(0, n), st.integers(0, n)).filter(lambda p: p[0] < p[1])
    applied = merge_spans(
        Span(LOC, a, b, "R", data.draw(st.sampled_from(["", "#", "[MASK]"])))
        for a, b in data.draw(st.lists(bounds, max_size=4))
    )
    view = apply_spans(text, applied)
    if not view:
        return
    vs, ve = data.draw(st.tuples(st.integers(0, len(view)), st.integers(0, len(view))).filter(lambda p: p[0] < p[1]))
    got = to_source(Span(LOC, vs, ve, "W", "x"), applied)
    assert 0 <= got.start < got.end <= n
    # Where each kept source character lands in the view.
    where: dict[int, int] = {}
    pos = prev = 0
    for a in applied:
        for i in range(prev, a.start):
            where[i] = pos
            pos += 1
        pos += len(a.replacement)
        prev = a.end
    for i in range(prev, n):
        where[i] = pos
        pos += 1
    for i, v in where.items():
        assert (got.start <= i < got.end) == (vs <= v < ve)
    offset = 0
    for a in applied:
        ps = a.start + offset
        pe = ps + len(a.replacement)
        if vs < pe and ps < ve:
            assert got.start <= a.start and a.end <= got.end
        offset += len(a.replacement) - (a.end - a.start)


_ALPHABET = st.characters(codec="utf-8", exclude_characters="⟦⟧")


@settings(max_examples=300, deadline=None)
@given(st.text(_ALPHABET, max_size=60), st.data())
def test_redaction_never_corrupts_the_text_around_it(text: str, data: st.DataObject) -> None:
    n = len(text)
    bounds = st.tuples(st.integers(0, n), st.integers(0, n)).filter(lambda p: p[0] < p[1]) if n else st.nothing()
    pairs = data.draw(st.lists(bounds, max_size=8)) if n else []
    spans = [Span(LOC, a, b, f"R{i}", f"⟦{i}⟧") for i, (a, b) in enumerate(pairs)]
    out = apply_spans(text, merge_spans(spans))
    # An independent oracle: union the intervals that overlap, then the text between the groups must survive.
    groups: list[list[int]] = []
    for a, b in sorted(pairs):
        if groups and a < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], b)
        else:
            groups.append([a, b])
    expected_pieces = []
    pos = 0
    for a, b in groups:
        expected_pieces.append(text[pos:a])
        pos = b
    expected_pieces.append(text[pos:])
    assert re.split(r"⟦\d+⟧", out) == expected_pieces
    assert len(re.findall(r"⟦\d+⟧", out)) == len(groups)
    assert out.encode("utf-8").decode("utf-8") == out


def test_stage_decision_audit_form() -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    decision = StageDecision(
        "request",
        D.MODIFY,
        (
            HookResult(
                "h1",
                "pii",
                "pii-detector",
                D.MODIFY,
                42,
                ("EMAIL (pii, soft)",),
                "RULE_MATCH",
                ("EMAIL",),
                (s(0, 5, "EMAIL"),),
            ),
            HookResult("h2", "guard", "webhook-forward", D.ABSTAIN, 1000, error="timeout", failed="open"),
        ),
        reasons=("EMAIL (pii, soft)",),
        rule_ids=("EMAIL",),
        rewrites=(Segment(LOC, f"[REDACTED_EMAIL] {secret}"),),
        region_constraints=(("eu-*",),),
        elapsed_us=1100,
    )
    doc = decision.to_json()
    raw = orjson.dumps(doc)
    assert secret.encode() not in raw and b"REDACTED" not in raw
    assert doc["decision"] == "modify" and doc["stage"] == "request" and doc["elapsedUs"] == 1100
    assert doc["ruleIds"] == ["EMAIL"]
    assert doc["regionConstraints"] == [["eu-*"]]
    assert doc["hooks"][0] == {
        "hookId": "h1",
        "name": "pii",
        "implementation": "pii-detector",
        "decision": "modify",
        "elapsedUs": 42,
        "reasons": ["EMAIL (pii, soft)"],
        "reasonCode": "RULE_MATCH",
        "ruleIds": ["EMAIL"],
        "spans": [{"locator": ["messages", 0, "content"], "start": 0, "end": 5, "ruleId": "EMAIL"}],
    }
    assert doc["hooks"][1]["error"] == "timeout" and doc["hooks"][1]["failed"] == "open"
    assert "enforced" not in doc and "rewrites" not in doc


def test_region_allowed() -> None:
    d = StageDecision("request", D.APPROVE, region_constraints=(("eu-*", "europe-*"), ("eu-west-1", "eu-central-1")))
    assert d.region_allowed("eu-west-1")
    assert not d.region_allowed("eu-north-1")
    assert not d.region_allowed("us-east-1")
    assert StageDecision("request", D.APPROVE).region_allowed("anywhere")


def test_blocked_needs_enforcement() -> None:
    assert StageDecision("response", D.REJECT_HARD).blocked
    assert not StageDecision("response", D.REJECT_HARD, enforced=False).blocked
    assert not StageDecision("response", D.MODIFY).blocked
