"""Gemini generateContent dialect: request, response and stream codecs, URL paths (pure).

``_request`` holds both request directions and the paths, ``_response`` both
non-streaming response directions and the finish-reason tables, ``_stream``
the stream decoder, encoder and passthrough observer, ``_schema`` the JSON
Schema cleaning.  See ``nexus.wire`` for the map.
"""

from nexus.wire.gemini._request import (
    EFFORT_BUDGET,
    PLACEHOLDER_SIGNATURE,
    chat_from_request,
    path,
    request_from_chat,
    vertex_path,
)
from nexus.wire.gemini._response import FINISH, STOP, chat_from_response, response_from_chat
from nexus.wire.gemini._schema import clean_schema, schema_from_gemini
from nexus.wire.gemini._stream import StreamFromChat, StreamObserver, StreamToChat, encode

__all__ = [
    "EFFORT_BUDGET",
    "FINISH",
    "PLACEHOLDER_SIGNATURE",
    "STOP",
    "StreamFromChat",
    "StreamObserver",
    "StreamToChat",
    "chat_from_request",
    "chat_from_response",
    "clean_schema",
    "encode",
    "path",
    "request_from_chat",
    "response_from_chat",
    "schema_from_gemini",
    "vertex_path",
]
