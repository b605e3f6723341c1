"""Cache rules: which requests may use the cache and which answers may be stored (the poison guard)."""

from __future__ import annotations

import pytest

from nexus.gateway.cache.policy import CachePolicy, finish_reasons, lookup_reason, no_cache_requested, poison_reason


def test_settings_are_validated() -> None:
    p = CachePolicy()
    assert (p.ttl_seconds, p.max_entry_bytes, p.embeddings, p.scope) == (3600, 1 << 20, False, "global")
    for bad in ({"ttl_seconds": 59}, {"ttl_seconds": 604_801}, {"max_entry_bytes": (1 << 20) + 1}):
        with pytest.raises(ValueError):
            CachePolicy(**bad)  # type: ignore[arg-type]


def test_lookup_rules() -> None:
    chat = {"messages": [], "temperature": 0.7}
    assert lookup_reason(CachePolicy(), "chat", chat) is None
    assert lookup_reason(CachePolicy(enabled=False), "chat", chat) == "cache disabled"
    assert lookup_reason(CachePolicy(), "chat", chat, no_cache=True) == "x-nexus-no-cache"
    assert lookup_reason(CachePolicy(), "embeddings", {"input": "x"}) == "embeddings are not cached"
    assert lookup_reason(CachePolicy(embeddings=True), "embeddings", {"input": "x"}) is None
    strict = CachePolicy(deterministic_only=True)
    assert lookup_reason(strict, "chat", chat) == "temperature is not 0"
    assert lookup_reason(strict, "chat", {"messages": []}) == "temperature is not 0"  # provider default is 1
    assert lookup_reason(strict, "chat", {**chat, "temperature": 0}) is None
    assert [no_cache_requested(v) for v in (None, "", "0", "false", b"1", "true", "yes")] == \
        [False, False, False, False, True, True, True]


def test_poison_guard() -> None:
    ok = {"choices": [{"finish_reason": "stop"}, {"finish_reason": "tool_calls"}]}
    assert poison_reason(status=200, finish=finish_reasons(ok)) is None
    assert poison_reason(status=200) is None  # embeddings: no finish reasons
    assert poison_reason(status=502) == "error answer"
    assert poison_reason(status=200, error="timeout") == "error answer"
    assert poison_reason(status=200, finish=["stop"], blocked=True) == "blocked by a hook"
    assert poison_reason(status=200, finish=["stop"], redacted=True) == "redacted by a hook"
    for reason in ("length", "content_filter", None):
        assert poison_reason(status=200, finish=["stop", reason]) is not None


def test_semantic_opt_in() -> None:
    from nexus.gateway.cache.policy import SemanticPolicy, semantic_header, semantic_wanted

    assert [semantic_header(v) for v in (None, "on", " ON ", "1", "off", "false")] == \
        [None, True, True, True, False, False]
    with pytest.raises(ValueError, match="on or off"):
        semantic_header("maybe")
    off = SemanticPolicy("emb")
    assert not semantic_wanted(off, header=None, model="m", key_id="k")
    assert semantic_wanted(off, header=True, model="m", key_id="k")
    by_model = SemanticPolicy("emb", models=("gpt-*",))
    assert semantic_wanted(by_model, header=None, model="gpt-4o", key_id="k")
    assert not semantic_wanted(by_model, header=False, model="gpt-4o", key_id="k")  # the header wins
    assert not semantic_wanted(by_model, header=None, model="claude", key_id="k")
    assert semantic_wanted(SemanticPolicy("emb", keys=frozenset({"k"})), header=None, model="m", key_id="k")
    assert semantic_wanted(SemanticPolicy("emb", default_on=True), header=None, model="m", key_id="k")
    with pytest.raises(ValueError):
        SemanticPolicy("emb", threshold=1.5)


def test_semantic_poison_guard() -> None:
    from nexus.gateway.cache.policy import semantic_poison_reason

    def answer(message: dict[str, object], finish: str = "stop") -> dict[str, object]:
        return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}]}

    assert semantic_poison_reason(answer({"content": "Paris."})) is None
    assert semantic_poison_reason(answer({"content": "Paris."}), flagged=True) == "flagged by a hook"
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert semantic_poison_reason(answer({"content": None, "tool_calls": calls}, "tool_calls")) == "tool calls"
    assert semantic_poison_reason(answer({"content": "  "})) == "empty answer"
    assert semantic_poison_reason({"choices": []}) == "no answer"
