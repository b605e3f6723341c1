"""Helpers for the wire tests: recorded provider payloads and golden comparisons.

``fixtures/`` holds provider payloads in the exact shapes the real APIs send
(written from the public API references); ``fixtures/expected/`` holds the
translations we expect from them, reviewed by hand.  Identifiers the codecs
make up and wall-clock timestamps are normalised before comparing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

FIXTURES = Path(__file__).parent / "fixtures"

_GENERATED_ID = re.compile(r"^(call_|msg_|resp_|rs_|fc_|toolu_|chatcmpl-)?[0-9a-f]{24}$")
_CLOCK_KEYS = frozenset({"created", "created_at"})


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def normalise(value: Any) -> Any:
    """Made-up ids become ``<prefix><id>``; timestamps become 0."""
    if isinstance(value, dict):
        return {k: 0 if k in _CLOCK_KEYS and isinstance(v, int | float) else normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        m = _GENERATED_ID.match(value)
        if m:
            return f"{m.group(1) or ''}<id>"
    return value


def events(pairs: Iterable[tuple[str | None, dict[str, Any]]]) -> list[Any]:
    """Translator output as JSON-able ``[event, data]`` lists."""
    return [[e, d] for e, d in pairs]


def assert_golden(name: str, actual: Any) -> None:
    expected = load(f"expected/{name}.json")
    got = normalise(orjson.loads(orjson.dumps(actual)))
    assert got == expected


def drive(translator: Any, frames: Iterable[tuple[str | None, dict[str, Any]]]) -> list[tuple[str | None, Any]]:
    """Feed every frame, then finish; all output in order."""
    out: list[tuple[str | None, Any]] = []
    for event, data in frames:
        out.extend(translator.feed(event, data))
    out.extend(translator.finish())
    return out


@pytest.fixture
def fixture() -> Callable[[str], Any]:
    return load
