"""Shared fixtures for the policy tests: the packaged packs and one compiled scanner per session.

Compiling every rule takes several seconds, so the databases are cached in
pytest's cache directory (``.pytest_cache``) and reused across runs; the cache
key covers the patterns, the Hyperscan version and the CPU features.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.policy.rules import Rule, RulePack, all_rules, load_packs
from nexus.policy.scan import Scanner


def hyperscan_cache(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("nexus-hyperscan"))
    return factory.mktemp("nexus-hyperscan")


@pytest.fixture(scope="session")
def packs() -> list[RulePack]:
    return load_packs()


@pytest.fixture(scope="session")
def rules(packs: list[RulePack]) -> list[Rule]:
    return all_rules(packs)


@pytest.fixture(scope="session")
def scanner(rules: list[Rule], request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scanner:
    return Scanner.build(rules, cache_dir=hyperscan_cache(request.config, tmp_path_factory))
