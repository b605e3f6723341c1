"""``data-residency``: data of a classification may only go to providers in allowed regions.  Pure.

Options::

    {"rules": [{"classification": "pii", "allowedRegions": ["eu-*", "europe-west*"]}],
     "unknownRegion": "constrain"}

A classification applies when the exchange carries it
(``Exchange.classifications``, from the key, project or route) or an earlier
hook of the same stage tagged it (a content hook tags the category and labels
of every rule that fired, e.g. ``pii``): order this hook after them.  Region
globs use ``fnmatch`` syntax and match the provider's region case-sensitively.

- Provider region known: it must match an allowed glob of every applicable
  rule, else the exchange is rejected (``DATA_RESIDENCY``, 403).
- Region unknown (the gateway routes after the request hooks):
  ``unknownRegion: "constrain"`` (default) approves and hands the allowed
  globs to the router as ``StageDecision.region_constraints``; ``"block"``
  rejects.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

import attrs

from nexus.policy.config import HookConfig, PolicyConfigError, structure_options
from nexus.policy.hooks.base import BuildEnv, HookContext, PureHook
from nexus.policy.verdict import ABSTAIN, Verdict, approve, block


@attrs.frozen(kw_only=True)
class ResidencyRule:
    classification: str
    allowed_regions: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ResidencyOptions:
    rules: tuple[ResidencyRule, ...]
    unknown_region: Literal["constrain", "block"] = "constrain"


class DataResidency(PureHook):
    __slots__ = ("compiled", "rules", "unknown_region")

    def __init__(self, config: HookConfig, options: ResidencyOptions) -> None:
        super().__init__(config)
        self.rules = options.rules
        self.unknown_region = options.unknown_region
        self.compiled = tuple(
            re.compile("|".join(fnmatch.translate(glob) for glob in rule.allowed_regions)) for rule in self.rules
        )

    def evaluate(self, ctx: HookContext) -> Verdict:
        tags = ctx.tags
        applicable = [i for i, rule in enumerate(self.rules) if rule.classification in tags]
        if not applicable:
            return ABSTAIN
        region = ctx.exchange.provider_region
        names = tuple(self.rules[i].classification for i in applicable)
        if region is None:
            if self.unknown_region == "block":
                return block(
                    (f"provider region unknown for {', '.join(names)} data",), reason_code="DATA_RESIDENCY", status=403
                )
            groups = tuple(self.rules[i].allowed_regions for i in applicable)
            return approve((f"{', '.join(names)} data: region constrained",), region_constraints=groups)
        for i in applicable:
            if self.compiled[i].match(region) is None:
                rule = self.rules[i]
                return block(
                    (f"{rule.classification} data may not go to region {region}",),
                    reason_code="DATA_RESIDENCY",
                    status=403,
                )
        return approve((f"{', '.join(names)} data allowed in {region}",))


def build(config: HookConfig, env: BuildEnv) -> DataResidency:
    options = structure_options(ResidencyOptions, config)
    if not options.rules or any(not rule.allowed_regions for rule in options.rules):
        raise PolicyConfigError(f"{config.label}: every rule needs allowedRegions")
    return DataResidency(config, options)
