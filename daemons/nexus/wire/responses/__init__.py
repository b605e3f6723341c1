"""OpenAI Responses API as a caller dialect: request, response and stream codecs (pure).

``_request`` reads a ``/v1/responses`` body into canonical form, ``_response``
writes a ``response`` object (and holds the envelope and the SSE framing),
``_stream`` writes the event stream and observes passthrough streams.  See
``nexus.wire`` for the map.
"""

from nexus.wire.responses._request import chat_from_request
from nexus.wire.responses._response import encode, response_from_chat
from nexus.wire.responses._stream import StreamFromChat, StreamObserver

__all__ = ["StreamFromChat", "StreamObserver", "chat_from_request", "encode", "response_from_chat"]
