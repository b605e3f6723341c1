"""Resource names: formatting, parsing, and Resource patterns with globs, org inheritance and variables."""

from __future__ import annotations

import pytest
from tests.controlplane.iam.helpers import USER_ID, principal

from nexus.controlplane.iam.actions import action, compile_action_pattern, is_action, resource_nrn
from nexus.controlplane.iam.errors import NrnError
from nexus.controlplane.iam.nrn import Nrn, compile_resource_pattern, format_nrn, in_org_subtree, parse_nrn


def test_format_and_parse_round_trip() -> None:
    text = format_nrn("gateway", "acme/emea", "virtual-key", "0b4e")
    assert text == "nrn:nexus:gateway:org/acme/emea:virtual-key/0b4e"
    parsed = parse_nrn(text)
    assert parsed == Nrn("gateway", "org/acme/emea", "virtual-key", "0b4e")
    assert parsed.org_path == "acme/emea" and str(parsed) == text
    system = parse_nrn(format_nrn("gateway", None, "model", "openai/gpt-4o:2024"))
    assert system.scope == "" and system.org_path is None and system.id == "openai/gpt-4o:2024"
    assert format_nrn("iam", "*", "user", "*") == "nrn:nexus:iam:*:user/*"
    assert resource_nrn("credential", None, "c1") == "nrn:nexus:gateway::credential/c1"
    assert resource_nrn("thing", "acme") == "nrn:nexus:platform:org/acme:thing/*"


@pytest.mark.parametrize(("text", "fragment"), [
    ("arn:aws:s3:::bucket", "not a resource name"),
    ("nrn:nexus:gateway", "not a resource name"),
    ("nrn:nexus:billing::thing/1", "unknown service 'billing'"),
    ("nrn:nexus:gateway:acme:virtual-key/1", "scope must be org/<org path>"),
    ("nrn:nexus:gateway:org/Acme:virtual-key/1", "'Acme' is not an org slug"),
    ("nrn:nexus:gateway:org/acme//emea:virtual-key/1", "'' is not an org slug"),
    ("nrn:nexus:gateway:org/acme:virtual-key", "expected <type>/<id>"),
    ("nrn:nexus:gateway:org/acme:Virtual-Key/1", "not a resource type"),
    ("nrn:nexus:gateway:org/acme:virtual-key/", "the id must be non-empty"),
    ("nrn:nexus:gateway:org/acme:virtual-key/a b", "without white space"),
])
def test_malformed_names_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(NrnError, match=None) as info:
        parse_nrn(text)
    assert fragment in str(info.value)


def test_format_refuses_what_would_not_parse() -> None:
    with pytest.raises(NrnError):
        format_nrn("gateway", "Acme", "virtual-key", "1")
    with pytest.raises(NrnError):
        parse_nrn(42)  # type: ignore[arg-type]


KEY = "nrn:nexus:gateway:org/acme/emea:virtual-key/k1"

