"""The seeded groups against representative actions and resources.

The caller sits in ``acme/emea``. Resources live in their own org, a child (``acme/emea/sales``),
the parent (``acme``), a sibling (``acme/apac``), a look-alike (``acme/emeax``), another tenant
(``globex``) and the system-wide scope. Each row is one decision that must come out as written.
"""

from __future__ import annotations

import pytest
from tests.controlplane.iam.helpers import OTHER_ID, USER_ID, principal, request

from nexus.controlplane.iam.actions import all_actions, compile_action_pattern, resource_nrn
from nexus.controlplane.iam.evaluate import AttachedPolicy, evaluate
from nexus.controlplane.iam.seed import SEEDED_GROUPS, SEEDED_POLICIES

ME = str(USER_ID)
OTHER = str(OTHER_ID)
OWN, CHILD, PARENT, SIBLING, LOOKALIKE, TENANT = (
    "acme/emea", "acme/emea/sales", "acme", "acme/apac", "acme/emeax", "globex")
SYSTEM = None


def r(resource: str, where: str | None, rid: str = "*") -> str:
    return resource_nrn(resource, where, rid)


SELF = f"nrn:nexus:iam:org/{OWN}:user/{ME}"
SOMEONE = f"nrn:nexus:iam:org/{OWN}:user/{OTHER}"

