"""The embedding endpoint's circuit breaker: opens after N consecutive failures, refuses for T seconds, lets one
half-open probe through, closes on its success and reopens on its failure."""

from __future__ import annotations

import pytest

from nexus.gateway.cache.breaker import Breaker


def test_opens_after_consecutive_failures_and_probes_once() -> None:
    b = Breaker(failures=3, open_seconds=10)
    for t in (0.0, 1.0):
        assert b.allow(t)
        b.record(False, t)
    assert b.allow(1.5)
    b.record(True, 1.5)  # a success resets the count
    for t in (2.0, 3.0, 4.0):
        assert b.allow(t)
        b.record(False, t)
    assert (b.state, b.opened) == ("open", 1)
    assert not b.allow(13.9)
    assert b.allow(14.0) and b.state == "half_open"  # the probe
    assert not b.allow(14.1)  # only one at a time
    b.record(False, 14.2)
    assert (b.state, b.opened) == ("open", 2)
    assert not b.allow(24.1)
    assert b.allow(24.2)
    b.record(True, 24.3)
    assert b.state == "closed" and b.failures == 0 and b.allow(24.4)


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    b = Breaker(failures=1, open_seconds=5)
    b.record(False, 0.0)
    assert b.allow(5.0) and not b.allow(5.0)
    b.abandon()  # the probing request was cancelled
    assert b.allow(5.1)
    b.record(True, 5.2)
    assert b.state == "closed"


def test_late_failures_do_not_extend_an_open_breaker() -> None:
    b = Breaker(failures=1, open_seconds=5)
    b.record(False, 0.0)
    b.record(False, 4.0)  # a call that started before it opened
    assert b.allow(5.0)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Breaker(failures=0)
    with pytest.raises(ValueError):
        Breaker(open_seconds=0)
