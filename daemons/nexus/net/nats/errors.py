"""Exceptions raised by the NATS codec, the Trio client and the JetStream layer.

Every error that leaves ``nexus.net.nats`` is a :class:`NatsError`; trio and OS
errors are mapped to these at the client's boundary.  This module is pure (no
Trio import), so the sans-IO codec can raise these too.
"""

from __future__ import annotations


class NatsError(Exception):
    """Base class of every NATS client error."""


class NatsProtocolError(NatsError):
    """The peer sent bytes that are not the NATS protocol, or a frame broke a limit."""


class NatsConnectionError(NatsError):
    """Not connected, or the connection was lost before the operation finished."""


class NatsPayloadTooLarge(NatsError, ValueError):
    """Headers plus payload exceed the server's ``max_payload``; nothing was sent."""


class NatsTimeout(NatsError):
    """A reply, PONG or acknowledgement did not arrive in time."""


class NatsNoResponders(NatsError):
    """A request reached no subscriber (the server answered with status 503)."""


class JetStreamError(NatsError):
    """The JetStream API answered with an error object.

    ``code`` is the HTTP-like status (400, 404, 503, ...), ``err_code`` the
    JetStream-specific code (10058 "stream name already in use", ...; 0 when the
    error came as a status message without one), ``description`` the server's text.
    """

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {code}/{err_code}: {description}")
        self.code = code
        self.err_code = err_code
        self.description = description

