"""Everything a control-plane handler may reach, built once at start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from nexus.audit.spill import SpillStore
from nexus.crypto.vault import Vault
from nexus.net.nats.client import NatsClient
from nexus.net.resp.client import ValkeyClient
from nexus.storage.pgpool import PgPool

if TYPE_CHECKING:
    from nexus.controlplane.auth.authenticate import Authenticator


@attrs.define
class Services:
    pg: PgPool
    valkey: ValkeyClient
    nats: NatsClient
    vault: Vault
    key_hmac: bytes
    secrets_dir: Path
    authenticator: Authenticator
    public_url: str
    # Where captured bodies over the inline limit live (the hub's spill store on this box).
    spill: SpillStore | None = None
