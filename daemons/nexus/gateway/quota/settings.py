"""Quota engine settings: ``[gateway.quota]`` from the config file, plus ``NEXUS_QUOTA_WRITE_BEHIND`` and
``NEXUS_QUOTA_FLUSH_INTERVAL`` from the environment.

Pure.  Single-underscore names, so the config loader (which maps
``NEXUS_<SECTION>__<KEY>``) leaves them alone.  A bad value raises
``ConfigError`` naming the variable, like every other configuration error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Final

import attrs

from nexus.config.loader import ConfigError
from nexus.config.schema import QuotaConfig
from nexus.gateway.quota.policy import FailMode

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@attrs.frozen
class QuotaSettings:
    """``write_behind``: reconciliations batched every ``flush_interval`` seconds (False: applied at once).

    ``fail_mode_default``: what the key's own RPM/TPM limits do when Valkey is
    unreachable (``[gateway.quota] on_valkey_down``; policies from the
    database carry their own ``fail_mode``).
    """

    write_behind: bool = True
    flush_interval: float = 0.25
    fail_mode_default: FailMode = "closed"

    @classmethod
    def from_config(cls, config: QuotaConfig, environ: Mapping[str, str] | None = None) -> QuotaSettings:
        """``on_valkey_down`` from ``[gateway.quota]``, the write-behind mode from the environment."""
        return cls.from_env(environ, fail_mode_default="open" if config.on_valkey_down == "fail_open" else "closed")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 fail_mode_default: FailMode = "closed") -> QuotaSettings:
        env = os.environ if environ is None else environ
        default = cls()
        write_behind, flush_interval = default.write_behind, default.flush_interval
        raw = env.get("NEXUS_QUOTA_WRITE_BEHIND")
        if raw is not None:
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ConfigError(f"config error in environment NEXUS_QUOTA_WRITE_BEHIND: expected 0 or 1, got {raw!r}")
            write_behind = word in _TRUE
        raw = env.get("NEXUS_QUOTA_FLUSH_INTERVAL")
        if raw is not None:
            try:
                flush_interval = float(raw)
            except ValueError:
                flush_interval = math.nan
            if not 0 < flush_interval <= 10:
                raise ConfigError("config error in environment NEXUS_QUOTA_FLUSH_INTERVAL: expected seconds in "
                                  f"(0, 10], got {raw!r}")
        return cls(write_behind, flush_interval, fail_mode_default)
