"""Behaviour knobs of the mock provider, per process and per request.

Every knob has a per-process default in ``[mock_provider]`` of the config (the
field of the same name) and a per-request override in an ``x-mock-<name>``
header (underscores become dashes).  A header value that does not parse is a
400 in the dialect's error shape naming the header.

=====================  ======================  ==============================================
header                 config field            effect
=====================  ======================  ==============================================
x-mock-ttft-ms         ttft_ms                 milliseconds before the first byte (status line)
                                               of an answer, stream or not
x-mock-chunk-delay-ms  chunk_delay_ms          milliseconds between two streamed content chunks
x-mock-chunks          chunks                  how many content chunks a streamed answer (and
                                               its tool-call arguments) is split into; also the
                                               number of slices of a slow body (default 5)
x-mock-status          status                  answer with this HTTP status (400-599) and the
                                               dialect's error body instead of generating;
                                               429/503/529 carry ``retry-after``
x-mock-retry-after     retry_after             seconds put in ``retry-after`` (default 1)
x-mock-error-after     error_after             streams: after K content chunks (text,
                                               thinking or argument deltas) send the
                                               dialect's error frame (OpenAI ``data: {"error"}``,
                                               Responses ``event: error``, Anthropic
                                               ``event: error``, Gemini ``{"error"}``) and end
                                               the stream cleanly; -1 = off
x-mock-close-after     close_after             streams: after K content chunks close the
                                               connection abruptly (no terminating chunk);
                                               -1 = off
x-mock-error-on-200    error_on_200            ``true``: status 200, then the dialect's error
                                               frame as the very first frame of the stream, or
                                               as the whole body of a non-stream answer
x-mock-hang            hang                    seconds to wait before answering anything;
                                               ``true`` waits ``hang_limit`` (config only,
                                               default 300 s, also the cap). The wait ends
                                               early when the client goes away; if it runs
                                               out, the answer is a 504 in the dialect's
                                               error shape
x-mock-slow-body-ms    slow_body_ms            non-stream answers (embeddings and
                                               count_tokens too): the body is sent in
                                               ``chunks`` slices (chunked encoding) with this
                                               many milliseconds between slices
x-mock-answer          answer                  fixed answer text instead of "Echo: <prompt>"
                                               (tool calls and structured output unaffected)
x-mock-cached-tokens   cached_tokens           prompt tokens to report as cached (capped at
                                               the prompt's token count)
x-mock-model           model                   model name to report instead of the requested
=====================  ======================  ==============================================

Knobs apply to the generation routes (chat completions, responses, messages,
generateContent / streamGenerateContent); ``status``, ``hang``, ``ttft_ms`` and
``slow_body_ms`` apply to embeddings and count_tokens too.  Mid-stream knobs on
a non-stream request are ignored.  ``/v1/models`` and ``/_mock/*`` ignore knobs.

Pure and synchronous: ``parse`` raises ``KnobError`` for a bad header value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from nexus.config.schema import MockProviderConfig

PREFIX = "x-mock-"


class KnobError(ValueError):
    """An ``x-mock-*`` header with a value that does not parse; ``str()`` names it."""


@attrs.frozen(slots=True)
class Knobs:
    ttft_ms: int = 0
    chunk_delay_ms: int = 0
    chunks: int = 5
    status: int = 0
    retry_after: int = 1
    error_after: int = -1
    close_after: int = -1
    error_on_200: bool = False
    hang: float = 0.0
    slow_body_ms: int = 0
    answer: str = ""
    cached_tokens: int = 0
    model: str = ""

    @property
    def streams_plainly(self) -> bool:
        """True when a stream needs no per-chunk pacing or fault: it can go out in one write."""
        return self.chunk_delay_ms == 0 and self.error_after < 0 and self.close_after < 0 and not self.error_on_200


def from_config(config: MockProviderConfig) -> Knobs:
    return Knobs(**{f.name: getattr(config, f.name) for f in attrs.fields(Knobs)})


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if number < low or (high is not None and number > high):
            raise ValueError(value)
        return number

    return parse


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _status(value: str) -> int:
    number = int(value)
    if number != 0 and not 400 <= number <= 599:
        raise ValueError(value)
    return number


def _text(value: str) -> str:
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "ttft_ms": _int(0),
    "chunk_delay_ms": _int(0),
    "chunks": _int(1, 10_000),
    "status": _status,
    "retry_after": _int(0),
    "error_after": _int(-1),
    "close_after": _int(-1),
    "error_on_200": _bool,
    "slow_body_ms": _int(0),
    "answer": _text,
    "cached_tokens": _int(0),
    "model": _text,
}


def _hang(value: str, limit: float) -> float:
    if value.strip().lower() in ("true", "forever"):
        return limit
    seconds = float(value)
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(value)
    return min(seconds, limit)


def parse(defaults: Knobs, headers: Iterable[tuple[str, str]], hang_limit: float) -> Knobs:
    """``defaults`` overridden by the ``x-mock-*`` pairs in ``headers`` (lowercase names)."""
    changes: dict[str, Any] = {}
    for name, value in headers:
        key = name[len(PREFIX) :].replace("-", "_")
        parser = _PARSERS.get(key)
        if parser is None and key != "hang":
            raise KnobError(f"unknown knob header {name}")
        try:
            changes[key] = _hang(value, hang_limit) if parser is None else parser(value)
        except ValueError:
            raise KnobError(f"bad value for header {name}: {value!r}") from None
    return attrs.evolve(defaults, **changes) if changes else defaults