# (group, action, resource, resource tags, allowed)
MATRIX: list[tuple[str, str, str, dict[str, str], bool]] = [
    # super-admins: everything, everywhere
    ("super-admins", "admin:organization.create", r("organization", TENANT), {}, True),
    ("super-admins", "admin:credential.rotate", r("credential", SYSTEM, "c1"), {}, True),
    ("super-admins", "admin:traffic.read-payload", r("traffic", TENANT, "e1"), {}, True),
    ("super-admins", "admin:group.update", r("group", SYSTEM, "g1"), {"name": "super-admins"}, True),
    ("super-admins", "my:virtual-key.create", SELF, {}, True),
    # viewers: read-only on their subtree and the shared catalogue
    ("viewers", "admin:virtual-key.read", r("virtual-key", OWN, "k1"), {}, True),
    ("viewers", "admin:virtual-key.read", r("virtual-key", CHILD, "k1"), {}, True),
    ("viewers", "admin:virtual-key.read", r("virtual-key", PARENT, "k1"), {}, False),
    ("viewers", "admin:virtual-key.read", r("virtual-key", SIBLING, "k1"), {}, False),
    ("viewers", "admin:virtual-key.read", r("virtual-key", LOOKALIKE, "k1"), {}, False),
    ("viewers", "admin:virtual-key.read", r("virtual-key", TENANT, "k1"), {}, False),
    ("viewers", "admin:virtual-key.create", r("virtual-key", OWN), {"owner": ME}, False),
    ("viewers", "admin:traffic.read", r("traffic", OWN, "e1"), {}, True),
    ("viewers", "admin:traffic.read-payload", r("traffic", OWN, "e1"), {}, False),
    ("viewers", "admin:audit-log.read", r("audit-log", CHILD), {}, True),
    ("viewers", "admin:audit-log.verify", r("audit-log", OWN), {}, False),
    ("viewers", "admin:model.read", r("model", SYSTEM, "openai/gpt-4o"), {}, True),
    ("viewers", "admin:credential.read", r("credential", SYSTEM, "c1"), {}, False),
    ("viewers", "admin:user.read", r("user", OWN, OTHER), {}, True),
    ("viewers", "admin:user.update", r("user", OWN, OTHER), {}, False),
    ("viewers", "admin:rule-pack.read", r("rule-pack", SYSTEM, "pii"), {}, True),
    ("viewers", "admin:kill-switch.update", r("kill-switch", OWN), {}, False),
    ("viewers", "my:usage.read", SELF, {}, True),
    ("viewers", "my:usage.read", SOMEONE, {}, False),
    # developers: catalogue reads, their own keys and usage
    ("developers", "admin:model.read", r("model", SYSTEM, "openai/gpt-4o"), {}, True),
    ("developers", "admin:provider.read", r("provider", SYSTEM, "p1"), {}, True),
    ("developers", "admin:provider.update", r("provider", SYSTEM, "p1"), {}, False),
    ("developers", "admin:virtual-key.create", r("virtual-key", OWN), {"owner": ME}, True),
    ("developers", "admin:virtual-key.create", r("virtual-key", OWN), {"owner": OTHER}, False),
    ("developers", "admin:virtual-key.create", r("virtual-key", OWN), {}, False),
    ("developers", "admin:virtual-key.read", r("virtual-key", OWN, "k1"), {"owner": ME}, True),
    ("developers", "admin:virtual-key.read", r("virtual-key", OWN, "k1"), {"owner": OTHER}, False),
    ("developers", "admin:virtual-key.revoke", r("virtual-key", CHILD, "k1"), {"owner": ME}, True),
    ("developers", "admin:virtual-key.revoke", r("virtual-key", TENANT, "k1"), {"owner": ME}, False),
    ("developers", "admin:virtual-key.revoke", r("virtual-key", SIBLING, "k1"), {"owner": ME}, False),
    ("developers", "admin:virtual-key.update", r("virtual-key", OWN, "k1"), {"owner": ME}, False),
    ("developers", "admin:virtual-key.delete", r("virtual-key", OWN, "k1"), {"owner": ME}, True),
    ("developers", "admin:usage.read", r("usage", OWN), {"owner": ME}, True),
    ("developers", "admin:usage.read", r("usage", OWN), {"owner": OTHER}, False),
    ("developers", "admin:traffic.read", r("traffic", OWN, "e1"), {}, False),
    ("developers", "admin:project.read", r("project", OWN, "p1"), {}, True),
    ("developers", "admin:user.read", r("user", OWN, OTHER), {}, False),
    ("developers", "my:virtual-key.create", SELF, {}, True),
    # provider-admins: the provider catalogue; routing, quotas, passthrough in their subtree
    ("provider-admins", "admin:provider.create", r("provider", SYSTEM), {}, True),
    ("provider-admins", "admin:credential.rotate", r("credential", SYSTEM, "c1"), {}, True),
    ("provider-admins", "admin:model.update", r("model", SYSTEM, "m1"), {}, True),
    ("provider-admins", "admin:routing-rule.create", r("routing-rule", OWN), {}, True),
    ("provider-admins", "admin:routing-rule.simulate", r("routing-rule", CHILD), {}, True),
    ("provider-admins", "admin:routing-rule.update", r("routing-rule", SYSTEM, "global-1"), {}, False),
    ("provider-admins", "admin:routing-rule.read", r("routing-rule", SYSTEM, "global-1"), {}, True),
    ("provider-admins", "admin:quota-override.delete", r("quota-override", SIBLING, "q1"), {}, False),
    ("provider-admins", "admin:quota-policy.create", r("quota-policy", TENANT), {}, False),
    ("provider-admins", "admin:passthrough.update", r("passthrough", OWN, "p1"), {}, False),  # installation-wide
    ("provider-admins", "admin:traffic.read", r("traffic", OWN, "e1"), {}, True),
    ("provider-admins", "admin:traffic.read-payload", r("traffic", OWN, "e1"), {}, False),
    ("provider-admins", "admin:user.create", r("user", OWN), {}, False),
    ("provider-admins", "admin:virtual-key.update", r("virtual-key", CHILD, "k1"), {}, True),
    ("provider-admins", "admin:virtual-key.revoke", r("virtual-key", OWN, "k1"), {}, False),
    # security-admins: IAM, hooks, kill switch, audit, traffic with payloads
    ("security-admins", "admin:user.create", r("user", OWN), {}, True),
    ("security-admins", "admin:policy.update", r("policy", CHILD, "p1"), {}, True),
    ("security-admins", "admin:api-key.delete", r("api-key", PARENT, "a1"), {}, False),
    ("security-admins", "admin:identity-provider.create", r("identity-provider", OWN), {}, True),
    ("security-admins", "admin:iam.simulate", r("iam", OWN), {}, True),
    ("security-admins", "admin:group.read", r("group", SYSTEM, "g1"), {}, True),
    ("security-admins", "admin:group.update", r("group", SYSTEM, "g1"), {"name": "developers"}, True),
    ("security-admins", "admin:group.update", r("group", SYSTEM, "g1"), {"name": "super-admins"}, False),
    ("security-admins", "admin:group.update", r("group", SYSTEM, "g1"), {"name": "provider-admins"}, False),
    ("security-admins", "admin:group.update", r("group", SYSTEM, "g1"), {}, False),
    ("security-admins", "admin:policy.update", r("policy", SYSTEM, "p1"), {"name": "super-admins"}, False),
    ("security-admins", "admin:hook.create", r("hook", OWN), {}, True),
    ("security-admins", "admin:kill-switch.update", r("kill-switch", OWN, "ks"), {}, False),  # super-admins only
    ("security-admins", "admin:kill-switch.update", r("kill-switch", SYSTEM, "ks"), {}, False),
    ("security-admins", "admin:traffic.read-payload", r("traffic", CHILD, "e1"), {}, True),
    ("security-admins", "admin:traffic.read-payload", r("traffic", TENANT, "e1"), {}, False),
    ("security-admins", "admin:audit-log.verify", r("audit-log", OWN), {}, True),
    ("security-admins", "admin:virtual-key.revoke", r("virtual-key", OWN, "k1"), {"owner": OTHER}, True),
    ("security-admins", "admin:provider.update", r("provider", SYSTEM, "p1"), {}, False),
    ("security-admins", "admin:rule-pack.update", r("rule-pack", SYSTEM, "pii"), {}, False),
    ("security-admins", "admin:enrollment-token.create", r("enrollment-token", OWN), {}, True),
    ("security-admins", "admin:organization.update", r("organization", OWN, "o1"), {}, False),
    # compliance-team: the compliance catalogue, overrides and hooks, traffic with payloads, audit
    ("compliance-team", "admin:rule-pack.update", r("rule-pack", SYSTEM, "pii"), {}, True),
    ("compliance-team", "admin:interception-domain.create", r("interception-domain", SYSTEM), {}, True),
    ("compliance-team", "admin:exemption.delete", r("exemption", SYSTEM, "x1"), {}, True),
    ("compliance-team", "admin:rule-override.create", r("rule-override", OWN), {}, True),
    ("compliance-team", "admin:rule-override.create", r("rule-override", SIBLING), {}, False),
    ("compliance-team", "admin:hook.update", r("hook", CHILD, "h1"), {}, True),
    ("compliance-team", "admin:hook.update", r("hook", SYSTEM, "h1"), {}, False),
    ("compliance-team", "admin:traffic.read-payload", r("traffic", OWN, "e1"), {}, True),
    ("compliance-team", "admin:audit-log.read", r("audit-log", OWN), {}, True),
    ("compliance-team", "admin:audit-log.verify", r("audit-log", CHILD), {}, True),
    ("compliance-team", "admin:user.create", r("user", OWN), {}, False),
    ("compliance-team", "admin:virtual-key.read", r("virtual-key", OWN, "k1"), {}, False),
    ("compliance-team", "admin:kill-switch.update", r("kill-switch", OWN), {}, False),
]


