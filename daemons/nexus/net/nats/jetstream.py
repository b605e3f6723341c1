"""The JetStream API subjects Nexus uses, over a :class:`~nexus.net.nats.client.NatsClient`.

Streams and durable pull consumers are *ensured*: created when missing,
updated when their configuration changed, left alone when it did not, so every
daemon can call ``ensure_*`` at start.  Publishing waits for the stream's
``PubAck``; a ``msg_id`` goes out as ``Nats-Msg-Id`` so that a retry inside the
stream's duplicate window is acknowledged as a duplicate instead of being
stored twice.  ``publish_many`` keeps up to ``window`` publishes in flight on
one reply subject and returns the acks in input order: the audit emitter's path.
``fetch`` is a pull (``CONSUMER.MSG.NEXT``) with a batch size and an expiry;
it returns whatever arrived, possibly nothing, when the server ends the pull.

JetStream's durations are nanoseconds on the wire; this API takes seconds.

Resource handling: nothing here owns a connection; the caller runs and closes
the client.  ``fetch`` holds a subscription and ``publish_many`` an inbox for the
call only.

Error handling: an API error object becomes :class:`JetStreamError` (code,
err_code, description); so does a 409 status on a pull that got no message
(consumer deleted, too many waiting pulls), except the server shutting down or
the consumer changing leader, which just end the pull.
:class:`NatsNoResponders` means nothing answered the subject: no stream
captures a published subject, or JetStream is not enabled.
:class:`NatsTimeout` on a publish leaves it unknown whether the stream stored
the message: retry with the same ``msg_id``.  Connection loss surfaces as
:class:`NatsConnectionError`, except that a pull in progress just ends early;
messages fetched but not acked are redelivered after the consumer's
``ack_wait``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import trio

from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import (
    JetStreamError,
    NatsConnectionError,
    NatsError,
    NatsNoResponders,
    NatsPayloadTooLarge,
    NatsProtocolError,
    NatsTimeout,
)
from nexus.net.nats.protocol import Msg

__all__ = ["JetStream", "JetStreamPublishError", "JsMsg", "JsPublish", "PubAck"]

NS = 1_000_000_000
MSG_ID = "Nats-Msg-Id"
ERR_STREAM_NAME_IN_USE = 10058
# Pull status messages: no messages (no_wait), request expired, request ended
# by the server (consumer deleted, too many waiting pulls, ...), idle heartbeat.
_STATUS_NO_MESSAGES = 404
_STATUS_EXPIRED = 408
_STATUS_CONFLICT = 409
_STATUS_HEARTBEAT = 100
# 409s that only end this pull (the next one works): the server is going away
# or the consumer moved.  Every other 409 (consumer deleted, too many waiting
# pulls, ...) will fail again, so it is raised.
_TRANSIENT_CONFLICTS = ("server shutdown", "leadership change")
# A stream or consumer name is one subject token.
_BAD_NAME = re.compile(r"[\x00-\x20\x7f.*>]")


def _check_name(name: str, what: str) -> str:
    if not name or _BAD_NAME.search(name):
        raise ValueError(f"invalid JetStream {what} name {name!r}")
    return name


def _ns(seconds: float) -> int:
    return int(seconds * NS)


@attrs.frozen(slots=True)
class PubAck:
    stream: str
    seq: int
    duplicate: bool = False


@attrs.frozen(slots=True)
class JsPublish:
    """One message for :meth:`JetStream.publish_many`."""

    subject: str
    payload: bytes
    msg_id: str | None = None
    headers: Mapping[str, str] | None = None


class JetStreamPublishError(NatsError):
    """Some messages of a ``publish_many`` batch were not acknowledged.

    ``results`` holds, in input order, the ``PubAck`` of every message the stream
    stored and the :class:`NatsError` that stopped each of the others, so the
    caller can retry exactly those (their ``msg_id`` keeps a retry of a message
    that was in fact stored from being stored twice).
    """

    def __init__(self, results: list[PubAck | NatsError]) -> None:
        errors = [r for r in results if isinstance(r, NatsError)]
        super().__init__(f"{len(errors)} of {len(results)} messages not acknowledged (first: {errors[0]})")
        self.results = results


@attrs.define(slots=True)
class JsMsg:
    """A message fetched from a pull consumer, with the metadata of its ``$JS.ACK`` reply subject."""

    subject: str
    data: bytes
    headers: Mapping[str, str] | None
    reply: str
    stream: str
    consumer: str
    num_delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    num_pending: int
    _client: NatsClient = attrs.field(repr=False)
    _acked: bool = attrs.field(default=False, repr=False)

    @property
    def timestamp(self) -> float:
        """When the stream stored the message, in seconds since the epoch."""
        return self.timestamp_ns / NS

    async def ack(self) -> None:
        await self._reply(b"+ACK")

    async def ack_sync(self, timeout: float = 2.0) -> None:
        """Ack and wait until the server confirms it processed the ack."""
        self._settle()
        await self._client.request(self.reply, b"+ACK", timeout=timeout)

    async def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery, after ``delay`` s if given, else as soon as possible."""
        if delay is None:
            await self._reply(b"-NAK")
        else:
            await self._reply(b'-NAK {"delay":%d}' % _ns(delay))

    async def term(self) -> None:
        """Never redeliver this message."""
        await self._reply(b"+TERM")

    async def in_progress(self) -> None:
        """Reset the ack timer: still working on it."""
        await self._client.publish(self.reply, b"+WPI")

    def _settle(self) -> None:
        if self._acked:
            raise NatsError(f"message {self.stream}/{self.stream_seq} was already acknowledged")
        self._acked = True

    async def _reply(self, body: bytes) -> None:
        self._settle()
        await self._client.publish(self.reply, body)

    @classmethod
    def from_msg(cls, msg: Msg, client: NatsClient) -> JsMsg:
        """Build from a delivered message; its reply subject must be a ``$JS.ACK`` subject."""
        reply = msg.reply or ""
        tokens = reply.split(".")
        # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        # v2: $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        #     optionally followed by a random token.
        if tokens[:2] != ["$JS", "ACK"] or len(tokens) not in (9, 11, 12):
            raise NatsProtocolError(f"not a JetStream ack subject: {reply!r}")
        at = 2 if len(tokens) == 9 else 4
        try:
            numbers = [int(t) for t in tokens[at + 2 : at + 7]]
        except ValueError:
            raise NatsProtocolError(f"malformed JetStream ack subject: {reply!r}") from None
        delivered, sseq, cseq, ts, pending = numbers
        return cls(
            msg.subject, msg.data, msg.headers, reply, tokens[at], tokens[at + 1],
            delivered, sseq, cseq, ts, pending, client,
        )


