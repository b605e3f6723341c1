"""Anthropic Messages dialect: request, response and stream codecs (pure).

``_request`` holds both request directions, ``_response`` both non-streaming
response directions and the stop-reason tables, ``_stream`` the stream
decoder, encoder and passthrough observer.  See ``nexus.wire`` for the map.
"""

from nexus.wire.anthropic._request import EFFORT_BUDGET, STRUCTURED_TOOL, chat_from_request, request_from_chat
from nexus.wire.anthropic._response import FINISH, STOP, chat_from_response, response_from_chat
from nexus.wire.anthropic._stream import StreamFromChat, StreamObserver, StreamToChat, encode

__all__ = [
    "EFFORT_BUDGET",
    "FINISH",
    "STOP",
    "STRUCTURED_TOOL",
    "StreamFromChat",
    "StreamObserver",
    "StreamToChat",
    "chat_from_request",
    "chat_from_response",
    "encode",
    "request_from_chat",
    "response_from_chat",
]
