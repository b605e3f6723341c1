"""Construct the three storage clients from ``[storage]`` config, the same way in every daemon."""

from __future__ import annotations

from nexus.config.schema import StorageConfig
from nexus.net.nats.client import NatsClient
from nexus.net.resp.client import ValkeyClient
from nexus.storage.pgpool import PgPool


def pg_pool(cfg: StorageConfig, name: str = "postgres") -> PgPool:
    return PgPool(cfg.database_url, min_size=1, max_size=cfg.pg_pool_size, name=name)


def valkey(cfg: StorageConfig, name: str = "valkey") -> ValkeyClient:
    return ValkeyClient(cfg.valkey_url, pool_size=cfg.valkey_pool_size, name=name)


def nats(cfg: StorageConfig, client_name: str, name: str = "nats") -> NatsClient:
    return NatsClient(cfg.nats_url, name=client_name)
