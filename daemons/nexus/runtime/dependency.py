"""Health of one external dependency (a database, Valkey, NATS), as ``/readyz`` reports it.

Each client owns one ``DependencyState`` and flips it as it connects and loses
its server; the runtime only reads it.  Plain data, no I/O, no Trio: any client
can use it, and so can tests.
"""

from __future__ import annotations

import time

import attrs


@attrs.define
class DependencyState:
    """Whether a dependency is usable right now, why, and since when.

    ``since`` is a ``time.monotonic()`` stamp of the last change of ``ok``, so
    ``/readyz`` can say how long a server has been down; a new ``detail`` with
    the same ``ok`` (say, the next failed reconnect) does not move it.
    """

    name: str
    ok: bool = False
    detail: str = "not connected"
    since: float = attrs.field(factory=time.monotonic)

    def mark_up(self, detail: str = "ok") -> None:
        if not self.ok:
            self.ok = True
            self.since = time.monotonic()
        self.detail = detail

    def mark_down(self, detail: str) -> None:
        if self.ok:
            self.ok = False
            self.since = time.monotonic()
        self.detail = detail
