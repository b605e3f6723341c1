"""Cache keys: stable under key order and ignored fields, distinct for anything that changes the answer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nexus.gateway.cache.key import CACHE_PREFIX, cache_key, scope_tag

BODY = {
    "model": "alias-a",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "x"}}]}],
    "temperature": 0,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "b": {"type": "string"}, "a": {"type": "integer"}}}}}],
}


def _reordered(value: object) -> object:
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_key_ignores_order_and_bookkeeping_fields() -> None:
    base = cache_key("openai", "gpt-4o-2024", BODY)
    assert base.startswith(CACHE_PREFIX) and len(base) == len(CACHE_PREFIX) + 64
    assert cache_key("openai", "gpt-4o-2024", _reordered(BODY)) == base  # type: ignore[arg-type]
    noise = {"model": "alias-b", "user": "u-1", "stream": True, "stream_options": {"include_usage": True},
             "metadata": {"trace": "x"}, "store": True, "safety_identifier": "s", "prompt_cache_key": "p",
             "service_tier": "flex"}
    assert cache_key("openai", "gpt-4o-2024", {**BODY, **noise}) == base


@pytest.mark.parametrize("change", [
    {"temperature": 0.5}, {"n": 2}, {"max_tokens": 10}, {"messages": [{"role": "user", "content": "hi"}]},
    {"tools": []}, {"response_format": {"type": "json_object"}},
])
def test_key_changes_with_the_answer(change: dict[str, object]) -> None:
    assert cache_key("openai", "m", {**BODY, **change}) != cache_key("openai", "m", BODY)


def test_provider_model_and_scope_isolate_entries() -> None:
    keys = {cache_key("openai", "m", BODY), cache_key("azure", "m", BODY), cache_key("openai", "m2", BODY),
            cache_key("openai", "m", BODY, "vk:1"), cache_key("openai", "m", BODY, "vk:2"),
            cache_key("openai", "m", BODY, "project:1"), cache_key("openai", "m", BODY, "org:1")}
    assert len(keys) == 7
    assert cache_key("openai", "m", BODY, prefix="t:").startswith("t:")


def test_scope_tags() -> None:
    ids = {"key_id": "k", "project_id": "p", "org_id": "o"}
    assert [scope_tag(s, **ids) for s in ("global", "vk", "project", "org")] == ["", "vk:k", "project:p", "org:o"]
    assert scope_tag("project", key_id="k", project_id=None, org_id="o") == "vk:k"  # narrower, never wider


def test_pure_modules_load_no_trio() -> None:
    code = ("import sys, nexus.gateway.cache.key, nexus.gateway.cache.policy, nexus.gateway.cache.entry, "
            "nexus.gateway.cache.semantic_key, nexus.gateway.cache.breaker, nexus.gateway.cache.vectors\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'psycopg', 'socket'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
