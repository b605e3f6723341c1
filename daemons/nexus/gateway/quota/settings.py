"""Quota engine settings from the environment: ``NEXUS_QUOTA_WRITE_BEHIND``, ``_FLUSH_INTERVAL``, ``_FAIL_MODE``.

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
from nexus.gateway.quota.policy import FailMode

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@attrs.frozen
class QuotaSettings:
    """``write_behind``: reconciliations batched every ``flush_interval`` seconds (False: applied at once).

    ``fail_mode_default``: what the key's own RPM/TPM limits do when Valkey is
    unreachable (policies from the database carry their own ``fail_mode``).
    """

    write_behind: bool = True
    flush_interval: float = 0.25
    fail_mode_default: FailMode = "closed"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QuotaSettings:
        env = os.environ if environ is None else environ
        default = cls()
        write_behind, flush_interval = default.write_behind, default.flush_interval
        fail_mode = default.fail_mode_default
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
        raw = env.get("NEXUS_QUOTA_FAIL_MODE")
        if raw is not None:
            if raw not in ("closed", "open"):
                raise ConfigError(
                    f"config error in environment NEXUS_QUOTA_FAIL_MODE: expected closed|open, got {raw!r}")
            fail_mode = "closed" if raw == "closed" else "open"
        return cls(write_behind, flush_interval, fail_mode)