def seeded(name: str) -> AttachedPolicy:
    return AttachedPolicy(None, name, SEEDED_POLICIES[name])


def test_matrix_is_large_and_covers_every_group() -> None:
    assert len(MATRIX) >= 60
    assert {row[0] for row in MATRIX} == set(SEEDED_GROUPS)


@pytest.mark.parametrize(("group", "action", "resource", "tags", "allowed"), MATRIX,
                         ids=[f"{g}-{a}-{res.split(':')[3] or 'system'}-{i}" for i, (g, a, res, _t, _x)
                              in enumerate(MATRIX)])
def test_seeded_group(group: str, action: str, resource: str, tags: dict[str, str], allowed: bool) -> None:
    decision = evaluate([seeded(group)], request(action, resource, tags=tags))
    assert decision.allowed is allowed, decision.reason
    if allowed:
        assert decision.effect == "Allow" and decision.policy_name == group
    else:
        assert decision.effect == "DefaultDeny"
        assert decision.reason == f"no statement allows {action} on {resource}"


@pytest.mark.parametrize("group", [g for g in SEEDED_GROUPS if g != "super-admins"])
@pytest.mark.parametrize("where", [PARENT, SIBLING, LOOKALIKE, TENANT])
def test_no_seeded_group_but_super_admins_reaches_outside_its_subtree(group: str, where: str) -> None:
    for action in all_actions():
        resource = action.split(":")[1].split(".")[0]
        for rid in ("*", "x1"):
            decision = evaluate([seeded(group)], request(action, r(resource, where, rid), tags={"owner": ME,
                                                                                              "name": "viewers"}))
            assert not decision.allowed, (action, where, decision.reason)


