"""A circuit breaker for the embedding endpoint.  Pure: the caller passes the clock.

``closed``: calls go through; ``failures`` consecutive failures open it.
``open``: calls are refused for ``open_seconds``; then the next caller gets
the one half-open probe.  ``half_open``: the probe's success closes the
breaker, its failure opens it again for another ``open_seconds``; other
callers are refused while the probe is out.  A probe that never reports (its
request was cancelled) must be handed back with ``abandon`` so the next
caller may probe.

Use::

    if not breaker.allow(now):
        ...                                  # refused: treat as a miss
    try:
        ok = await call()
    except BaseException:
        breaker.abandon()
        raise
    breaker.record(ok, now)
"""

from __future__ import annotations

from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    __slots__ = ("_opened_at", "_probing", "failures", "open_seconds", "opened", "state", "threshold")

    def __init__(self, failures: int = 5, open_seconds: float = 30.0) -> None:
        if failures < 1 or open_seconds <= 0:
            raise ValueError("a breaker needs at least one failure to open and a positive open time")
        self.threshold = failures
        self.open_seconds = open_seconds
        self.state: State = "closed"
        self.failures = 0
        self.opened = 0  # times it opened, for metrics and tests
        self._opened_at = 0.0
        self._probing = False

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open":
            if now < self._opened_at + self.open_seconds:
                return False
            self.state = "half_open"
        if self._probing:
            return False
        self._probing = True
        return True

    def record(self, ok: bool, now: float) -> None:
        probe, self._probing = self._probing, False
        if ok:
            self.state, self.failures = "closed", 0
            return
        if self.state == "open":
            return  # a call that started before it opened: it is open already
        self.failures += 1
        if (probe and self.state == "half_open") or self.failures >= self.threshold:
            self.state, self._opened_at = "open", now
            self.opened += 1

    def abandon(self) -> None:
        """A call that will never report (cancelled): if it was the probe, the next caller probes."""
        self._probing = False
