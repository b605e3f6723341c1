"""``/healthz``, ``/readyz`` and ``/metrics``: the answers, independent of the HTTP stack serving them.

``/healthz`` is liveness: the event loop answered, so 200.  ``/readyz`` is
readiness: 200 only when every dependency is up, else 503, with each
dependency's state in the JSON body either way (never a secret: details are
error messages and redacted URLs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Protocol

from nexus.runtime import metrics
from nexus.runtime.dependency import DependencyState


class HasState(Protocol):
    @property
    def state(self) -> DependencyState: ...


HEALTHZ_BODY = b'{"status":"ok"}'
JSON = b"application/json"


def readiness(daemon: str, dependencies: Sequence[HasState], draining: bool = False) -> tuple[int, bytes]:
    now = time.monotonic()
    deps = {}
    ok = not draining
    for dep in dependencies:
        state = dep.state
        metrics.UP.labels(state.name).set(1 if state.ok else 0)
        ok = ok and state.ok
        deps[state.name] = {"ok": state.ok, "detail": state.detail, "for_s": round(now - state.since, 1)}
    body = {"status": "ready" if ok else ("draining" if draining else "unavailable"), "daemon": daemon,
            "dependencies": deps}
    return (200 if ok else 503), json.dumps(body, separators=(",", ":")).encode()


def metrics_body() -> tuple[bytes, bytes]:
    return metrics.render(), metrics.CONTENT_TYPE.encode()
