"""Circuit breakers: what opens them, cooldown and half-open probes, what closes them, and the snapshot."""

from __future__ import annotations

from typing import Any

from nexus.gateway.routing.health import BreakerConfig, Health


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def breaker(**config: Any) -> tuple[Health, Clock]:
    clock = Clock()
    return Health(BreakerConfig(**config), clock), clock


def test_unknown_upstreams_are_closed() -> None:
    health, _ = breaker()
    assert health.state("p") == "closed" and health.usable("p") and health.snapshot() == []


def test_consecutive_failures_open_and_a_success_resets_the_streak() -> None:
    health, _ = breaker(failure_threshold=3)
    for _ in range(2):
        health.record("p", False, "server_error")
    health.record("p", True, "ok", 0.1)
    for _ in range(2):
        health.record("p", False, "timeout")
    assert health.state("p") == "closed"
    health.record("p", False, "connect")
    assert health.state("p") == "open" and not health.usable("p")
    assert health.state("other") == "closed"


def test_client_errors_are_neutral() -> None:
    health, _ = breaker(failure_threshold=2)
    health.record("p", False, "server_error")
    for _ in range(10):
        health.record("p", False, "client_error")
    assert health.state("p") == "closed"
    assert health.snapshot()[0]["consecutive_failures"] == 1  # neither counted nor reset
    health.record("p", False, "rate_limited")
    assert health.state("p") == "open"


def test_error_rate_over_the_window_opens() -> None:
    health, clock = breaker(failure_threshold=100, window_s=10, min_requests=20, error_rate_threshold=0.5)
    for i in range(19):
        health.record("p", i % 2 == 0, "server_error")
        clock.now += 0.1
    assert health.state("p") == "closed"  # below min_requests
    health.record("p", False, "server_error")
    assert health.state("p") == "open"


def test_old_failures_leave_the_window() -> None:
    health, clock = breaker(failure_threshold=100, window_s=10, min_requests=10, error_rate_threshold=0.5)
    for _ in range(9):
        health.record("p", False, "server_error")
    clock.now += 30
    for _ in range(9):
        health.record("p", True, "ok")
    health.record("p", False, "server_error")
    assert health.state("p") == "closed"
    assert health.snapshot()[0]["error_rate"] == 0.1


def test_cooldown_then_one_probe_per_interval() -> None:
    health, clock = breaker(failure_threshold=1, cooldown_s=10, probe_interval_s=2)
    health.record("p", False, "server_error")
    clock.now += 9.9
    assert health.state("p") == "open" and not health.usable("p")
    clock.now += 0.1
    assert health.state("p") == "half_open" and health.usable("p")
    health.begin("p")
    assert health.state("p") == "half_open" and not health.usable("p")  # the probe is out
    clock.now += 2
    assert health.usable("p")  # its answer never came: another probe may go
    health.begin("p")
    health.record("p", True, "ok", 0.3)
    assert health.state("p") == "closed" and health.usable("p")


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    health, clock = breaker(failure_threshold=1, cooldown_s=10, probe_interval_s=2)
    health.record("p", False, "server_error")
    clock.now += 10
    health.begin("p")
    health.record("p", False, "timeout")
    assert health.state("p") == "open" and not health.usable("p")
    clock.now += 9
    assert not health.usable("p")
    clock.now += 1
    assert health.usable("p") and health.state("p") == "half_open"


def test_begin_on_a_closed_breaker_changes_nothing() -> None:
    health, _ = breaker(failure_threshold=1)
    health.record("p", True, "ok")
    health.begin("p")
    health.begin("never-seen")
    assert health.usable("p") and health.state("p") == "closed"


def test_snapshot() -> None:
    health, clock = breaker(failure_threshold=2, cooldown_s=10)
    for ms in range(1, 101):
        health.record("a", True, "ok", ms / 1000)
    clock.now += 1
    health.record("b", False, "server_error")
    health.record("b", False, "timeout")
    clock.now += 4
    a, b = health.snapshot()
    assert a == {"provider_id": "a", "circuit_state": "closed", "consecutive_failures": 0, "error_rate": 0.0,
                 "latency_p50_ms": 50, "latency_p99_ms": 99, "last_success_s_ago": 5.0, "last_failure_s_ago": None,
                 "last_error": None, "open_for_s": None}
    assert b["circuit_state"] == "open" and b["consecutive_failures"] == 2 and b["error_rate"] == 1.0
    assert b["last_error"] == "timeout" and b["open_for_s"] == 4.0 and b["latency_p50_ms"] is None
