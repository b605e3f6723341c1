"""Attempt outcomes: retry classification, what the loop does next, backoff, and the X-Nexus-Attempts header."""

from __future__ import annotations

import re

import pytest

from nexus.gateway.routing.attempts import (
    CONNECT,
    DEFAULT_FAILURES,
    DEFAULT_RETRY,
    ERROR_FRAME,
    LATE,
    OK,
    TIMEOUT,
    Attempt,
    FailureSet,
    Outcome,
    RetryPolicy,
    attempts_header,
    backoff_s,
    decide,
    retryable,
)


@pytest.mark.parametrize("outcome", [
    Outcome.from_status(429), Outcome.from_status(500), Outcome.from_status(502), Outcome.from_status(503),
    Outcome.from_status(504), Outcome.from_status(529), TIMEOUT, CONNECT, ERROR_FRAME,
], ids=str)
def test_retryable_by_default(outcome: Outcome) -> None:
    assert retryable(outcome, DEFAULT_RETRY)
    assert decide(outcome, DEFAULT_RETRY, DEFAULT_FAILURES, 0) == "retry"
    assert decide(outcome, DEFAULT_RETRY, DEFAULT_FAILURES, 1) == "next"  # budget (1 retry) spent


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_final(status: int) -> None:
    outcome = Outcome.from_status(status)
    assert not retryable(outcome, DEFAULT_RETRY)
    assert decide(outcome, DEFAULT_RETRY, DEFAULT_FAILURES, 0) == "stop"


def test_nothing_after_the_first_byte_is_retried() -> None:
    everything = FailureSet(frozenset(range(400, 600)), True, True, True, True)
    policy = RetryPolicy(max_retries=5, retry_on=everything)
    assert not retryable(LATE, policy)
    assert decide(LATE, policy, everything, 0) == "stop"


def test_success_is_done() -> None:
    assert Outcome.from_status(200) == OK
    assert Outcome.from_status(204).kind == "ok"
    assert decide(OK, DEFAULT_RETRY, DEFAULT_FAILURES, 0) == "done"


def test_explicit_sets() -> None:
    only_429 = FailureSet.parse([429])
    policy = RetryPolicy(max_retries=2, retry_on=FailureSet.parse(["timeout"]))
    assert decide(TIMEOUT, policy, only_429, 0) == "retry"
    assert decide(TIMEOUT, policy, only_429, 2) == "stop"  # not a reason to fall back here
    assert decide(Outcome.from_status(429), policy, only_429, 0) == "next"  # not a reason to retry
    assert decide(Outcome.from_status(503), policy, only_429, 0) == "stop"
    with_404 = FailureSet.parse([404, "connect"])
    assert decide(Outcome.from_status(404), RetryPolicy(max_retries=0), with_404, 0) == "next"
    assert decide(CONNECT, RetryPolicy(max_retries=0), with_404, 0) == "next"


def test_failure_set_parse_and_describe() -> None:
    assert FailureSet.parse([429, "5xx", "timeout", "connect", "error_frame"]) == DEFAULT_FAILURES
    assert FailureSet.parse([503, 429, "timeout"]).describe() == [429, 503, "timeout"]
    for bad, message in ((200, "not an HTTP error status"), (600, "not an HTTP error status"),
                         ("4xx", "unknown failure '4xx'"), (True, "neither"), (4.5, "neither")):
        with pytest.raises(ValueError, match=message):
            FailureSet.parse([bad])
    assert OK not in DEFAULT_FAILURES and LATE not in DEFAULT_FAILURES and "503" not in DEFAULT_FAILURES


def test_retry_after() -> None:
    policy = RetryPolicy(max_retries=1, backoff_ms=100, max_backoff_ms=2000)
    short = Outcome.from_status(429, b"1.5")
    assert short.retry_after_s == 1.5
    assert decide(short, policy, DEFAULT_FAILURES, 0) == "retry"
    assert backoff_s(policy, 0, 0.99, short.retry_after_s) == 1.5
    long = Outcome.from_status(429, "30")
    assert decide(long, policy, DEFAULT_FAILURES, 0) == "next"  # longer than we would wait: go elsewhere
    assert Outcome.from_status(503, b"Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s is None
    assert Outcome.from_status(503, b"-1").retry_after_s is None


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff_ms=100, max_backoff_ms=1000)
    for i, step in enumerate((0.1, 0.2, 0.4, 0.8, 1.0, 1.0)):
        low, high = backoff_s(policy, i, 0.0), backoff_s(policy, i, 0.999999)
        assert low == pytest.approx(step / 2) and high == pytest.approx(step, rel=1e-5)
    spread = {round(backoff_s(policy, 2, u / 10), 4) for u in range(10)}
    assert len(spread) == 10
    assert backoff_s(RetryPolicy(backoff_ms=0, max_backoff_ms=0), 3, 0.5) == 0.0
    assert backoff_s(policy, 500, 0.5) == pytest.approx(0.75)  # no overflow on silly retry counts


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError, match="below backoff_ms"):
        RetryPolicy(backoff_ms=300, max_backoff_ms=200)
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        RetryPolicy(max_retries=-1)


def test_health_kind() -> None:
    assert [Outcome.from_status(s).health_kind for s in (200, 400, 404, 408, 429, 500)] == [
        "ok", "client_error", "client_error", "server_error", "rate_limited", "server_error"]
    assert [o.health_kind for o in (TIMEOUT, CONNECT, ERROR_FRAME, LATE)] == [
        "timeout", "connect", "error_frame", "late"]


# RFC 8941 list of sf-string items with parameters, as documented in attempts.py.
_ITEM = re.compile(r'"(?P<target>[^"\\]+)";outcome=(?P<outcome>[a-z_]+)(?:;status=(?P<status>\d+))?;ms=(?P<ms>\d+)')


def test_attempts_header() -> None:
    attempts = [Attempt("openai", "gpt-4o", "status", 503, 0.0412), Attempt("openai", "gpt-4o", "timeout", None, 30),
                Attempt("azure-east", "gpt-4o@2024", "ok", 200, 0.8124)]
    value = attempts_header(attempts)
    assert value == (b'"openai/gpt-4o";outcome=status;status=503;ms=41, "openai/gpt-4o";outcome=timeout;ms=30000, '
                     b'"azure-east/gpt-4o@2024";outcome=ok;status=200;ms=812')
    items = [_ITEM.fullmatch(part) for part in value.decode().split(", ")]
    assert all(items)
    assert [(m["target"], m["outcome"], m["status"]) for m in items if m] == [
        ("openai/gpt-4o", "status", "503"), ("openai/gpt-4o", "timeout", None), ("azure-east/gpt-4o@2024", "ok", "200")]
    assert attempts_header([]) == b""
    assert attempts[0].as_event() == {"provider": "openai", "model": "gpt-4o", "outcome": "status", "status": 503,
                                      "duration_ms": 41.2}
