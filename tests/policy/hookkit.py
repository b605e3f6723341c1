"""Shared helpers for the hooks-pipeline tests: small real rule sets, hook configs, pipelines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nexus.policy.config import HookConfig, Implementation, PolicySnapshot, RuleOverride
from nexus.policy.exchange import Exchange, Segment, Stage
from nexus.policy.matching import ScannerCache
from nexus.policy.pipeline import Pipeline, build_pipeline
from nexus.policy.rules.model import Rule, Severity

# Compiled scanners shared by every test of the session: a rule set compiles once.
SCANNERS = ScannerCache(keep=64)


def rule(
    rule_id: str,
    pattern: str,
    severity: Severity = "hard",
    category: str = "secret-leak",
    *flags: str,
    labels: tuple[str, ...] = (),
    validator: str | None = None,
) -> Rule:
    return Rule(
        id=rule_id,
        category=category,
        severity=severity,
        pattern=pattern,
        flags=tuple(sorted(flags)),
        description="",
        labels=labels,
        validator=validator,
        examples=(),
        counterexamples=(),
        pack=category,
        pack_version="1",
    )


SECRET = "AKIAIOSFODNN7EXAMPLE"
RULES: tuple[Rule, ...] = (
    rule("AWS_KEY", r"\bAKIA[0-9A-Z]{16}\b", "hard", "secret-leak", labels=("credential",)),
    rule("EMAIL", r"\b[a-z0-9._]{1,32}@[a-z0-9.-]{1,40}\.[a-z]{2,8}\b", "soft", "pii", "caseless"),
    rule("DOMAIN", r"\b[a-z0-9-]{1,63}\.example\.com\b", "warn", "pii", "caseless"),
    rule("SHOUT", r"\bSHOUTING\b", "warn", "content-safety"),
    rule("JAILBREAK", r"do anything now", "hard", "jailbreak", "caseless"),
)


def hook(
    name: str,
    implementation: Implementation,
    stage: Stage = "request",
    *,
    priority: int = 0,
    config: Mapping[str, Any] | None = None,
    fail_behavior: str = "fail-open",
    timeout_ms: int = 1000,
    ingress: str = "all",
    stream_mode: str = "observe",
    enabled: bool = True,
    scope: tuple[str, str] | None = None,
) -> HookConfig:
    kind, ident = scope if scope is not None else ("global", None)
    return HookConfig(
        id=f"id-{name}",
        name=name,
        implementation=implementation,
        stage=stage,
        priority=priority,
        fail_behavior=fail_behavior,  # type: ignore[arg-type]
        timeout_ms=timeout_ms,
        ingress=ingress,  # type: ignore[arg-type]
        stream_mode=stream_mode,  # type: ignore[arg-type]
        config=dict(config or {}),
        enabled=enabled,
        scope_kind=kind,  # type: ignore[arg-type]
        org_id=ident if kind == "org" else None,
        project_id=ident if kind == "project" else None,
        virtual_key_id=ident if kind == "virtual_key" else None,
    )


def pipeline(
    hooks: Iterable[HookConfig], rules: Sequence[Rule] = RULES, overrides: Iterable[RuleOverride] = ()
) -> Pipeline:
    return build_pipeline(
        PolicySnapshot(hooks=tuple(hooks), overrides=tuple(overrides), version="test"), rules, scanners=SCANNERS
    )


def texts(*items: str, **meta: Any) -> Exchange:
    """An exchange whose segments are ``items`` at ``("messages", i, "content")``: a gateway request by default."""
    segments = tuple(Segment(("messages", i, "content"), text) for i, text in enumerate(items))
    meta.setdefault("stage", "request")
    meta.setdefault("ingress", "gateway")
    return Exchange(segments=segments, **meta)


def chat(*contents: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents], **extra}
