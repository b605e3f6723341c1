"""Knob parsing: config defaults, header overrides, rejected values."""

from __future__ import annotations

import pytest

from nexus.config.schema import MockProviderConfig
from nexus.mock import knobs
from nexus.mock.knobs import KnobError, Knobs


def test_config_fields_are_the_defaults() -> None:
    config = MockProviderConfig(ttft_ms=5, chunks=9, answer="hi", model="m", error_after=2, hang=1.5)
    made = knobs.from_config(config)
    assert made == Knobs(ttft_ms=5, chunks=9, answer="hi", model="m", error_after=2, hang=1.5)


def test_headers_override_and_no_headers_keeps_the_same_object() -> None:
    defaults = Knobs(chunks=3)
    assert knobs.parse(defaults, [], 10.0) is defaults
    made = knobs.parse(
        defaults,
        [
            ("x-mock-chunks", "7"),
            ("x-mock-error-on-200", "yes"),
            ("x-mock-answer", "fixed"),
            ("x-mock-hang", "true"),
            ("x-mock-status", "503"),
        ],
        10.0,
    )
    assert (made.chunks, made.error_on_200, made.answer, made.hang, made.status) == (7, True, "fixed", 10.0, 503)
    assert knobs.parse(defaults, [("x-mock-hang", "99")], 2.0).hang == 2.0
    assert knobs.parse(defaults, [("x-mock-hang", "0.5")], 2.0).hang == 0.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-mock-chunks", "0"),
        ("x-mock-chunks", "lots"),
        ("x-mock-status", "200"),
        ("x-mock-ttft-ms", "-1"),
        ("x-mock-error-after", "-2"),
        ("x-mock-error-on-200", "maybe"),
        ("x-mock-hang", "nan"),
        ("x-mock-hang", "-1"),
        ("x-mock-teleport", "1"),
    ],
)
def test_bad_values_name_the_header(name: str, value: str) -> None:
    with pytest.raises(KnobError, match=name):
        knobs.parse(Knobs(), [(name, value)], 10.0)


def test_config_rejects_bad_defaults() -> None:
    with pytest.raises(ValueError):
        MockProviderConfig(status=200)
    with pytest.raises(ValueError):
        MockProviderConfig(chunks=0)