def _with_msg_id(headers: Mapping[str, str] | None, msg_id: str | None) -> Mapping[str, str] | None:
    if msg_id is None:
        return headers
    if headers is None:
        return {MSG_ID: msg_id}
    return {**headers, MSG_ID: msg_id}


def _pub_ack(msg: Msg, subject: str) -> PubAck:
    if msg.status == 503:
        raise NatsNoResponders(f"no stream captures subject {subject}")
    try:
        body = json.loads(msg.data)
        error = body.get("error")
        if error is None:
            return PubAck(body["stream"], int(body["seq"]), bool(body.get("duplicate", False)))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise NatsProtocolError(f"malformed PubAck: {msg.data[:200]!r}") from None
    raise _api_error(error)


def _api_error(error: Mapping[str, Any]) -> JetStreamError:
    return JetStreamError(
        int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description", ""))
    )


class JetStream:
    """JetStream over ``client``; ``prefix`` is the API subject prefix (another for a JetStream domain)."""

    def __init__(self, client: NatsClient, *, prefix: str = "$JS.API", api_timeout: float = 5.0) -> None:
        self._client = client
        self._prefix = prefix
        self._api_timeout = api_timeout

    async def _api(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        msg = await self._client.request(f"{self._prefix}.{path}", payload, timeout=self._api_timeout)
        try:
            response = json.loads(msg.data)
        except ValueError:
            raise NatsProtocolError(f"JetStream API reply is not JSON: {msg.data[:200]!r}") from None
        if not isinstance(response, dict):
            raise NatsProtocolError("JetStream API reply is not an object")
        error = response.get("error")
        if error is not None:
            raise _api_error(error)
        return response

    # ---------------------------------------------------------------- streams

    async def ensure_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None = None,
        max_bytes: int | None = None,
        storage: Literal["file", "memory"] = "file",
        duplicate_window: float = 120.0,
        replicas: int = 1,
    ) -> dict[str, Any]:
        """Create the stream, or update it to this configuration; returns the stream info.

        A change the server cannot make in place (storage type, replicas on a
        single server) raises :class:`JetStreamError`.
        """
        _check_name(name, "stream")
        if max_age is not None:
            # The server refuses a duplicate window longer than the retention.
            duplicate_window = min(duplicate_window, max_age)
        config = {
            "name": name,
            "subjects": list(subjects),
            "retention": "limits",
            "max_consumers": -1,
            "max_msgs": -1,
            "max_bytes": -1 if max_bytes is None else max_bytes,
            "max_age": 0 if max_age is None else _ns(max_age),
            "max_msg_size": -1,
            "storage": storage,
            "discard": "old",
            "num_replicas": replicas,
            "duplicate_window": _ns(duplicate_window),
        }
        try:
            return await self._api(f"STREAM.CREATE.{name}", config)
        except JetStreamError as exc:
            if exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise
        return await self._api(f"STREAM.UPDATE.{name}", config)

    async def stream_info(self, name: str) -> dict[str, Any]:
        return await self._api(f"STREAM.INFO.{_check_name(name, 'stream')}")

    async def delete_stream(self, name: str) -> None:
        await self._api(f"STREAM.DELETE.{_check_name(name, 'stream')}")

    # -------------------------------------------------------------- consumers

    async def ensure_consumer(
        self,
        stream: str,
        durable: str,
        *,
        filter_subject: str | None = None,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        max_ack_pending: int = 20_000,
    ) -> dict[str, Any]:
        """Create the durable pull consumer (explicit ack), or update it; returns the consumer info.

        A change the server cannot make in place raises :class:`JetStreamError`.
        """
        _check_name(stream, "stream")
        _check_name(durable, "consumer")
        config: dict[str, Any] = {
            "durable_name": durable,
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": _ns(ack_wait),
            "max_deliver": max_deliver,
            "replay_policy": "instant",
            "max_ack_pending": max_ack_pending,
        }
        if filter_subject is not None:
            config["filter_subject"] = filter_subject
        return await self._api(
            f"CONSUMER.DURABLE.CREATE.{stream}.{durable}", {"stream_name": stream, "config": config}
        )

    async def consumer_info(self, stream: str, durable: str) -> dict[str, Any]:
        _check_name(stream, "stream")
        return await self._api(f"CONSUMER.INFO.{stream}.{_check_name(durable, 'consumer')}")

    async def delete_consumer(self, stream: str, durable: str) -> None:
        _check_name(stream, "stream")
        await self._api(f"CONSUMER.DELETE.{stream}.{_check_name(durable, 'consumer')}")

    # ------------------------------------------------------------- publishing

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 2.0,
    ) -> PubAck:
        """Publish and wait for the stream's ack (``duplicate`` is True for a repeated ``msg_id``)."""
        reply = await self._client.request(subject, payload, _with_msg_id(headers, msg_id), timeout)
        return _pub_ack(reply, subject)

    async def publish_many(
        self,
        messages: Sequence[JsPublish],
        *,
        window: int = 256,
        timeout: float = 5.0,
    ) -> list[PubAck]:
        """Publish with up to ``window`` awaiting their ack; the acks come back in input order.

        ``timeout`` bounds the wait for the next ack.  If any message fails,
        the rest are still tried (unless the connection dropped or acks stopped
        coming) and :class:`JetStreamPublishError` reports each message's outcome.
        """
        client = self._client
        count = len(messages)
        results: list[PubAck | NatsError | None] = [None] * count
        stop: NatsError | None = None
        sent = in_flight = 0
        with client.inbox(window) as box:
            base = box.subject + "."
            cut = len(base)
            while stop is None and (sent < count or in_flight):
                while sent < count and in_flight < window:
                    m = messages[sent]
                    try:
                        headers = _with_msg_id(m.headers, m.msg_id)
                        await client.publish(m.subject, m.payload, headers, f"{base}{sent}")
                    except NatsPayloadTooLarge as exc:
                        results[sent] = exc
                    except NatsConnectionError as exc:
                        stop = exc
                        break
                    else:
                        in_flight += 1
                    sent += 1
                if stop is not None or not in_flight:
                    continue
                try:
                    reply = await box.receive(trio.current_time() + timeout)
                except NatsConnectionError as exc:
                    stop = exc
                    continue
                if reply is None:
                    stop = NatsTimeout(f"no PubAck within {timeout} s ({in_flight} outstanding)")
                    continue
                # Take every ack already here before refilling the window, so the
                # refill goes out as one write instead of one per ack.
                for ack in (reply, *box.drain()):
                    try:
                        index = int(ack.subject[cut:])
                    except ValueError:
                        continue
                    if not 0 <= index < sent or results[index] is not None:
                        continue
                    in_flight -= 1
                    try:
                        results[index] = _pub_ack(ack, messages[index].subject)
                    except NatsError as exc:
                        results[index] = exc
        acks: list[PubAck] = []
        final: list[PubAck | NatsError] = []
        for result in results:
            # Only a stop leaves a message without an outcome.
            outcome = result if result is not None else (stop or NatsError("not sent"))
            final.append(outcome)
            if isinstance(outcome, PubAck):
                acks.append(outcome)
        if len(acks) < count:
            raise JetStreamPublishError(final)
        return acks

    # ---------------------------------------------------------------- pulling

    async def fetch(self, stream: str, durable: str, batch: int, expires: float) -> list[JsMsg]:
        """Pull up to ``batch`` messages, waiting at most ``expires`` s for them to arrive.

        Returns early once ``batch`` messages arrived; returns what arrived
        (possibly nothing) when the server ends the pull at expiry or the
        connection drops (acks work on the next connection too).  nats-server
        2.9 does not answer a pull for a consumer that does not exist, so that
        too looks like an empty pull.
        """
        _check_name(stream, "stream")
        _check_name(durable, "consumer")
        client = self._client
        body = b'{"batch":%d,"expires":%d}' % (batch, _ns(expires))
        fetched: list[JsMsg] = []
        # Deliveries keep their stream subject, so the pull needs a subscription
        # of its own: one slot per message plus the status that ends the pull.
        inbox = client.new_inbox()
        with client.subscribe(inbox, max_pending=batch + 1, resubscribe=False) as sub:
            await client.publish(f"{self._prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}", body, reply=inbox)
            # The server ends the pull at ``expires`` with a 408; the grace keeps
            # the client from giving up just before it, which would strand
            # messages delivered in between until their ack_wait runs out.
            with trio.move_on_after(expires + max(1.0, expires / 2)):
                async for msg in sub:
                    status = msg.status
                    if status is None:
                        fetched.append(JsMsg.from_msg(msg, client))
                        if len(fetched) >= batch:
                            break
                    elif status in (_STATUS_NO_MESSAGES, _STATUS_EXPIRED):
                        break
                    elif status == _STATUS_HEARTBEAT:
                        continue
                    elif status == _STATUS_CONFLICT and (
                        fetched or msg.description.lower().startswith(_TRANSIENT_CONFLICTS)
                    ):
                        break
                    elif status == 503:
                        raise NatsNoResponders(f"no consumer {durable} on stream {stream} answers pulls")
                    else:
                        raise JetStreamError(status, 0, msg.description)
        return fetched