def test_membership_in_several_groups_unions_their_grants() -> None:
    both = [seeded("developers"), seeded("viewers")]
    assert evaluate(both, request("admin:traffic.read", r("traffic", OWN, "e1"))).policy_name == "viewers"
    assert evaluate(both, request("admin:virtual-key.create", r("virtual-key", OWN), tags={"owner": ME})).allowed
    assert not evaluate(both, request("admin:virtual-key.update", r("virtual-key", OWN, "k"), tags={"owner": ME})
                        ).allowed


def test_the_subtree_follows_the_caller() -> None:
    # The same seeded document, a caller in a child org: the parent is now out of reach.
    sales = principal(CHILD)
    assert evaluate([seeded("viewers")], request("admin:project.read", r("project", CHILD, "p"), who=sales)).allowed
    assert not evaluate([seeded("viewers")], request("admin:project.read", r("project", OWN, "p"), who=sales)).allowed
    root = principal("globex")
    assert evaluate([seeded("viewers")], request("admin:project.read", r("project", TENANT, "p"), who=root)).allowed


def test_seeded_policies_use_only_catalogued_actions() -> None:
    # No typo'd action that silently grants nothing: each pattern names at least one real action.
    known = all_actions()
    for name, doc in SEEDED_POLICIES.items():
        for st in doc.statements:
            assert st.effect == "Allow", name
            for text in st.actions:
                if text.startswith("my:"):
                    continue
                pattern = compile_action_pattern(text)
                assert any(pattern.matches(a) for a in known), (name, text)
                if pattern.exact is not None:
                    assert pattern.exact in known, (name, text)


def test_every_catalogued_action_is_granted_to_someone_below_super_admins() -> None:
    # Each action is usable by at least one least-privilege group in its own subtree or the system
    # scope, except those reserved to super-admins by design (see the seed module docstring).
    reserved = {f"admin:{r}.{v}" for r in ("organization", "project", "job") for v in ("create", "update", "delete")}
    # Installation-wide switches that turn inspection off for everyone.
    reserved |= {f"admin:{r}.{v}" for r in ("passthrough", "kill-switch") for v in ("create", "update", "delete")}
    groups = [seeded(g) for g in SEEDED_GROUPS if g != "super-admins"]
    for action in all_actions():
        resource = action.split(":")[1].split(".")[0]
        granted = any(
            evaluate([g], request(action, r(resource, where, rid), tags={"owner": ME, "name": "developers"})).allowed
            for g in groups for where in (OWN, SYSTEM) for rid in ("*", "x1"))
        assert granted is (action not in reserved), action
