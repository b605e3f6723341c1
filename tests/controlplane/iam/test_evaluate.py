"""The decision: explicit Deny > Allow > default deny, reasons, org confinement, request validation, speed."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.controlplane.iam.helpers import NOW, allow, decide, deny, policy, principal, request

from nexus.controlplane.iam.actions import all_actions
from nexus.controlplane.iam.document import PolicyDocument, Statement
from nexus.controlplane.iam.errors import NrnError, PolicyError, RequestError
from nexus.controlplane.iam.evaluate import AccessRequest, AttachedPolicy, compile_document, evaluate
from nexus.controlplane.iam.seed import SEEDED_POLICIES

KEY = "nrn:nexus:gateway:org/acme/emea:virtual-key/k1"


def test_default_deny_explains_itself() -> None:
    nothing = decide([], request("admin:virtual-key.create", KEY))
    assert not nothing.allowed and nothing.effect == "DefaultDeny"
    assert nothing.reason == f"no statement allows admin:virtual-key.create on {KEY} (no policies attached)"
    assert nothing.policy_id is None and nothing.statement_index is None and nothing.sid is None
    other = decide(policy(allow("admin:user.read")), request("admin:virtual-key.create", KEY))
    assert other.reason == f"no statement allows admin:virtual-key.create on {KEY}"


def test_deny_overrides_allow_wherever_it_sits() -> None:
    grant = policy(allow("admin:*", "*", Sid="All"), name="grant")
    block = policy(allow("admin:user.read"), deny("admin:virtual-key.*", "nrn:nexus:gateway:org/acme:*",
                                                   Sid="NoKeys"), name="block")
    for order in ([grant, block], [block, grant]):
        d = decide(order, request("admin:virtual-key.revoke", KEY))
        assert (d.allowed, d.effect, d.policy_name, d.statement_index, d.sid) == (False, "Deny", "block", 1, "NoKeys")
        assert d.policy_id == block.id
        assert d.reason == 'denied by policy "block" Statement[1] (Sid "NoKeys")'
    ok = decide([grant, block], request("admin:user.read", "nrn:nexus:iam:org/acme:user/u"))
    assert ok.allowed and ok.reason == 'allowed by policy "grant" Statement[0] (Sid "All")'
    outside = decide([grant, block], request("admin:virtual-key.revoke", "nrn:nexus:gateway:org/globex:virtual-key/k"))
    assert outside.allowed


def test_the_first_applicable_allow_is_reported() -> None:
    d = decide([policy(allow("admin:user.create"), name="a"), policy(allow("admin:*"), allow("*"), name="b")],
               request("admin:virtual-key.read", KEY))
    assert d.policy_name == "b" and d.statement_index == 0 and d.reason == 'allowed by policy "b" Statement[0]'


def test_not_action_and_not_resource() -> None:
    everything_but_iam = policy({"Effect": "Allow", "NotAction": ["admin:user.*", "admin:policy.*"],
                                 "Resource": "*"})
    assert decide(everything_but_iam, request("admin:virtual-key.read", KEY)).allowed
    assert not decide(everything_but_iam, request("admin:user.update", "nrn:nexus:iam:org/acme:user/u")).allowed
    outside_acme = policy(allow("*"), {"Effect": "Deny", "Action": "*", "NotResource": "nrn:nexus:*:org/acme:*"})
    assert decide(outside_acme, request("admin:virtual-key.read", KEY)).allowed
    d = decide(outside_acme, request("admin:virtual-key.read", "nrn:nexus:gateway:org/globex:virtual-key/k"))
    assert d.effect == "Deny" and d.statement_index == 1


def test_org_policies_cannot_allow_outside_their_org() -> None:
    # An acme admin wrote "everything" into an acme-owned policy: it still stops at acme's border.
    greedy = policy(allow("*", "*"), deny("admin:kill-switch.*", "*"), name="acme-greedy", org_path="acme")
    assert decide(greedy, request("admin:virtual-key.read", KEY)).allowed
    assert decide(greedy, request("admin:virtual-key.read", "nrn:nexus:gateway:org/acme:virtual-key/k")).allowed
    for elsewhere in ("nrn:nexus:gateway:org/globex:virtual-key/k", "nrn:nexus:gateway:org/acmex:virtual-key/k",
                      "nrn:nexus:gateway::provider/p", "nrn:nexus:iam::group/super-admins",
                      "nrn:nexus:gateway:*:virtual-key/*"):
        assert not decide(greedy, request("admin:virtual-key.read", elsewhere)).allowed, elsewhere
    # Its Deny statements apply everywhere: they only take access away.
    system_grant = AttachedPolicy(None, "super-admins", SEEDED_POLICIES["super-admins"])
    d = decide([system_grant, greedy], request("admin:kill-switch.update", "nrn:nexus:platform::kill-switch/g"))
    assert d.effect == "Deny" and d.policy_name == "acme-greedy"
    # A child org's policy cannot reach its parent.
    child = policy(allow("*"), org_path="acme/emea")
    assert not decide(child, request("admin:project.read", "nrn:nexus:platform:org/acme:project/p")).allowed


def test_deny_on_policy_variables_that_do_not_resolve_does_not_apply() -> None:
    # Same as AWS: an unresolvable variable makes the element match nothing.
    policies = [policy(allow("*"), deny("*", "nrn:nexus:*:org/acme:project/${nexus:PrincipalTag/blocked}"))]
    target = "nrn:nexus:platform:org/acme:project/secret"
    assert decide(policies, request("admin:project.read", target)).allowed
    assert not decide(policies, request("admin:project.read", target,
                                        who=principal(tags={"blocked": "secret"}))).allowed


@pytest.mark.parametrize(("action", "resource", "error"), [
    ("admin:virtual-key", KEY, RequestError),
    ("admin:*.read", KEY, RequestError),
    ("Admin:virtual-key.read", KEY, RequestError),
    ("admin:virtual-key.read", "virtual-key/k1", NrnError),
    ("admin:virtual-key.read", "nrn:nexus:gateway:global:virtual-key/k1", NrnError),
])
def test_requests_are_validated(action: str, resource: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        request(action, resource)


def test_naive_now_is_refused() -> None:
    with pytest.raises(RequestError, match="timezone-aware"):
        request("admin:virtual-key.read", KEY, now=datetime(2025, 1, 1))


def test_documents_built_in_code_are_checked_when_compiled() -> None:
    bad = PolicyDocument((Statement("Allow", ("admin:*.read",), ("arn:aws:*",)),))
    with pytest.raises(PolicyError) as info:
        evaluate([AttachedPolicy(None, "hand-made", bad)], request("admin:virtual-key.read", KEY))
    assert info.value.path == "Statement[0].Resource[0]"


def test_compiled_documents_are_cached_by_content() -> None:
    first = policy(allow("admin:*.read", "nrn:nexus:gateway:org/acme:*"), deny("my:*"))
    second = policy(allow("admin:*.read", "nrn:nexus:gateway:org/acme:*"), deny("my:*"))
    assert first.document is not second.document
    assert compile_document(first.document) is compile_document(second.document)


_ACTION_PATTERNS = st.sampled_from(["*", "admin:*", "my:*", "admin:*.read", "admin:virtual-key.*",
                                    "admin:user.create", "*:*.delete"])
_RESOURCE_PATTERNS = st.sampled_from(["*", "nrn:nexus:*", "nrn:nexus:gateway:org/acme:*",
                                      "nrn:nexus:*:org/${nexus:PrincipalOrgPath}:*", "nrn:nexus:iam::*"])
_ACTIONS = st.sampled_from([*all_actions(), "my:usage.read", "my:virtual-key.create"])
_RESOURCES = st.sampled_from([KEY, "nrn:nexus:gateway::model/m", "nrn:nexus:iam:org/globex:user/u",
                              "nrn:nexus:platform:org/acme:project/*", "nrn:nexus:compliance:*:hook/*"])


@st.composite
def statement_lists(draw: st.DrawFn) -> list[dict[str, object]]:
    statements: list[dict[str, object]] = [
        {"Effect": draw(st.sampled_from(["Allow", "Deny"])), "Action": draw(st.lists(_ACTION_PATTERNS, min_size=1,
                                                                                    max_size=3)),
         "Resource": draw(_RESOURCE_PATTERNS)}
        for _ in range(draw(st.integers(0, 6)))
    ]
    statements.insert(draw(st.integers(0, len(statements))), {"Effect": "Deny", "Action": "*", "Resource": "*"})
    return statements


@settings(max_examples=200, deadline=None)
@given(statement_lists(), st.integers(1, 3), _ACTIONS, _RESOURCES,
       st.sampled_from([None, "acme", "globex"]), st.booleans())
def test_a_deny_star_always_wins(statements: list[dict[str, object]], parts: int, action: str, resource: str,
                                 org_path: str | None, mfa: bool) -> None:
    # Spread the statements over several policies (some org-owned); the Deny * is in one of them.
    chunks = [statements[i::parts] for i in range(parts)]
    policies = [policy(*chunk, name=f"p{i}", org_path=org_path if i else None) for i, chunk in enumerate(chunks)
                if chunk]
    d = evaluate(policies, request(action, resource, who=principal(mfa=mfa)))
    assert not d.allowed and d.effect == "Deny"


def test_principal_kinds_and_ids_feed_variables() -> None:
    key_id = uuid.uuid4()
    automation = principal(kind="api_key", pid=key_id)
    p = policy(allow("admin:virtual-key.read", "*", {"StringEquals": {"nexus:PrincipalType": "api_key"}}),
               allow("admin:virtual-key.revoke", "nrn:nexus:gateway:org/acme:virtual-key/${nexus:PrincipalId}"))
    assert decide(p, request("admin:virtual-key.read", KEY, who=automation)).allowed
    assert not decide(p, request("admin:virtual-key.read", KEY)).allowed
    own = f"nrn:nexus:gateway:org/acme:virtual-key/{key_id}"
    assert decide(p, request("admin:virtual-key.revoke", own, who=automation)).allowed
    assert not decide(p, request("admin:virtual-key.revoke", own)).allowed


def test_fast_enough_for_every_admin_request() -> None:
    # Six seeded policies, a caller in every group; a decision must cost well under a millisecond.
    policies = [AttachedPolicy(None, name, doc) for name, doc in SEEDED_POLICIES.items() if name != "super-admins"]
    requests = [AccessRequest(principal(), a, KEY, "10.0.0.1", NOW, {"owner": "x"}) for a in
                ("admin:virtual-key.read", "admin:traffic.read-payload", "admin:kill-switch.update",
                 "admin:organization.delete")]
    evaluate(policies, requests[0])
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        for req in requests:
            evaluate(policies, req)
    per_decision = (time.perf_counter() - started) / (rounds * len(requests))
    assert per_decision < 0.0005, f"{per_decision * 1e6:.1f} µs per decision"


def test_pure_modules_never_import_trio() -> None:
    code = ("import sys\n"
            "import nexus.controlplane.iam.evaluate, nexus.controlplane.iam.simulate, nexus.controlplane.iam.seed\n"
            "assert 'trio' not in sys.modules, 'trio was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