# (pattern, resource, matches)
PATTERNS = [
    ("*", KEY, True),
    ("nrn:nexus:*", KEY, True),
    ("nrn:nexus:*", "nrn:nexus:iam::group/g1", True),
    ("nrn:nexus:gateway:*", KEY, True),
    ("nrn:nexus:compliance:*", KEY, False),
    ("nrn:nexus:*:org/acme:*", KEY, True),
    ("nrn:nexus:gate*:org/acme:*", KEY, True),
    # org scope inheritance, at slash boundaries only
    ("nrn:nexus:gateway:org/acme:*", "nrn:nexus:gateway:org/acme:virtual-key/k1", True),
    ("nrn:nexus:gateway:org/acme:*", KEY, True),
    ("nrn:nexus:gateway:org/acme:*", "nrn:nexus:gateway:org/acme/emea/sales/de:virtual-key/k1", True),
    ("nrn:nexus:gateway:org/acme:*", "nrn:nexus:gateway:org/acmex:virtual-key/k1", False),
    ("nrn:nexus:gateway:org/acme:*", "nrn:nexus:gateway:org/acmex/emea:virtual-key/k1", False),
    ("nrn:nexus:gateway:org/acme/emea:*", "nrn:nexus:gateway:org/acme:virtual-key/k1", False),
    ("nrn:nexus:gateway:org/acme/emea:*", "nrn:nexus:gateway:org/acme/emeax:virtual-key/k1", False),
    ("nrn:nexus:gateway:org/acme:*", "nrn:nexus:gateway::virtual-key/k1", False),
    ("nrn:nexus:gateway:org/acme:*", "nrn:nexus:gateway:*:virtual-key/*", False),
    # globs inside an org path match within one component, then inherit
    ("nrn:nexus:gateway:org/*/emea:*", KEY, True),
    ("nrn:nexus:gateway:org/*/emea:*", "nrn:nexus:gateway:org/globex/emea/x:virtual-key/k1", True),
    ("nrn:nexus:gateway:org/*/emea:*", "nrn:nexus:gateway:org/acme/apac:virtual-key/k1", False),
    ("nrn:nexus:gateway:org/ac*:*", "nrn:nexus:gateway:org/acmex:virtual-key/k1", True),
    ("nrn:nexus:gateway:org/acme/*:*", "nrn:nexus:gateway:org/acme:virtual-key/k1", False),
    ("nrn:nexus:gateway:org/*:*", "nrn:nexus:gateway::virtual-key/k1", False),
    # scope * and the empty scope
    ("nrn:nexus:gateway:*:virtual-key/*", "nrn:nexus:gateway::virtual-key/k1", True),
    ("nrn:nexus:gateway:*:virtual-key/*", KEY, True),
    ("nrn:nexus:gateway::model/*", "nrn:nexus:gateway::model/openai/gpt-4o", True),
    ("nrn:nexus:gateway::model/*", "nrn:nexus:gateway:org/acme:model/m1", False),
    # type and id globs
    ("nrn:nexus:gateway:org/acme:virtual-key/*", KEY, True),
    ("nrn:nexus:gateway:org/acme:virtual-key/k*", KEY, True),
    ("nrn:nexus:gateway:org/acme:virtual-key/k2", KEY, False),
    ("nrn:nexus:gateway:org/acme:*-key/*", KEY, True),
    ("nrn:nexus:gateway:org/acme:credential/*", KEY, False),
    ("nrn:nexus:gateway:org/acme:*/k1", KEY, True),
    # case-sensitive
    ("nrn:nexus:gateway:org/acme:virtual-key/K1", KEY, False),
    # a collection is a concrete name whose id is '*'
    ("nrn:nexus:gateway:org/acme:virtual-key/k1", "nrn:nexus:gateway:org/acme:virtual-key/*", False),
    # regex metacharacters in a pattern are literal
    ("nrn:nexus:gateway::model/gpt-4o.mini", "nrn:nexus:gateway::model/gpt-4oXmini", False),
    ("nrn:nexus:gateway::model/gpt-4o.mini", "nrn:nexus:gateway::model/gpt-4o.mini", True),
]


@pytest.mark.parametrize(("pattern", "resource", "expected"), PATTERNS)
def test_pattern_matching(pattern: str, resource: str, expected: bool) -> None:
    assert compile_resource_pattern(pattern).matches(resource, principal()) is expected


