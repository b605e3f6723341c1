"""Providers, credentials and models, as one immutable in-memory snapshot per load.

The gateway never reads these tables on the hot path: ``load`` builds a
``Catalog`` (credentials decrypted with the vault, plaintext kept only in this
process's memory), and the config watcher swaps in a new one when a change
signal arrives.  Readers take ``holder.current`` once per request and use that
snapshot throughout, so a reload mid-request cannot mix two versions.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from nexus.crypto.vault import Sealed, Vault, VaultError
from nexus.storage.pgpool import PgPool

log = logging.getLogger("nexus.gateway.catalog")

Family = Literal["openai", "anthropic", "gemini"]

# Adapters that speak the OpenAI chat wire format: configured passthrough.
OPENAI_COMPATIBLE = frozenset({
    "openai", "deepseek", "moonshot", "mistral", "groq", "fireworks", "together", "perplexity", "xai",
    "huggingface", "openai_compatible",
})
FAMILIES: Mapping[str, Family] = {
    **{a: "openai" for a in OPENAI_COMPATIBLE}, "anthropic": "anthropic", "gemini": "gemini",
}


@attrs.frozen(slots=True)
class Prices:
    """Micro-dollars per million tokens."""

    input: int
    output: int
    cached_input: int
    cache_write: int
    reasoning: int


@attrs.frozen(slots=True, repr=False)
class Provider:
    id: str
    name: str
    adapter: str
    base_url: str
    timeout_s: float
    settings: Mapping[str, Any]
    secret: str | None
    region: str | None = None

    @property
    def family(self) -> Family | None:
        return FAMILIES.get(self.adapter)

    def __repr__(self) -> str:  # never print the secret
        return f"Provider({self.name!r}, adapter={self.adapter!r}, base_url={self.base_url!r})"


@attrs.frozen(slots=True)
class ModelRoute:
    code: str
    provider: Provider
    upstream_model: str
    modality: str
    prices: Prices
    default_max_tokens: int | None
    max_output_tokens: int | None
    context_window: int | None
    created: int


@attrs.frozen
class Catalog:
    routes: Mapping[str, tuple[ModelRoute, ...]]

    def resolve(self, code: str) -> ModelRoute | None:
        routes = self.routes.get(code)
        return routes[0] if routes else None

    def codes(self) -> list[str]:
        return sorted(self.routes)


EMPTY = Catalog({})

_PROVIDERS = (
    "SELECT p.id::text, p.name, p.adapter, p.base_url, p.timeout_ms, p.settings, "
    "c.id, c.ciphertext, c.nonce, c.key_id, p.region "
    "FROM provider p LEFT JOIN LATERAL ("
    "  SELECT id, ciphertext, nonce, key_id FROM credential "
    "  WHERE provider_id = p.id AND enabled AND (expires_at IS NULL OR expires_at > now()) "
    "  ORDER BY weight DESC, created_at LIMIT 1) c ON true "
    "WHERE p.enabled"
)
_MODELS = (
    "SELECT m.provider_id::text, m.code, m.provider_model_id, m.modality, m.input_micro_usd_per_mtok, "
    "m.output_micro_usd_per_mtok, m.cached_input_micro_usd_per_mtok, m.cache_write_micro_usd_per_mtok, "
    "m.reasoning_micro_usd_per_mtok, m.default_max_tokens, m.max_output_tokens, m.context_window, "
    "extract(epoch FROM m.created_at)::bigint, m.aliases "
    "FROM model m WHERE m.enabled ORDER BY m.created_at, m.id"
)


def _provider(row: tuple[Any, ...], vault: Vault) -> Provider:
    pid, name, adapter, base_url, timeout_ms, settings, cred_id, ciphertext, nonce, key_id, region = row
    secret: str | None = None
    if cred_id is not None:
        try:
            secret = vault.open(Sealed(key_id, bytes(nonce), bytes(ciphertext)), uuid.UUID(str(cred_id)).bytes).decode()
        except (VaultError, UnicodeDecodeError) as exc:
            log.error("credential of provider %s cannot be decrypted: %s", name, exc)
    return Provider(pid, name, adapter, base_url.rstrip("/"), timeout_ms / 1000, settings or {}, secret, region)


async def load(pool: PgPool, vault: Vault) -> Catalog:
    async with pool.connection() as conn:
        provider_rows = await (await conn.execute(_PROVIDERS)).fetchall()
        model_rows = await (await conn.execute(_MODELS)).fetchall()
    providers = {row[0]: _provider(row, vault) for row in provider_rows}
    routes: dict[str, list[ModelRoute]] = {}
    for (pid, code, upstream, modality, p_in, p_out, p_cached, p_write, p_reason, default_max, max_out, ctx,
         created, aliases) in model_rows:
        provider = providers.get(pid)
        if provider is None:
            continue
        route = ModelRoute(code, provider, upstream, modality, Prices(p_in, p_out, p_cached, p_write, p_reason),
                           default_max, max_out, ctx, int(created))
        for name in (code, *(aliases or ())):
            routes.setdefault(name, []).append(route)
    return Catalog({k: tuple(v) for k, v in routes.items()})


@attrs.define
class CatalogHolder:
    """The current snapshot; ``loaded`` stays False until the first successful load."""

    current: Catalog = EMPTY
    loaded: bool = False
