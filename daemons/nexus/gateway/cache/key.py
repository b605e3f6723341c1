"""Exact-cache keys: SHA-256 over what decides the answer.

Pure.  The digest covers a version tag, the upstream provider, the provider's
model id, an optional scope and the prepared request body serialised with keys
sorted at every depth — minus the fields that do not change the answer:

- ``model``: the client's name for it (an alias); the provider model id is hashed instead;
- ``stream``, ``stream_options``: a streamed and a plain request share one entry
  (the entry replays either way);
- ``user``, ``metadata``, ``store``, ``safety_identifier``, ``prompt_cache_key``,
  ``service_tier``: bookkeeping, routing and billing hints.

``n`` stays in: it changes how many answers come back.  Only top-level fields
are dropped; the same name deeper down (a tool's ``metadata``) is content.

Scope (``scope_tag``): ``global`` shares entries across every caller; ``vk``,
``project`` and ``org`` confine them, so one tenant never receives an answer
produced for another.  A key that has no project under ``project`` scope falls
back to its own key scope (narrower, never wider).

Bump ``KEY_VERSION`` when the entry format or these rules change: old entries
then simply miss and expire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

CACHE_PREFIX: Final = "nexus:cache:"
KEY_VERSION: Final = "v1"
IGNORED_FIELDS: Final = frozenset({
    "model", "stream", "stream_options", "user", "metadata", "store", "safety_identifier", "prompt_cache_key",
    "service_tier",
})

Scope = Literal["global", "vk", "project", "org"]


def scope_tag(scope: Scope, *, key_id: str, project_id: str | None, org_id: str) -> str:
    """``''`` (global), ``vk:<id>``, ``project:<id>`` or ``org:<id>`` (as in ``semantic_cache_entry.scope``)."""
    if scope == "global":
        return ""
    if scope == "org":
        return f"org:{org_id}"
    if scope == "project" and project_id is not None:
        return f"project:{project_id}"
    return f"vk:{key_id}"


def body_bytes(body: Mapping[str, Any]) -> bytes:
    """The body as hashed: ignored fields dropped, keys sorted recursively (``TypeError`` on non-JSON values)."""
    kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def cache_key(provider: str, model: str, body: Mapping[str, Any], scope: str = "", *,
              prefix: str = CACHE_PREFIX) -> str:
    """``nexus:cache:<sha256 hex>`` for a request to ``model`` (the provider's model id) on ``provider``."""
    h = hashlib.sha256()
    h.update(f"{KEY_VERSION}\0{provider}\0{model}\0{scope}\0".encode())
    h.update(body_bytes(body))
    return prefix + h.hexdigest()