def test_variables_in_patterns() -> None:
    own = compile_resource_pattern("nrn:nexus:gateway:org/${nexus:PrincipalOrgPath}:*")
    emea, root = principal("acme/emea"), principal("acme")
    assert own.matches(KEY, emea) and own.matches(KEY, root)
    assert not own.matches("nrn:nexus:gateway:org/acme:virtual-key/k1", emea)
    assert not own.matches("nrn:nexus:gateway:org/acme/emeax:virtual-key/k1", emea)

    me = compile_resource_pattern("nrn:nexus:iam:org/${nexus:PrincipalOrgPath}:user/${nexus:PrincipalId}")
    assert me.matches(f"nrn:nexus:iam:org/acme/emea:user/{USER_ID}", emea)
    assert not me.matches("nrn:nexus:iam:org/acme/emea:user/someone-else", emea)

    team = compile_resource_pattern("nrn:nexus:platform:org/acme:project/${nexus:PrincipalTag/team}-*")
    assert team.matches("nrn:nexus:platform:org/acme:project/ml-research", principal(tags={"team": "ml"}))
    assert not team.matches("nrn:nexus:platform:org/acme:project/web-shop", principal(tags={"team": "ml"}))
    # A tag the caller lacks matches nothing; a '*' inside a value is a literal, not a glob.
    assert not team.matches("nrn:nexus:platform:org/acme:project/ml-research", principal())
    assert not team.matches("nrn:nexus:platform:org/acme:project/ml-research", principal(tags={"team": "*"}))
    assert team.matches("nrn:nexus:platform:org/acme:project/*-x", principal(tags={"team": "*"}))


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("arn:*", "not a resource pattern"),
    ("nrn:nexus:gateway", "incomplete resource pattern"),
    ("nrn:nexus:gateway:org/acme", "incomplete resource pattern"),
    ("nrn:nexus:billing:*", "unknown service 'billing'"),
    ("nrn:nexus:Gateway:*", "is not a service"),
    ("nrn:nexus:gateway:tenant/acme:*", "scope must be org/<org path>"),
    ("nrn:nexus:gateway:org/:*", "'' is not an org slug"),
    ("nrn:nexus:gateway:org/a_b:*", "'a_b' is not an org slug"),
    ("nrn:nexus:gateway:org/acme:virtual-key", "expected <type>/<id>"),
    ("nrn:nexus:gateway:org/acme:Key/*", "not a resource type"),
    ("nrn:nexus:gateway:org/acme:key/a b", "without white space"),
    ("nrn:nexus:gateway:org/${nexus:Nope}:*", "unknown policy variable ${nexus:Nope}"),
    ("nrn:nexus:gateway:org/${nexus:PrincipalOrgPath:*", "unclosed policy variable"),
    ("nrn:nexus:${nexus:PrincipalId}:*", "is not a service"),
])
def test_bad_patterns(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        compile_resource_pattern(pattern)
    assert fragment in str(info.value)


def test_in_org_subtree() -> None:
    assert in_org_subtree(KEY, "acme") and in_org_subtree(KEY, "acme/emea")
    assert not in_org_subtree(KEY, "acme/emea/sales") and not in_org_subtree(KEY, "acm")
    assert not in_org_subtree("nrn:nexus:gateway::model/m", "acme")


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("*", "admin:virtual-key.create", True),
    ("*", "my:usage.read", True),
    ("admin:*", "admin:virtual-key.create", True),
    ("admin:*", "my:virtual-key.create", False),
    ("my:*", "my:virtual-key.create", True),
    ("*:*.read", "my:usage.read", True),
    ("admin:*.read", "admin:traffic.read", True),
    ("admin:*.read", "admin:traffic.read-payload", False),
    ("admin:*.read*", "admin:traffic.read-payload", True),
    ("admin:virtual-key.*", "admin:virtual-key.revoke", True),
    ("admin:virtual-key.*", "admin:virtual-keys.revoke", False),
    ("admin:virtual-*.create", "admin:virtual-key.create", True),
    ("admin:virtual-key.create", "admin:virtual-key.create", True),
    ("admin:virtual-key.create", "admin:virtual-key.createx", False),
])
def test_action_patterns(pattern: str, name: str, expected: bool) -> None:
    assert compile_action_pattern(pattern).matches(name) is expected


@pytest.mark.parametrize("bad", ["Admin:*", "admin:virtual-key", "admin:Virtual-Key.read", "iam:*", "admin:*.*.x",
                                 "admin:", "", "admin:a.b c"])
def test_bad_action_patterns(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an action"):
        compile_action_pattern(bad)


def test_action_names() -> None:
    assert action("virtual-key", "revoke") == "admin:virtual-key.revoke"
    assert action("usage", "read", "my") == "my:usage.read"
    assert is_action("admin:iam.simulate") and not is_action("admin:*.read")
    with pytest.raises(ValueError, match="no verb 'revoke'"):
        action("provider", "revoke")
    with pytest.raises(ValueError, match="unknown resource"):
        action("widget", "read")
