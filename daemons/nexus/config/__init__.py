"""Configuration: attrs schemas and the TOML + ``NEXUS_*`` environment loader. Pure: no I/O beyond reading the file."""

from nexus.config.loader import ConfigError, load_config
from nexus.config.schema import NexusConfig

__all__ = ["ConfigError", "NexusConfig", "load_config"]
