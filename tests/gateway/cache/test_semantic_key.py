"""What the semantic cache compares: the last user message by meaning, everything else exactly; partitions by
provider, model, scope, context and embedding model."""

from __future__ import annotations

from typing import Any

from nexus.gateway.cache.semantic_key import Partition, SemanticQuery, partition, semantic_query

CHAT: dict[str, Any] = {"model": "m", "temperature": 0, "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  What is the capital of France?  "},
]}


def query(chat: dict[str, Any], max_chars: int = 8000) -> SemanticQuery:
    q = semantic_query(chat, max_chars)
    assert isinstance(q, SemanticQuery), q
    return q


def test_text_is_the_last_user_message_and_context_the_rest() -> None:
    q = query(CHAT)
    assert q.text == "What is the capital of France?"
    reworded = {**CHAT, "messages": [CHAT["messages"][0], {"role": "user", "content": "France's capital?"}]}
    assert query(reworded).context == q.context  # only the compared text differs
    # Fields the exact key ignores do not split partitions either.
    assert query({**CHAT, "user": "u1", "stream": True, "model": "alias"}).context == q.context
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": "of France?"}]
    assert query({**CHAT, "messages": [CHAT["messages"][0], {"role": "user", "content": parts}]}).text == \
        "What is the capital\nof France?"


def test_everything_else_must_match_exactly() -> None:
    base = query(CHAT).context
    variants = [
        {**CHAT, "temperature": 0.5},
        {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {**CHAT, "messages": [{"role": "system", "content": "You are verbose."}, CHAT["messages"][1]]},
        {**CHAT, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                              *CHAT["messages"]]},
        {**CHAT, "max_tokens": 10},
    ]
    contexts = {query(v).context for v in variants}
    assert base not in contexts and len(contexts) == len(variants)


def test_requests_that_cannot_use_it() -> None:
    image = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": []}, "no messages"),
        ({"messages": [*CHAT["messages"], {"role": "assistant", "content": "Paris"}]}, "not the user's"),
        ({"messages": [{"role": "user", "content": image}]}, "not only text"),
        ({"messages": [{"role": "user", "content": "   "}]}, "empty"),
        ({**CHAT, "n": 2}, "n is not 1"),
        ({"messages": [{"role": "user", "content": "x" * 20}]}, "longer than 10"),
    ]
    for chat, reason in cases:
        got = semantic_query(chat, max_chars=10 if reason.startswith("longer") else 8000)
        assert isinstance(got, str) and reason in got, (chat, got)


def test_partition() -> None:
    q = query(CHAT)
    p = partition("prov", "gpt-x", "vk:k1", q, "emb")
    assert p == Partition("prov", "gpt-x", f"vk:k1#{q.context}", "emb")
    assert p.scope_tag == "vk:k1" and partition("prov", "gpt-x", "", q, "emb").scope_tag == ""
    tags = {p.tag, partition("prov", "gpt-x", "vk:k2", q, "emb").tag, partition("prov", "gpt-y", "vk:k1", q, "emb").tag,
            partition("prov2", "gpt-x", "vk:k1", q, "emb").tag, partition("prov", "gpt-x", "vk:k1", q, "emb2").tag}
    assert len(tags) == 5 and all(len(t) == 64 for t in tags)
