"""Sign-in settings live with the config schema (pure, no I/O imports); re-exported here for sign-in code."""

from nexus.config.signin import AuthSettings

__all__ = ["AuthSettings"]
