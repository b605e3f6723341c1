"""The I/O vocabulary between the pure pipeline and a pipe's shell.  Pure.

A hook that needs the outside world (an HTTP call, a shared counter) yields a
``Command``; the pipeline stamps it with the hook id and the hook's timeout and
hands it to the shell, which performs it and sends back exactly one ``Reply``:
the command's own reply type on success, ``Timeout()`` when ``timeout_s`` ran
out first, ``Failure(error)`` for anything else (connection refused, Valkey
down).  The pipeline turns ``Timeout`` and ``Failure`` into the hook's fail
behavior; hooks never see them.

Commands:

``CallWebhook``
    POST ``body`` (JSON) to ``url`` with ``headers``; reply ``WebhookReply``
    with the status and the body (the shell may cap the body at 1 MiB).
``IncrementCounter``
    add ``amount`` to the counter ``key`` within a window of ``window_s``
    seconds (the shell picks fixed or sliding windows in Valkey); reply
    ``CounterReply`` with the count in the window including this increment and
    the seconds until it decreases (for ``Retry-After``).
"""

from __future__ import annotations

import attrs

__all__ = [
    "CallWebhook",
    "Command",
    "CounterReply",
    "Failure",
    "IncrementCounter",
    "Reply",
    "Timeout",
    "WebhookReply",
]


@attrs.frozen(slots=True)
class CallWebhook:
    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    hook_id: str = ""
    timeout_s: float = 0.0


@attrs.frozen(slots=True)
class IncrementCounter:
    key: str
    window_s: float
    amount: int = 1
    hook_id: str = ""
    timeout_s: float = 0.0


Command = CallWebhook | IncrementCounter


@attrs.frozen(slots=True)
class WebhookReply:
    status: int
    body: bytes


@attrs.frozen(slots=True)
class CounterReply:
    count: int
    reset_after_s: float


@attrs.frozen(slots=True)
class Timeout:
    pass


@attrs.frozen(slots=True)
class Failure:
    error: str


Reply = WebhookReply | CounterReply | Timeout | Failure
