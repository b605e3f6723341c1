"""The mock provider's request handler: routing, auth, knobs, faults, streaming, introspection.

``make_handler(config)`` returns the ``Handler`` the HTTP/1.1 server calls.
Routes (anything else is 404, a known path with the wrong method 405, both in
the OpenAI error shape unless the path is Anthropic's or Gemini's):

* OpenAI — ``POST /v1/chat/completions``, ``POST /v1/responses``,
  ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{id}``;
* Anthropic — ``POST /v1/messages``, ``POST /v1/messages/count_tokens``;
* Gemini — ``POST /v1beta/models/{model}:generateContent``,
  ``:streamGenerateContent`` (SSE with ``?alt=sse``, else a streamed JSON
  array), ``:embedContent``, ``:batchEmbedContents`` (``/v1/models/…`` too);
* introspection — ``GET /_mock/requests[?limit=N]`` lists the last recorded
  requests, oldest first: method, path, query, headers (credentials replaced
  by ``sha256:`` and 16 hex digits, see ``secret_hash``), body as text (its
  first MiB) and ``body_bytes``; ``DELETE /_mock/requests`` clears them.

Per request the handler checks the key (when ``api_key`` is configured: 401 in
the dialect's shape), applies the knobs of ``nexus.mock.knobs`` (hang, TTFT,
injected status), parses and answers.  A malformed body is a 400 in the
dialect's shape.  Streams are async generators handed to the server, which
writes each yielded piece as one chunk; frames between two delays are joined
into one piece so an unpaced stream costs one write.

Errors: ``close_after`` raises ``AbortConnection`` from the stream body, so
the server drops the connection without the chunked terminator (and logs it);
any other exception is a bug and propagates to the server, which answers 500.
A hang is a sleep that the server cancels when the client goes away.

Resources: the handler owns nothing that needs closing.  Recording is a
bounded deque of the raw request pieces (``record_limit`` entries); masking
and decoding happen only when ``/_mock/requests`` is read.  Response header
lists on the hot path are shared module constants: wrappers must copy before
adding headers.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import attrs
import orjson
import trio

from nexus.config.schema import MockProviderConfig
from nexus.mock import anthropic, gemini, knobs, openai
from nexus.mock.knobs import KnobError, Knobs
from nexus.mock.textgen import Frames, MalformedRequest, plan
from nexus.net.http1.types import Handler, Request, Response

__all__ = ["AbortConnection", "MockApp", "make_handler"]

JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_KNOB_PREFIX = knobs.PREFIX.encode()
_SECRET_HEADERS = frozenset(
    (b"authorization", b"proxy-authorization", b"x-api-key", b"x-goog-api-key", b"api-key", b"cookie")
)
_RETRYABLE = frozenset((429, 503, 529))
_GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")

# (time, method, path, query, raw headers, body — cut at _RECORD_BODY_MAX, full body length)
Record = tuple[float, str, str, str, list[tuple[bytes, bytes]], bytes, int]
# Bounds the records' memory: 200 records of 32 MiB bodies would be 6 GiB.
_RECORD_BODY_MAX = 1 << 20
# Parses the request body into an answer: bytes for a plain JSON body, Frames for a stream.
Build = Callable[[Any, Knobs, Request], "bytes | Frames"]


class AbortConnection(Exception):
    """Raised from a stream body to make the server drop the connection (``close_after`` knob)."""


@attrs.frozen
class _Dialect:
    error_body: Callable[[int, str | None], bytes]
    # Header names that may carry the key, and whether ``Authorization: Bearer`` counts.
    key_headers: tuple[bytes, ...]
    bearer: bool
    query_key: bool


_OPENAI = _Dialect(openai.error_body, (), bearer=True, query_key=False)
_ANTHROPIC = _Dialect(anthropic.error_body, (b"x-api-key",), bearer=True, query_key=False)
_GEMINI = _Dialect(gemini.error_body, (b"x-goog-api-key",), bearer=False, query_key=True)


def _mask(value: bytes) -> str:
    text = value.decode("latin-1")
    scheme, sep, secret = text.partition(" ")
    if not sep:
        scheme, secret = "", text
    digest = hashlib.sha256(secret.encode("latin-1")).hexdigest()[:16]
    return f"{scheme} sha256:{digest}" if scheme else f"sha256:{digest}"


def secret_hash(secret: str) -> str:
    """How a secret appears in ``/_mock/requests``: ``sha256:`` and 16 hex digits."""
    return "sha256:" + hashlib.sha256(secret.encode("latin-1")).hexdigest()[:16]


def _masked_query(query: str) -> str:
    if "key=" not in query:
        return query
    parts = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        parts.append(f"{name}={_mask(value.encode('latin-1'))}" if sep and name == "key" else item)
    return "&".join(parts)


class MockApp:
    """The handler object; ``make_handler`` is the usual way to get one."""

    def __init__(self, config: MockProviderConfig) -> None:
        self._defaults = knobs.from_config(config)
        self._hang_limit = config.hang_limit
        self._key = config.api_key.encode("latin-1")
        self._bearer = b"Bearer " + self._key
        self._records: deque[Record] | None = deque(maxlen=config.record_limit) if config.record_requests else None
        self._routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("POST", "/v1/chat/completions"): lambda r: self._serve(r, _OPENAI, self._chat, True),
            ("POST", "/v1/responses"): lambda r: self._serve(r, _OPENAI, self._responses, True),
            ("POST", "/v1/embeddings"): lambda r: self._serve(r, _OPENAI, self._embeddings, False),
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages"): lambda r: self._serve(r, _ANTHROPIC, self._messages, True),
            ("POST", "/v1/messages/count_tokens"): lambda r: self._serve(r, _ANTHROPIC, self._count_tokens, False),
            ("GET", "/_mock/requests"): self._list_records,
            ("DELETE", "/_mock/requests"): self._clear_records,
        }
        self._paths = frozenset(path for _, path in self._routes)

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if self._records is not None and not path.startswith("/_mock/"):
            body = request.body
            self._records.append(
                (
                    time.time(),
                    request.method,
                    path,
                    request.query,
                    request.headers.raw(),
                    body if len(body) <= _RECORD_BODY_MAX else body[:_RECORD_BODY_MAX],
                    len(body),
                )
            )
        route = self._routes.get((request.method, path))
        if route is not None:
            response: Response = await route(request)
            return response
        if path.startswith(_GEMINI_PREFIXES):
            return await self._gemini(request, path)
        dialect = _ANTHROPIC if path.startswith("/v1/messages") else _OPENAI
        if path in self._paths:
            return Response(405, list(JSON), dialect.error_body(405, f"Method {request.method} not allowed."))
        return Response(404, list(JSON), dialect.error_body(404, f"Unknown path {path}."))

    # ------------------------------------------------------------------------------------ shared flow

    def _authorized(self, request: Request, dialect: _Dialect) -> bool:
        if not self._key:
            return True
        raw = request.headers.raw()
        for name, value in raw:
            if name in dialect.key_headers and hmac.compare_digest(value, self._key):
                return True
            if dialect.bearer and name == b"authorization" and hmac.compare_digest(value, self._bearer):
                return True
        if dialect.query_key and request.query:
            return any(hmac.compare_digest(k.encode(), self._key) for k in parse_qs(request.query).get("key", ()))
        return False

    def _knobs(self, request: Request) -> Knobs:
        pairs = [
            (name.decode("latin-1"), value.decode("utf-8", "replace"))
            for name, value in request.headers.raw()
            if name.startswith(_KNOB_PREFIX)
        ]
        return knobs.parse(self._defaults, pairs, self._hang_limit) if pairs else self._defaults

    async def _serve(self, request: Request, dialect: _Dialect, build: Build, generation: bool) -> Response:
        if not self._authorized(request, dialect):
            return Response(401, list(JSON), dialect.error_body(401, None))
        try:
            knob = self._knobs(request)
        except KnobError as exc:
            return Response(400, list(JSON), dialect.error_body(400, str(exc)))
        if knob.hang:
            # The server cancels this sleep as soon as the client goes away.
            await trio.sleep(knob.hang)
            return Response(504, list(JSON), dialect.error_body(504, "The mock provider hung (x-mock-hang)."))
        if knob.ttft_ms:
            await trio.sleep(knob.ttft_ms / 1000)
        if knob.status:
            headers = list(JSON)
            if knob.status in _RETRYABLE:
                headers.append((b"retry-after", str(knob.retry_after).encode()))
            return Response(knob.status, headers, dialect.error_body(knob.status, None))
        try:
            result = build(orjson.loads(request.body), knob, request)
        except orjson.JSONDecodeError:
            return Response(
                400, list(JSON), dialect.error_body(400, "We could not parse the JSON body of your request.")
            )
        except MalformedRequest as exc:
            return Response(400, list(JSON), dialect.error_body(400, str(exc)))
        if isinstance(result, bytes):
            if generation and knob.error_on_200:
                return Response(200, list(JSON), dialect.error_body(500, None))
            if knob.slow_body_ms:
                return Response(200, list(JSON), _dribble(result, knob))
            return Response(200, JSON, result)
        headers = JSON if result.json_array else SSE
        return Response(200, list(headers), _emit(result, knob))

    # ------------------------------------------------------------------------------------ OpenAI

    def _chat(self, body: Any, knob: Knobs, _request: Request) -> bytes | Frames:
        prompt = openai.parse_chat(body)
        answer = plan(prompt, knob)
        return openai.stream_chat(answer, prompt) if prompt.stream else openai.render_chat(answer)

    def _responses(self, body: Any, knob: Knobs, _request: Request) -> bytes | Frames:
        prompt, echo = openai.parse_responses(body)
        answer = plan(prompt, knob)
        return openai.stream_responses(answer, echo) if prompt.stream else openai.render_responses(answer, echo)

    def _embeddings(self, body: Any, knob: Knobs, _request: Request) -> bytes:
        return openai.embed(body, knob.model)

    async def _models(self, request: Request) -> Response:
        if not self._authorized(request, _OPENAI):
            return Response(401, list(JSON), openai.error_body(401, None))
        return Response(200, JSON, openai.MODELS_BODY)

    # ------------------------------------------------------------------------------------ Anthropic

    def _messages(self, body: Any, knob: Knobs, _request: Request) -> bytes | Frames:
        prompt = anthropic.parse(body)
        answer = plan(prompt, knob)
        return anthropic.stream(answer) if prompt.stream else anthropic.render(answer)

    def _count_tokens(self, body: Any, _knob: Knobs, _request: Request) -> bytes:
        return anthropic.count_tokens(body)

    # ------------------------------------------------------------------------------------ Gemini

    async def _gemini(self, request: Request, path: str) -> Response:
        rest = path[path.index("/models/") + len("/models/") :]
        model, colon, action = rest.partition(":")
        if not colon:
            if request.method == "GET" and path.startswith("/v1/models/") and model:
                if not self._authorized(request, _OPENAI):
                    return Response(401, list(JSON), openai.error_body(401, None))
                return Response(200, JSON, openai.model_body(model))
            return Response(404, list(JSON), gemini.error_body(404, f"Unknown path {path}."))
        if request.method != "POST":
            return Response(405, list(JSON), gemini.error_body(405, f"Method {request.method} not allowed."))

        def generate(body: Any, knob: Knobs, req: Request) -> bytes | Frames:
            prompt = gemini.parse(body, model)
            answer = plan(prompt, knob)
            if action == "streamGenerateContent":
                return gemini.stream(answer, prompt, sse="sse" in parse_qs(req.query).get("alt", ()))
            return gemini.render(answer, prompt)

        if action in ("generateContent", "streamGenerateContent"):
            return await self._serve(request, _GEMINI, generate, True)
        if action == "embedContent":
            return await self._serve(request, _GEMINI, lambda b, _k, _r: gemini.embed_content(b, model), False)
        if action == "batchEmbedContents":
            return await self._serve(request, _GEMINI, lambda b, _k, _r: gemini.batch_embed_contents(b, model), False)
        return Response(404, list(JSON), gemini.error_body(404, f"Unknown method {action!r}."))

    # ------------------------------------------------------------------------------------ introspection

    async def _list_records(self, request: Request) -> Response:
        records = list(self._records or ())
        limit = parse_qs(request.query).get("limit")
        if limit and limit[0].isdigit():
            records = records[-int(limit[0]) :] if int(limit[0]) else []
        out = []
        for at, method, path, query, headers, body, size in records:
            shown: dict[str, str] = {}
            for name, value in headers:
                key = name.decode("latin-1")
                text = _mask(value) if name in _SECRET_HEADERS else value.decode("latin-1")
                shown[key] = f"{shown[key]}, {text}" if key in shown else text
            out.append(
                {
                    "time": at,
                    "method": method,
                    "path": path,
                    "query": _masked_query(query),
                    "headers": shown,
                    "body": body.decode("utf-8", "replace"),
                    "body_bytes": size,
                }
            )
        return Response(200, JSON, orjson.dumps({"recording": self._records is not None, "requests": out}))

    async def _clear_records(self, _request: Request) -> Response:
        if self._records is not None:
            self._records.clear()
        return Response(204)


async def _emit(frames: Frames, knob: Knobs) -> AsyncIterator[bytes]:
    if knob.error_on_200:
        yield frames.error(-1)
        return
    if knob.streams_plainly:
        yield b"".join((*frames.head, *frames.content, *frames.tail))
        return
    content = frames.content
    cut = len(content) + 1
    if knob.error_after >= 0:
        cut = min(knob.error_after, len(content))
    if knob.close_after >= 0:
        cut = min(cut, knob.close_after, len(content))
    delay = knob.chunk_delay_ms / 1000
    pending = b"".join(frames.head)
    for i, frame in enumerate(content):
        if i == cut:
            break
        if i and delay:
            yield pending
            pending = b""
            await trio.sleep(delay)
        pending += frame
    else:
        if cut > len(content):
            yield pending + b"".join(frames.tail)
            return
    if pending:
        yield pending
    if knob.close_after >= 0 and (knob.error_after < 0 or knob.close_after <= knob.error_after):
        raise AbortConnection("close_after knob")
    yield frames.error(cut)


async def _dribble(body: bytes, knob: Knobs) -> AsyncIterator[bytes]:
    slices = max(knob.chunks, 2)
    size = -(-len(body) // slices)
    delay = knob.slow_body_ms / 1000
    for start in range(0, len(body), size):
        if start:
            await trio.sleep(delay)
        yield body[start : start + size]


def make_handler(config: MockProviderConfig) -> Handler:
    """The mock provider as an HTTP handler; one instance per process (it holds the request records)."""
    return MockApp(config)
