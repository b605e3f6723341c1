"""Condition operators through whole evaluations: one Allow statement guarded by the condition under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tests.controlplane.iam.helpers import NOW, USER_ID, allow, decide, deny, policy, principal, request

from nexus.controlplane.iam.errors import RequestError

KEY = "nrn:nexus:gateway:org/acme/emea:virtual-key/k1"
READ = "admin:virtual-key.read"


def allowed(condition: dict[str, Any], **kw: Any) -> bool:
    return decide(policy(allow(READ, "*", condition)), request(READ, KEY, **kw)).allowed


# (condition, request keyword arguments, allowed)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # IpAddress / NotIpAddress: IPv4 and IPv6 CIDRs, single addresses, mapped addresses, missing
    ("ip-v4-in", {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": "10.200.3.4"}, True),
    ("ip-v4-out", {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": "11.0.0.1"}, False),
    ("ip-any-of", {"IpAddress": {"nexus:SourceIp": ["192.168.0.0/16", "10.0.0.0/8"]}}, {"ip": "10.0.0.1"}, True),
    ("ip-v6-in", {"IpAddress": {"nexus:SourceIp": "2001:db8::/32"}}, {"ip": "2001:db8:1::7"}, True),
    ("ip-v6-out", {"IpAddress": {"nexus:SourceIp": "2001:db8::/32"}}, {"ip": "2001:db9::7"}, False),
    ("ip-v6-vs-v4", {"IpAddress": {"nexus:SourceIp": "::/0"}}, {"ip": "10.0.0.1"}, False),
    ("ip-mapped", {"IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": "::ffff:10.1.2.3"}, True),
    ("ip-single", {"IpAddress": {"nexus:SourceIp": "203.0.113.9"}}, {"ip": "203.0.113.9"}, True),
    ("ip-host-bits", {"IpAddress": {"nexus:SourceIp": "10.1.2.3/8"}}, {"ip": "10.9.9.9"}, True),
    ("ip-missing", {"IpAddress": {"nexus:SourceIp": "0.0.0.0/0"}}, {"ip": None}, False),
    ("ip-garbage", {"IpAddress": {"nexus:SourceIp": "0.0.0.0/0"}}, {"ip": "not-an-ip"}, False),
    ("not-ip-out", {"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": "8.8.8.8"}, True),
    ("not-ip-in", {"NotIpAddress": {"nexus:SourceIp": ["10.0.0.0/8", "fd00::/8"]}}, {"ip": "fd12::1"}, False),
    ("not-ip-missing", {"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": None}, True),
    # Dates against a fixed now (2025-06-15T12:00Z)
    ("date-lt-yes", {"DateLessThan": {"nexus:CurrentTime": "2025-07-01T00:00:00Z"}}, {}, True),
    ("date-lt-no", {"DateLessThan": {"nexus:CurrentTime": "2025-06-15T12:00:00Z"}}, {}, False),
    ("date-lte-edge", {"DateLessThanEquals": {"nexus:CurrentTime": "2025-06-15T12:00:00+00:00"}}, {}, True),
    ("date-gt-yes", {"DateGreaterThan": {"nexus:CurrentTime": "2025-06-15"}}, {}, True),
    ("date-gt-no", {"DateGreaterThan": {"nexus:CurrentTime": "2025-06-15T14:00:00+02:00"}}, {}, False),
    ("date-gte-offset", {"DateGreaterThanEquals": {"nexus:CurrentTime": "2025-06-15T14:00:00+02:00"}}, {}, True),
    ("date-eq-epoch", {"DateEquals": {"nexus:CurrentTime": int(NOW.timestamp())}}, {}, True),
    ("date-window", {"DateGreaterThan": {"nexus:CurrentTime": "2025-06-01T00:00:00Z"},
                     "DateLessThan": {"nexus:CurrentTime": "2025-06-30T00:00:00Z"}}, {}, True),
    ("date-window-late", {"DateGreaterThan": {"nexus:CurrentTime": "2025-06-01T00:00:00Z"},
                          "DateLessThan": {"nexus:CurrentTime": "2025-06-30T00:00:00Z"}},
     {"now": datetime(2025, 7, 1, tzinfo=UTC)}, False),
    ("date-other-zone", {"DateLessThan": {"nexus:CurrentTime": "2025-06-15T12:30:00Z"}},
     {"now": datetime(2025, 6, 15, 14, 0, tzinfo=timezone(timedelta(hours=2)))}, True),
    ("date-extra", {"DateLessThan": {"ex:KeyExpiry": "2026-01-01T00:00:00Z"}},
     {"extra": {"ex:KeyExpiry": "2025-12-31T23:59:59Z"}}, True),
    ("date-extra-garbage", {"DateLessThan": {"ex:KeyExpiry": "2026-01-01T00:00:00Z"}},
     {"extra": {"ex:KeyExpiry": "soon"}}, False),
    # Bool on MFA
    ("mfa-yes", {"Bool": {"nexus:MfaPresent": True}}, {"who": principal(mfa=True)}, True),
    ("mfa-no", {"Bool": {"nexus:MfaPresent": True}}, {"who": principal(mfa=False)}, False),
    ("mfa-string", {"Bool": {"nexus:MfaPresent": "false"}}, {"who": principal(mfa=False)}, True),
    # Numeric on extra request keys
    ("num-lt", {"NumericLessThan": {"ex:Rpm": 100}}, {"extra": {"ex:Rpm": 99}}, True),
    ("num-lt-edge", {"NumericLessThan": {"ex:Rpm": 100}}, {"extra": {"ex:Rpm": 100}}, False),
    ("num-lte", {"NumericLessThanEquals": {"ex:Rpm": "100"}}, {"extra": {"ex:Rpm": "100"}}, True),
    ("num-gt", {"NumericGreaterThan": {"ex:Rpm": 1.5}}, {"extra": {"ex:Rpm": 2}}, True),
    ("num-gte-no", {"NumericGreaterThanEquals": {"ex:Rpm": 10}}, {"extra": {"ex:Rpm": 9.99}}, False),
    ("num-eq-any", {"NumericEquals": {"ex:Rpm": [1, 2, 3]}}, {"extra": {"ex:Rpm": 3}}, True),
    ("num-ne", {"NumericNotEquals": {"ex:Rpm": [1, 2]}}, {"extra": {"ex:Rpm": 3}}, True),
    ("num-ne-hit", {"NumericNotEquals": {"ex:Rpm": [1, 2]}}, {"extra": {"ex:Rpm": 2}}, False),
    ("num-garbage", {"NumericLessThan": {"ex:Rpm": 100}}, {"extra": {"ex:Rpm": "many"}}, False),
    ("num-bool-is-not-a-number", {"NumericEquals": {"ex:Rpm": 1}}, {"extra": {"ex:Rpm": True}}, False),
    ("num-missing", {"NumericLessThan": {"ex:Rpm": 100}}, {}, False),
    # Strings: equals, ignore case, like, negations
    ("str-eq", {"StringEquals": {"nexus:PrincipalTag/dept": "finance"}},
     {"who": principal(tags={"dept": "finance"})}, True),
    ("str-eq-case", {"StringEquals": {"nexus:PrincipalTag/dept": "finance"}},
     {"who": principal(tags={"dept": "Finance"})}, False),
    ("str-eq-ignore-case", {"StringEqualsIgnoreCase": {"nexus:PrincipalTag/dept": "FINANCE"}},
     {"who": principal(tags={"dept": "Finance"})}, True),
    ("str-ne", {"StringNotEquals": {"nexus:PrincipalType": "api_key"}}, {}, True),
    ("str-ne-missing", {"StringNotEquals": {"nexus:PrincipalTag/dept": "x"}}, {}, True),
    ("str-like", {"StringLike": {"nexus:ResourceTag/env": "prod-*"}}, {"tags": {"env": "prod-eu"}}, True),
    ("str-like-one-char", {"StringLike": {"nexus:ResourceTag/env": "prod-e?"}}, {"tags": {"env": "prod-eu"}}, True),
    ("str-like-whole", {"StringLike": {"nexus:ResourceTag/env": "prod"}}, {"tags": {"env": "prod-eu"}}, False),
    ("str-like-literal-dot", {"StringLike": {"nexus:ResourceTag/env": "a.c"}}, {"tags": {"env": "abc"}}, False),
    ("str-not-like", {"StringNotLike": {"nexus:ResourceTag/env": ["prod-*", "stage-*"]}},
     {"tags": {"env": "dev"}}, True),
    ("str-not-like-hit", {"StringNotLike": {"nexus:ResourceTag/env": ["prod-*", "stage-*"]}},
     {"tags": {"env": "stage-1"}}, False),
    ("str-org-path", {"StringLike": {"nexus:ResourceOrgPath": "acme/*"}}, {}, True),
    ("str-multi-valued-extra", {"StringEquals": {"ex:Groups": "sre"}}, {"extra": {"ex:Groups": ["dev", "sre"]}},
     True),
    ("str-multi-valued-extra-ne", {"StringNotEquals": {"ex:Groups": "sre"}}, {"extra": {"ex:Groups": ["dev", "sre"]}},
     False),
    ("str-empty-list-is-missing", {"StringEquals": {"ex:Groups": "sre"}}, {"extra": {"ex:Groups": []}}, False),
    # IfExists and Null
    ("if-exists-missing", {"StringEqualsIfExists": {"nexus:ResourceTag/env": "prod"}}, {}, True),
    ("if-exists-present-hit", {"StringEqualsIfExists": {"nexus:ResourceTag/env": "prod"}},
     {"tags": {"env": "prod"}}, True),
    ("if-exists-present-miss", {"StringEqualsIfExists": {"nexus:ResourceTag/env": "prod"}},
     {"tags": {"env": "dev"}}, False),
    ("if-exists-ip", {"IpAddressIfExists": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": None}, True),
    ("if-exists-ip-outside", {"IpAddressIfExists": {"nexus:SourceIp": "10.0.0.0/8"}}, {"ip": "1.1.1.1"}, False),
    ("null-true-missing", {"Null": {"nexus:ResourceTag/owner": "true"}}, {}, True),
    ("null-true-present", {"Null": {"nexus:ResourceTag/owner": True}}, {"tags": {"owner": "x"}}, False),
    ("null-false-present", {"Null": {"nexus:ResourceTag/owner": False}}, {"tags": {"owner": "x"}}, True),
    ("null-false-missing", {"Null": {"nexus:SourceIp": "false"}}, {"ip": None}, False),
    # AND across keys and operators
    ("and-keys", {"StringEquals": {"nexus:PrincipalTag/dept": "ops", "nexus:ResourceTag/env": "prod"}},
     {"who": principal(tags={"dept": "ops"}), "tags": {"env": "prod"}}, True),
    ("and-keys-one-fails", {"StringEquals": {"nexus:PrincipalTag/dept": "ops", "nexus:ResourceTag/env": "prod"}},
     {"who": principal(tags={"dept": "ops"}), "tags": {"env": "dev"}}, False),
    ("and-operators-one-fails", {"StringEquals": {"nexus:PrincipalTag/dept": "ops"},
                                 "IpAddress": {"nexus:SourceIp": "10.0.0.0/8"}},
     {"who": principal(tags={"dept": "ops"}), "ip": "8.8.8.8"}, False),
    # ABAC: owner and department matching through policy variables
    ("owner-match", {"StringEquals": {"nexus:ResourceTag/owner": "${nexus:PrincipalId}"}},
     {"tags": {"owner": str(USER_ID)}}, True),
    ("owner-mismatch", {"StringEquals": {"nexus:ResourceTag/owner": "${nexus:PrincipalId}"}},
     {"tags": {"owner": "someone"}}, False),
    ("dept-match", {"StringEquals": {"nexus:ResourceTag/department": "${nexus:PrincipalTag/department}"}},
     {"who": principal(tags={"department": "r-and-d"}), "tags": {"department": "r-and-d"}}, True),
    ("dept-mismatch", {"StringEquals": {"nexus:ResourceTag/department": "${nexus:PrincipalTag/department}"}},
     {"who": principal(tags={"department": "r-and-d"}), "tags": {"department": "sales"}}, False),
    ("dept-caller-untagged", {"StringEquals": {"nexus:ResourceTag/department": "${nexus:PrincipalTag/department}"}},
     {"tags": {"department": ""}}, False),
    ("dept-like-var", {"StringLike": {"nexus:ResourceTag/project": "${nexus:PrincipalTag/team}-*"}},
     {"who": principal(tags={"team": "ml"}), "tags": {"project": "ml-vision"}}, True),
    ("dept-like-var-is-literal", {"StringLike": {"nexus:ResourceTag/project": "${nexus:PrincipalTag/team}-*"}},
     {"who": principal(tags={"team": "*"}), "tags": {"project": "ml-vision"}}, False),
    ("org-path-var", {"StringEquals": {"nexus:ResourceOrgPath": "${nexus:PrincipalOrgPath}"}}, {}, True),
]


@pytest.mark.parametrize(("condition", "kw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_condition(condition: dict[str, Any], kw: dict[str, Any], expected: bool) -> None:
    assert allowed(condition, **kw) is expected


def test_a_deny_with_an_unmet_condition_does_not_deny() -> None:
    policies = [policy(allow("*"), deny("*", "*", {"NotIpAddress": {"nexus:SourceIp": "10.0.0.0/8"}}))]
    assert decide(policies, request(READ, KEY, ip="10.0.0.1")).allowed
    outside = decide(policies, request(READ, KEY, ip="192.0.2.1"))
    assert not outside.allowed and outside.effect == "Deny" and outside.statement_index == 1
    # No address at all: a negated operator holds, so the deny applies (fails closed).
    assert not decide(policies, request(READ, KEY, ip=None)).allowed


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"nexus:SourceIp": "1.2.3.4"}, "is set from the request itself"),
    ({"nexus:ResourceTag/owner": "x"}, "is set from the request itself"),
    ({"Rpm": 5}, "is not a condition key"),
    ({"nexus:sourceip": "1.2.3.4"}, "did you mean nexus:SourceIp"),
])
def test_bad_extra_keys_are_refused(extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RequestError, match=None) as info:
        request(READ, KEY, extra=extra)
    assert fragment in str(info.value)
