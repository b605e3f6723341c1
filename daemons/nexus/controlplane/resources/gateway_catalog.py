"""The provider catalogue: providers, their credentials, and the models (with prices) they serve.

All three are installation-wide (empty NRN scope). Credential secrets are write-only: a body's
``secret`` is sealed with the vault under the credential's own id as associated data — the
same AAD ``gateway.catalog`` opens it with, which is why the id is chosen here before sealing —
and answers carry only ``secret_hint`` (the last characters) and the vault ``key_id``. The audit
log records ``"secret": "***"`` for creations and rotations.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any, Literal

import attrs

from nexus.controlplane.api.crud import Resource
from nexus.controlplane.api.operation import Call, Operation, Reply
from nexus.controlplane.api.schema import field, patch_of
from nexus.controlplane.audit.mask import MASK
from nexus.controlplane.resources.gateway_common import INT4_MAX, INT8_MAX, invalid, merged

TAG = "providers"
Adapter = Literal[
    "openai", "anthropic", "gemini", "vertex", "azure", "bedrock", "cohere", "minimax", "glm", "replicate", "voyage",
    "deepseek", "moonshot", "mistral", "groq", "fireworks", "together", "perplexity", "xai", "huggingface",
    "openai_compatible",
]
PROVIDER_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
BASE_URL = r"^https?://[^\s]+$"
MODEL_CODE = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
Modality = Literal["chat", "embedding", "rerank", "image", "audio"]
# A hint of a short secret would give away too much of it.
HINT_CHARS = 4
HINT_MIN_SECRET = 12


# -- providers ------------------------------------------------------------------------------------

@attrs.frozen
class Provider:
    """One upstream instance: an account or endpoint of an adapter type."""

    id: uuid.UUID
    name: str
    display_name: str
    adapter: Adapter
    base_url: str
    region: str | None
    timeout_ms: int
    settings: dict[str, Any]
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class ProviderCreate:
    """A new provider; ``settings`` carries adapter specifics (api-version, deployment map, region...)."""

    adapter: Adapter
    name: str = field(pattern=PROVIDER_NAME, max_length=63)
    base_url: str = field(pattern=BASE_URL, max_length=2048)
    display_name: str = field(default="", max_length=200)
    region: str | None = field(default=None, max_length=64)
    timeout_ms: int = field(default=600_000, minimum=1, maximum=3_600_000)
    settings: dict[str, Any] = field(factory=dict)
    enabled: bool = True


ProviderUpdate = patch_of(
    ProviderCreate,
    "adapter",
    doc="Fields a provider update may change.",
)


PROVIDERS = Resource(
    path="providers", rtype="provider", service="gateway", table="provider", read=Provider, tag=TAG,
    create=ProviderCreate, update=ProviderUpdate, signal="provider", org="none", filters=("adapter", "enabled"),
)


# -- credentials ----------------------------------------------------------------------------------

@attrs.frozen
class Credential:
    """An upstream credential; never the secret: ``secret_hint`` (its last characters) and the vault ``key_id``."""

    id: uuid.UUID
    provider_id: uuid.UUID
    name: str
    key_id: str
    secret_hint: str
    weight: int
    enabled: bool
    expires_at: dt.datetime | None
    rotated_at: dt.datetime | None
    health_status: Literal["unknown", "healthy", "degraded", "unhealthy"]
    health_checked_at: dt.datetime | None
    last_error: str | None
    last_used_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class CredentialCreate:
    """A new credential; ``secret`` is write-only."""

    provider_id: uuid.UUID
    name: str = field(min_length=1, max_length=200)
    secret: str = field(min_length=1, max_length=16384, description="write-only: sealed, never returned")
    weight: int = field(default=1, minimum=0, maximum=INT4_MAX)
    enabled: bool = True
    expires_at: dt.datetime | None = None


CredentialUpdate = patch_of(
    CredentialCreate,
    "provider_id", "secret",
    doc="Fields a credential update may change (the secret changes through rotate).",
)


@attrs.frozen
class CredentialRotate:
    """The replacement secret (write-only)."""

    secret: str = field(min_length=1, max_length=16384, description="write-only: sealed, never returned")


def hint(secret: str) -> str:
    return secret[-HINT_CHARS:] if len(secret) >= HINT_MIN_SECRET else ""


def seal_columns(call: Call, credential_id: uuid.UUID, secret: str) -> dict[str, Any]:
    """The credential columns holding ``secret``: sealed with the credential id as AAD, as the gateway opens it."""
    sealed = call.services.vault.seal(secret.encode(), credential_id.bytes)
    return {"ciphertext": sealed.ciphertext, "nonce": sealed.nonce, "key_id": sealed.key_id,
            "secret_hint": hint(secret)}


async def _prepare_credential(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    if "secret" not in values:  # an update
        return values
    credential_id = uuid.uuid4()
    secret = values.pop("secret")
    return {"id": credential_id, **values, **seal_columns(call, credential_id, secret)}


CREDENTIALS = Resource(
    path="credentials", rtype="credential", service="gateway", table="credential", read=Credential, tag=TAG,
    create=CredentialCreate, update=CredentialUpdate, signal="credential", org="none",
    filters=("provider_id", "enabled", "health_status"), prepare=_prepare_credential,
)


def _masked(reply: Reply) -> Reply:
    # The audit entry says a secret was set without ever holding it.
    return attrs.evolve(reply, after={**(reply.after or {}), "secret": MASK})


async def create_credential(call: Call) -> Reply:
    return _masked(await CREDENTIALS.insert(call))


async def rotate_credential(call: Call) -> Reply:
    body: CredentialRotate = call.body
    rid = call.path_uuid()
    columns = seal_columns(call, rid, body.secret)
    await call.conn.execute(
        "UPDATE credential SET ciphertext = %(ciphertext)s, nonce = %(nonce)s, key_id = %(key_id)s, "
        "secret_hint = %(secret_hint)s, rotated_at = now() WHERE id = %(id)s", {**columns, "id": rid})
    rotated = CREDENTIALS.target(await CREDENTIALS.fetch(call, rid, lock=False))
    return _masked(Reply(rotated.before, after=rotated.before, signal=("credential", str(rid))))


# -- models ---------------------------------------------------------------------------------------

def _price(description: str) -> Any:
    return field(default=0, minimum=0, maximum=INT8_MAX, description=description + " (micro-dollars per Mtok)")


@attrs.frozen
class Model:
    """A model as one provider serves it; prices are integer micro-dollars per million tokens."""

    id: uuid.UUID
    provider_id: uuid.UUID
    code: str
    provider_model_id: str
    display_name: str
    modality: Modality
    input_micro_usd_per_mtok: int
    output_micro_usd_per_mtok: int
    cached_input_micro_usd_per_mtok: int
    cache_write_micro_usd_per_mtok: int
    reasoning_micro_usd_per_mtok: int
    context_window: int | None
    max_output_tokens: int | None
    default_max_tokens: int | None
    aliases: list[str]
    capabilities: dict[str, Any]
    enabled: bool
    deprecated_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class ModelCreate:
    """A new model of a provider ($2.50 / Mtok = 2500000)."""

    provider_id: uuid.UUID
    code: str = field(pattern=MODEL_CODE, max_length=128)
    provider_model_id: str = field(min_length=1, max_length=256)
    display_name: str = field(default="", max_length=200)
    modality: Modality = "chat"
    input_micro_usd_per_mtok: int = _price("uncached input")
    output_micro_usd_per_mtok: int = _price("output")
    cached_input_micro_usd_per_mtok: int = _price("provider-cache reads")
    cache_write_micro_usd_per_mtok: int = _price("cache creation")
    reasoning_micro_usd_per_mtok: int = _price("reasoning tokens")
    context_window: int | None = field(default=None, minimum=1, maximum=INT4_MAX)
    max_output_tokens: int | None = field(default=None, minimum=1, maximum=INT4_MAX)
    default_max_tokens: int | None = field(default=None, minimum=1, maximum=INT4_MAX)
    aliases: list[str] = field(factory=list, max_length=100)
    capabilities: dict[str, Any] = field(factory=dict)
    enabled: bool = True
    deprecated_at: dt.datetime | None = None


ModelUpdate = patch_of(
    ModelCreate,
    "provider_id",
    doc="Fields a model update may change (its provider is fixed).",
)


_CODE = re.compile(MODEL_CODE)


async def _prepare_model(call: Call, values: dict[str, Any]) -> dict[str, Any]:
    row = merged(call, values) if call.request.method == "PATCH" else values
    for i, alias in enumerate(row.get("aliases") or ()):
        if not _CODE.fullmatch(alias):
            raise invalid(f"aliases[{i}]", f"must match {MODEL_CODE}")
    default, most = row.get("default_max_tokens"), row.get("max_output_tokens")
    if default is not None and most is not None and default > most:
        raise invalid("default_max_tokens", "must not exceed max_output_tokens")
    return values


MODELS = Resource(
    path="models", rtype="model", service="gateway", table="model", read=Model, tag=TAG, create=ModelCreate,
    update=ModelUpdate, signal="model", org="none", filters=("provider_id", "code", "modality", "enabled"),
    prepare=_prepare_model,
)


def operations() -> list[Operation]:
    ops = PROVIDERS.operations() + MODELS.operations()
    for op in CREDENTIALS.operations():
        if op.method == "POST":  # the create: audit it with the secret masked
            op = attrs.evolve(op, handler=create_credential)
        ops.append(op)
    ops.append(Operation("POST", f"{CREDENTIALS.base}/{{id}}/rotate", "admin:credential.rotate",
                         "Replace a credential's secret", TAG, rotate_credential, CREDENTIALS.locate_row,
                         body=CredentialRotate, response=Credential))
    return ops
