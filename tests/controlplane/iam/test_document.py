"""Policy documents: strict parsing with errors that name the JSON path, and canonical JSON output."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.controlplane.iam.document import (
    Condition,
    PolicyDocument,
    Statement,
    document_to_json,
    parse_document,
)
from nexus.controlplane.iam.errors import PolicyError
from nexus.controlplane.iam.seed import SEEDED_GROUPS, SEEDED_POLICIES

EXAMPLE = {  # the example of control-plane.md
    "Version": "2025-01-01",
    "Statement": [{"Effect": "Allow", "Action": ["admin:virtual-key.create", "admin:*.read"],
                   "Resource": ["nrn:nexus:gateway:org/acme:virtual-key/*"],
                   "Condition": {"IpAddress": {"nexus:SourceIp": ["10.0.0.0/8"]}}}],
}


def test_the_design_example_parses() -> None:
    doc = parse_document(EXAMPLE)
    assert doc == PolicyDocument((Statement(
        "Allow", ("admin:virtual-key.create", "admin:*.read"), ("nrn:nexus:gateway:org/acme:virtual-key/*",),
        conditions=(Condition("IpAddress", "nexus:SourceIp", ("10.0.0.0/8",)),)),))
    assert document_to_json(doc) == EXAMPLE


def test_scalars_become_lists_and_everything_optional_round_trips() -> None:
    doc = parse_document({"Version": "2025-01-01", "Statement": [
        {"Sid": "One", "Effect": "Deny", "NotAction": "admin:*.read", "NotResource": "nrn:nexus:iam:*",
         "Condition": {"Bool": {"nexus:MfaPresent": False}, "NumericLessThan": {"ex:Rpm": 10},
                       "StringEquals": {"nexus:PrincipalTag/team": ["a", "b"]}}},
        {"Effect": "Allow", "Action": "my:*", "Resource": "*"},
    ]})
    first = doc.statements[0]
    assert first.not_action and first.not_resource and first.sid == "One"
    assert first.conditions[0] == Condition("Bool", "nexus:MfaPresent", (False,))
    out = document_to_json(doc)
    assert out["Statement"][0]["NotAction"] == ["admin:*.read"]
    assert out["Statement"][0]["Condition"]["NumericLessThan"] == {"ex:Rpm": [10]}
    assert "Sid" not in out["Statement"][1]
    assert parse_document(json.loads(json.dumps(out))) == doc


def test_seeded_documents_round_trip() -> None:
    assert set(SEEDED_POLICIES) == set(SEEDED_GROUPS)
    for name, doc in SEEDED_POLICIES.items():
        assert parse_document(document_to_json(doc)) == doc, name


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    """The design example with the value at ``path`` replaced (``...`` deletes it)."""
    doc = copy.deepcopy(EXAMPLE)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def _two_statements(second: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2025-01-01", "Statement": [EXAMPLE["Statement"][0], second]}


BAD: list[tuple[Any, str, str]] = [
    ("not a dict", "document", "must be an object, not a string"),
    ({**EXAMPLE, "Id": "x"}, "document", 'unknown key "Id"'),
    (_with(["Version"], ...), "Version", "is required"),
    (_with(["Version"], "2012-10-17"), "Version", 'must be "2025-01-01"'),
    (_with(["Statement"], ...), "Statement", "is required"),
    (_with(["Statement"], {}), "Statement", "must be a list of statements"),
    (_with(["Statement"], []), "Statement", "at least one statement"),
    (_with(["Statement"], [{}] * 101), "Statement", "at most 100 statements"),
    (_with(["Statement", 0], "Allow"), "Statement[0]", "must be an object"),
    (_two_statements({"Effect": "allow", "Action": "*", "Resource": "*"}), "Statement[1].Effect",
     'must be "Allow" or "Deny"'),
    (_with(["Statement", 0, "Effect"], ...), "Statement[0].Effect", "is required"),
    (_with(["Statement", 0, "Effect"], True), "Statement[0].Effect", 'must be "Allow" or "Deny"'),
    (_with(["Statement", 0, "Principal"], "*"), "Statement[0]", 'unknown key "Principal"'),
    (_with(["Statement", 0, "Sid"], "has space"), "Statement[0].Sid", "must be 1-128 letters"),
    (_two_statements({"Sid": "A", "Effect": "Allow", "Action": "*", "Resource": "*"}) | {
        "Statement": [{"Sid": "A", "Effect": "Deny", "Action": "*", "Resource": "*"},
                      {"Sid": "A", "Effect": "Allow", "Action": "*", "Resource": "*"}]},
     "Statement[1].Sid", 'duplicate Sid "A" (also Statement[0])'),
    (_with(["Statement", 0, "Action"], ...), "Statement[0].Action", "is required (or NotAction)"),
    (_with(["Statement", 0, "NotAction"], "*"), "Statement[0]", "has both Action and NotAction"),
    (_with(["Statement", 0, "Action"], []), "Statement[0].Action", "must not be empty"),
    (_with(["Statement", 0, "Action"], 7), "Statement[0].Action", "must be a string or a list of strings"),
    (_with(["Statement", 0, "Action", 1], 7), "Statement[0].Action[1]", "must be a string"),
    (_with(["Statement", 0, "Action", 1], "admin:virtual-key"), "Statement[0].Action[1]", "is not an action"),
    (_with(["Statement", 0, "Action"], "s3:GetObject"), "Statement[0].Action", "is not an action"),
    (_with(["Statement", 0, "Resource"], ...), "Statement[0].Resource", "is required (or NotResource)"),
    (_with(["Statement", 0, "Resource", 0], "arn:aws:s3:::b"), "Statement[0].Resource[0]",
     "not a resource pattern"),
    (_with(["Statement", 0, "Resource"], "nrn:nexus:gateway:org/acme:${nexus:Who}/*"), "Statement[0].Resource",
     "unknown policy variable"),
    (_with(["Statement", 0, "Condition"], {}), "Statement[0].Condition", "must not be empty"),
    (_with(["Statement", 0, "Condition"], []), "Statement[0].Condition", "must be an object"),
    (_with(["Statement", 0, "Condition", "IpAdress"], {"nexus:SourceIp": "10.0.0.0/8"}),
     "Statement[0].Condition.IpAdress", "unknown condition operator 'IpAdress'"),
    (_with(["Statement", 0, "Condition", "IpAddress"], {}), "Statement[0].Condition.IpAddress",
     "at least one condition key"),
    (_with(["Statement", 0, "Condition", "IpAddress", "nexus:SourceIp"], ["10.0.0.0/8", "10.0.0.300/8"]),
     "Statement[0].Condition.IpAddress.nexus:SourceIp[1]", "is not an IPv4 or IPv6 address or CIDR block"),
    (_with(["Statement", 0, "Condition", "IpAddress", "nexus:SourceIp"], "fe80::/10x"),
     "Statement[0].Condition.IpAddress.nexus:SourceIp", "is not an IPv4 or IPv6"),
    (_with(["Statement", 0, "Condition", "IpAddress", "nexus:SourceIp"], []),
     "Statement[0].Condition.IpAddress.nexus:SourceIp", "needs at least one value"),
    (_with(["Statement", 0, "Condition", "IpAddress", "nexus:SourceIp"], [None]),
     "Statement[0].Condition.IpAddress.nexus:SourceIp[0]", "must be a string, number or boolean"),
    (_with(["Statement", 0, "Condition", "IpAddress"], {"nexus:SourceIP": "10.0.0.0/8"}),
     "Statement[0].Condition.IpAddress.nexus:SourceIP", "did you mean nexus:SourceIp?"),
    (_with(["Statement", 0, "Condition", "IpAddress"], {"SourceIp": "10.0.0.0/8"}),
     "Statement[0].Condition.IpAddress.SourceIp", "is not a condition key"),
    (_with(["Statement", 0, "Condition", "StringEquals"], {"nexus:principaltag/team": "x"}),
     "Statement[0].Condition.StringEquals.nexus:principaltag/team", "did you mean nexus:PrincipalTag/<key>?"),
    (_with(["Statement", 0, "Condition", "NumericLessThan"], {"ex:Rpm": ["10", "ten"]}),
     "Statement[0].Condition.NumericLessThan.ex:Rpm[1]", "must be a number"),
    (_with(["Statement", 0, "Condition", "NumericLessThan"], {"ex:Rpm": True}),
     "Statement[0].Condition.NumericLessThan.ex:Rpm", "must be a number"),
    (_with(["Statement", 0, "Condition", "DateLessThan"], {"nexus:CurrentTime": "next tuesday"}),
     "Statement[0].Condition.DateLessThan.nexus:CurrentTime", "must be an ISO 8601 date-time"),
    (_with(["Statement", 0, "Condition", "Bool"], {"nexus:MfaPresent": "yes"}),
     "Statement[0].Condition.Bool.nexus:MfaPresent", "must be true or false"),
    (_with(["Statement", 0, "Condition", "StringEquals"], {"nexus:PrincipalId": 5}),
     "Statement[0].Condition.StringEquals.nexus:PrincipalId", "must be a string"),
    (_with(["Statement", 0, "Condition", "StringLike"], {"nexus:PrincipalId": ["${nexus:Bad}"]}),
     "Statement[0].Condition.StringLike.nexus:PrincipalId[0]", "unknown policy variable"),
    (_with(["Statement", 0, "Condition", "Null"], {"nexus:SourceIp": [True, False]}),
     "Statement[0].Condition.Null.nexus:SourceIp", "either true or false"),
    (_with(["Statement", 0, "Condition", "NullIfExists"], {"nexus:SourceIp": True}),
     "Statement[0].Condition.NullIfExists", "unknown condition operator"),
]


@pytest.mark.parametrize(("doc", "path", "fragment"), BAD, ids=[f"{p}:{f[:30]}" for _d, p, f in BAD])
def test_malformed_documents_name_the_path(doc: Any, path: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_document(doc)
    assert info.value.path == path, str(info.value)
    assert fragment in info.value.problem, str(info.value)
    assert str(info.value).startswith(f"{path}: ")


_ACTIONS = st.sampled_from(["*", "admin:*", "my:*", "admin:*.read", "admin:virtual-key.*", "admin:user.create"])
_RESOURCES = st.sampled_from(["*", "nrn:nexus:*", "nrn:nexus:gateway:org/acme:*",
                              "nrn:nexus:iam:org/${nexus:PrincipalOrgPath}:user/${nexus:PrincipalId}",
                              "nrn:nexus:gateway::model/*"])
_CONDITIONS = st.dictionaries(
    st.sampled_from(["StringEquals", "StringLikeIfExists", "NumericLessThan", "Bool", "IpAddress", "Null"]),
    st.just(None), max_size=3)
_VALUES = {"StringEquals": ("nexus:PrincipalTag/team", ["a", "${nexus:PrincipalId}"]),
           "StringLikeIfExists": ("nexus:ResourceTag/env", "prod-*"), "NumericLessThan": ("ex:Count", [1, 2.5]),
           "Bool": ("nexus:MfaPresent", True), "IpAddress": ("nexus:SourceIp", ["::1", "10.0.0.0/8"]),
           "Null": ("nexus:SourceIp", "false")}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    statements = []
    for i in range(draw(st.integers(1, 5))):
        s: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Deny"])),
                             draw(st.sampled_from(["Action", "NotAction"])): draw(st.lists(_ACTIONS, min_size=1,
                                                                                         max_size=3)),
                             draw(st.sampled_from(["Resource", "NotResource"])): draw(_RESOURCES)}
        if draw(st.booleans()):
            s["Sid"] = f"S{i}"
        ops = draw(_CONDITIONS)
        if ops:
            s["Condition"] = {op: {_VALUES[op][0]: _VALUES[op][1]} for op in ops}
        statements.append(s)
    return {"Version": "2025-01-01", "Statement": statements}


@settings(max_examples=150, deadline=None)
@given(documents())
def test_parse_and_write_round_trip(raw: dict[str, Any]) -> None:
    doc = parse_document(raw)
    assert parse_document(json.loads(json.dumps(document_to_json(doc)))) == doc
    assert hash(doc) == hash(parse_document(raw))
