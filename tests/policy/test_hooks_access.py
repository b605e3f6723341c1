"""ip-access-filter and request-size-validator (nexus/policy/hooks/)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.policy.config import PolicyConfigError
from nexus.policy.exchange import Exchange
from nexus.policy.hooks.ip_access_filter import Ranges, parse_address
from nexus.policy.pipeline import Pipeline
from nexus.policy.verdict import Decision
from tests.policy.hookkit import hook, pipeline


def connection(source_ip: str | None) -> Exchange:
    return Exchange(stage="connection", ingress="proxy", source_ip=source_ip)


def access(**config: object) -> Pipeline:
    return pipeline([hook("ips", "ip-access-filter", "connection", config=config)])


def decide(p: Pipeline, source_ip: str | None) -> Decision:
    return p.evaluate(connection(source_ip)).decision


def test_block_list() -> None:
    p = access(block=["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"])
    assert decide(p, "203.0.113.200") is Decision.REJECT_HARD
    assert decide(p, "198.51.100.7") is Decision.REJECT_HARD
    assert decide(p, "198.51.100.8") is Decision.APPROVE
    assert decide(p, "2001:db8:1::5") is Decision.REJECT_HARD
    assert decide(p, "2001:db9::5") is Decision.APPROVE
    assert decide(p, "::ffff:203.0.113.9") is Decision.REJECT_HARD
    assert decide(p, None) is Decision.ABSTAIN
    d = p.evaluate(connection("203.0.113.1"))
    assert (d.status, d.reason_code) == (403, "IP_BLOCKED")


def test_allow_list_with_exceptions() -> None:
    p = access(allow=["10.0.0.0/8", "fd00::/8"], block=["10.66.0.0/16"])
    assert decide(p, "10.1.2.3") is Decision.APPROVE
    assert decide(p, "fd12::1") is Decision.APPROVE
    assert decide(p, "10.66.1.1") is Decision.REJECT_HARD
    assert decide(p, "192.168.1.1") is Decision.REJECT_HARD
    assert decide(p, None) is Decision.REJECT_HARD
    assert decide(p, "not an address") is Decision.REJECT_HARD
    assert decide(p, "fe80::1%eth0") is Decision.REJECT_HARD


def test_parse_address() -> None:
    assert parse_address("::ffff:10.0.0.1") == ipaddress.IPv4Address("10.0.0.1")
    assert parse_address("fe80::1%lo") == ipaddress.IPv6Address("fe80::1")
    assert parse_address("") is None
    assert parse_address("300.1.1.1") is None


@pytest.mark.parametrize("config", [{}, {"allow": ["10.0.0.0/33"]}, {"block": ["nope"]}, {"allow": "10.0.0.0/8"}])
def test_access_config_errors(config: dict[str, object]) -> None:
    with pytest.raises(PolicyConfigError):
        access(**config)


_net4 = st.builds(
    lambda a, p: ipaddress.ip_network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_net4, max_size=12), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_ranges_agree_with_ipaddress(nets: list[ipaddress.IPv4Network], probes: list[int]) -> None:
    ranges = Ranges(list(nets))
    for value in probes:
        address = ipaddress.IPv4Address(value)
        assert (address in ranges) == any(address in n for n in nets)


def test_request_size_validator() -> None:
    default = pipeline([hook("size", "request-size-validator")])
    small = pipeline([hook("size", "request-size-validator", config={"maxBytes": 100})])
    ok = Exchange(stage="request", ingress="gateway", body_size=1 << 20)
    big = Exchange(stage="request", ingress="gateway", body_size=(1 << 20) + 1)
    assert default.evaluate(ok).decision is Decision.APPROVE
    d = default.evaluate(big)
    assert (d.decision, d.status, d.reason_code) == (Decision.REJECT_HARD, 413, "REQUEST_TOO_LARGE")
    assert small.evaluate(Exchange(stage="request", ingress="agent", body_size=101)).blocked
    with pytest.raises(PolicyConfigError):
        pipeline([hook("size", "request-size-validator", config={"maxBytes": -1})])
