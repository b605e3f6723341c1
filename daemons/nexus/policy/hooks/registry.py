"""Hook implementations by name: the ``implementation`` column of ``hook_config``.  Pure.

``build_hook(config, env)`` builds one hook; its options errors are
``PolicyConfigError`` naming the hook.  Adding an implementation is one module
with a ``build(config, env)`` function and one line here (and the database
CHECK constraint on ``hook_config.implementation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nexus.policy.config import HookConfig, Implementation, PolicyConfigError
from nexus.policy.hooks import (
    content_safety,
    data_residency,
    ip_access_filter,
    keyword_filter,
    pii_detector,
    rate_limiter,
    request_size_validator,
    rulepack_engine,
    webhook_forward,
)
from nexus.policy.hooks.base import BuildEnv, Hook

__all__ = ["REGISTRY", "build_hook"]

Factory = Callable[[HookConfig, BuildEnv], Hook]

REGISTRY: Mapping[Implementation, Factory] = {
    "keyword-filter": keyword_filter.build,
    "pii-detector": pii_detector.build,
    "content-safety": content_safety.build,
    "rulepack-engine": rulepack_engine.build,
    "rate-limiter": rate_limiter.build,
    "request-size-validator": request_size_validator.build,
    "ip-access-filter": ip_access_filter.build,
    "data-residency": data_residency.build,
    "webhook-forward": webhook_forward.build,
}


def build_hook(config: HookConfig, env: BuildEnv) -> Hook:
    factory = REGISTRY.get(config.implementation)
    if factory is None:
        raise PolicyConfigError(f"{config.label}: unknown implementation {config.implementation!r}")
    return factory(config, env)
