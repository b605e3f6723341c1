"""What the semantic cache compares: the last user message by meaning, everything else exactly.

Pure.  ``semantic_query`` splits a canonical chat request into

- ``text``: the last message's text (it must be a user message made only of
  text), which is embedded and compared by cosine similarity;
- ``context``: a SHA-256 over everything else that decides the answer — the
  system prompt, earlier turns, tools, ``temperature`` and the other
  parameters, with the same ignored fields as the exact key
  (``key.IGNORED_FIELDS``) — which must match exactly.

The design note embeds "system + last user message"; matching the system
prompt exactly and embedding only the user's words is stricter (a different
system prompt never hits) and keeps the vector about the question.

A ``Partition`` is the set of entries a lookup may match: same provider, same
provider model id, same scope tag (``key.scope_tag``), same context, same
embedding model.  In ``semantic_cache_entry`` its ``scope`` column holds
``<scope tag>#<context>`` (the table has no column of its own for the
context); ``tag`` is one hex digest of all five for backends that filter on a
single field (valkey-search).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import attrs

from nexus.gateway.cache.key import body_bytes

SEMANTIC_VERSION: Final = "s1"


@attrs.frozen(slots=True)
class SemanticQuery:
    text: str
    context: str


@attrs.frozen(slots=True)
class Partition:
    provider: str
    model: str
    scope: str  # '<scope tag>#<context>', the table's scope column
    embedding_model: str

    @property
    def tag(self) -> str:
        h = hashlib.sha256(f"{self.provider}\0{self.model}\0{self.scope}\0{self.embedding_model}".encode())
        return h.hexdigest()

    @property
    def scope_tag(self) -> str:
        """The tenant part of ``scope`` (``''`` for global)."""
        return self.scope.partition("#")[0]


def partition(provider: str, model: str, scope_tag: str, query: SemanticQuery, embedding_model: str) -> Partition:
    return Partition(provider, model, f"{scope_tag}#{query.context}", embedding_model)


def _text_of(content: Any) -> str | None:
    """The text of a message's content; None when it holds anything but text (an image, audio, a file)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None
        parts.append(part["text"])
    return "\n".join(parts)


def semantic_query(chat: Mapping[str, Any], max_chars: int = 8000) -> SemanticQuery | str:
    """The query of a canonical chat request, or why it cannot use the semantic cache."""
    messages = chat.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return "no messages"
    last = messages[-1]
    if last.get("role") != "user":
        return "the last message is not the user's"
    text = _text_of(last.get("content"))
    if text is None:
        return "the last user message is not only text"
    text = text.strip()
    if not text:
        return "the last user message is empty"
    if len(text) > max_chars:
        return f"the last user message is longer than {max_chars} characters"
    n = chat.get("n")
    if n is not None and n != 1:
        return "n is not 1"
    rest = {**chat, "messages": [*messages[:-1], {k: v for k, v in last.items() if k != "content"}]}
    try:
        digest = hashlib.sha256(SEMANTIC_VERSION.encode() + b"\0" + body_bytes(rest)).hexdigest()
    except TypeError:
        return "the request holds values that are not JSON"
    return SemanticQuery(text, digest)
