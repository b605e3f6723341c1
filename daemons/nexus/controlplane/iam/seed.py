"""The seeded IAM groups and their managed policies, and ``seed_iam`` that keeps them in the database.

Six system groups (``org_id`` NULL, ``managed`` true), each with a managed policy of the same name
attached. Apart from super-admins every policy is least-privilege and scoped to the caller's own
org subtree through ``org/${nexus:PrincipalOrgPath}``: a member of ``acme/emea`` acts on
``acme/emea`` and its descendants, never on ``acme`` itself, a sibling or another tenant.

- **super-admins**: every action on every resource.
- **provider-admins**: the provider catalogue (providers, credentials incl. ``rotate``, models) and,
  in their subtree, routing rules (incl. ``simulate``), quota policies and overrides, passthrough
  and virtual-key limits (``update``); they read global routing rules and quota policies, and
  traffic metadata, usage, analytics, alerts, orgs, projects and virtual keys of their subtree.
  No payloads, no IAM.
- **security-admins**: IAM of their subtree (users, groups, policies, API keys, identity
  providers, ``admin:iam.simulate``); read the managed groups and policies and hand out the
  managed security-admins / developers / viewers ones (see "Conventions"); hooks, the kill switch,
  alerts, devices (things, enrollment tokens), the audit log (read and ``verify``), traffic
  including payloads (``read-payload``), and incident response on virtual keys (read, ``revoke``).
- **compliance-team**: the compliance catalogue (rule packs, interception domains, exemptions)
  and, in their subtree, rule overrides and hooks; traffic including payloads; the audit log
  (read and ``verify``); orgs, projects, analytics, usage and alerts read-only.
- **developers**: read models and providers; create, read, revoke and delete virtual keys *they
  own*; read *their own* usage; read orgs and projects of their subtree (to pick a project).
- **viewers**: ``admin:*.read`` on their subtree and read access to the shared catalogue
  (models, providers, rule packs, interception domains). Not ``traffic.read-payload``: bodies
  hold end users' prompts, which is more than "read-only" should show. Not ``audit-log.verify``:
  a full chain verification is an expensive integrity check that belongs to the people who act
  on its result (security-admins, compliance-team).

Every seeded group also allows the ``my:*`` family on the caller's own user. Reserved to
super-admins: creating, changing and deleting organizations and projects, jobs, and everything
system-wide that no group above names (global kill switch, global hooks and routing rules).

Conventions the admin API follows (the policies rely on them):

- ``/api/my/*`` actions are ``my:<resource>.<verb>`` (``my:virtual-key.create``,
  ``my:virtual-key.read``, ``my:virtual-key.revoke``, ``my:usage.read``, ``my:budget.read``) on the
  caller's own user, ``nrn:nexus:iam:org/<org path>:user/<user id>``; the handler itself limits
  them to the caller's things.
- System-wide resources (empty scope, ``nrn:nexus:gateway::provider/<id>``) are installation-level:
  the provider catalogue, the compliance catalogue, global routing rules, quota policies and
  hooks, and the managed groups and policies.
- Passthrough settings and the kill switch are installation-wide (their tables have no org): they
  switch inspection off for everyone, so only super-admins hold them.
- A user's ``nexus:ResourceTag/privileged`` is ``"true"`` when they belong to super-admins,
  provider-admins or compliance-team (computed by the API, not an attribute anyone sets):
  security-admins manage every other account of their subtree, never those.
- ``nexus:ResourceTag/owner`` is the owning user's id: a virtual key's owner, the user whose
  usage is read. On ``admin:virtual-key.create`` it is the owner the new key *will* have, so a
  developer can only create keys for themselves.
- Adding a user to a group is ``admin:group.update`` on the group *and* ``admin:user.update`` on
  the user; attaching a policy is ``admin:policy.update`` on the policy and ``admin:<user|group|
  api-key>.update`` on the principal. For managed groups and policies the API passes
  ``nexus:ResourceTag/name`` (their name), which is how security-admins may grant
  security-admins, developers and viewers but never super-admins, provider-admins or
  compliance-team (installation-level powers, granted by super-admins only).
- Org policies (``org_id`` set) can only allow within their org's subtree (``evaluate``).

``seed_iam`` runs from ``nexus db migrate`` (sync psycopg). It is idempotent: groups and policies
are upserted by (``org_id`` NULL, ``name``), a managed policy whose document or description changed
is rewritten (an unchanged one is left alone, ``updated_at`` included), and each policy is attached
to its group. Policies attached to the seeded groups by admins are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import orjson
import psycopg

from nexus.controlplane.iam.document import PolicyDocument, document_to_json, parse_document

__all__ = ["SEEDED_GROUPS", "SEEDED_POLICIES", "SeededGroup", "seed_iam"]

ORG = "${nexus:PrincipalOrgPath}"
SELF = f"nrn:nexus:iam:org/{ORG}:user/${{nexus:PrincipalId}}"
OWNER = {"StringEquals": {"nexus:ResourceTag/owner": "${nexus:PrincipalId}"}}


def _own(service: str, rtype: str | None = None) -> str:
    """The caller's org subtree in ``service`` (one resource type, or all)."""
    return f"nrn:nexus:{service}:org/{ORG}:" + (f"{rtype}/*" if rtype else "*")


def _system(service: str, rtype: str) -> str:
    return f"nrn:nexus:{service}::{rtype}/*"


def _allow(sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


_OWN_ACCOUNT = _allow("OwnAccount", ["my:*"], [SELF])


@attrs.frozen
class SeededGroup:
    name: str
    description: str
    policy: dict[str, Any]


_GROUPS: tuple[SeededGroup, ...] = (
    SeededGroup("super-admins", "Everything, everywhere: every action on every resource of every org.", {
        "Version": "2025-01-01",
        "Statement": [_allow("Everything", ["*"], ["*"])],
    }),
    SeededGroup(
        "provider-admins",
        "Provider catalogue (providers, credentials, models); routing, quotas and passthrough in their org subtree.",
        {"Version": "2025-01-01", "Statement": [
            _allow("ProviderCatalogue",
                   ["admin:provider.*", "admin:credential.*", "admin:model.*"],
                   [_system("gateway", "provider"), _system("gateway", "credential"), _system("gateway", "model"),
                    _own("gateway", "provider"), _own("gateway", "credential"), _own("gateway", "model")]),
            _allow("RoutingAndQuotas",
                   ["admin:routing-rule.*", "admin:quota-policy.*", "admin:quota-override.*"],
                   [_own("gateway")]),
            _allow("KeyLimits", ["admin:virtual-key.update"], [_own("gateway", "virtual-key")]),
            _allow("ReadGlobalRouting",
                   ["admin:routing-rule.read", "admin:routing-rule.simulate", "admin:quota-policy.read"],
                   [_system("gateway", "routing-rule"), _system("gateway", "quota-policy")]),
            _allow("Observe",
                   ["admin:traffic.read", "admin:usage.read", "admin:analytics.read", "admin:alert.read",
                    "admin:organization.read", "admin:project.read", "admin:virtual-key.read"],
                   [_own("gateway"), _own("platform")]),
            _OWN_ACCOUNT,
        ]},
    ),
    SeededGroup(
        "security-admins",
        "IAM, hooks, kill switch, audit log and traffic with payloads in their org subtree.",
        {"Version": "2025-01-01", "Statement": [
            _allow("ManageIam",
                   ["admin:group.*", "admin:policy.*", "admin:api-key.*", "admin:identity-provider.*",
                    "admin:iam.simulate"],
                   [_own("iam")]),
            # Not the accounts of super-admins, provider-admins or compliance-team members: resetting
            # their password or second factor would hand out powers this group cannot grant.
            _allow("ManageUsers", ["admin:user.*"], [_own("iam", "user")],
                   {"StringNotEquals": {"nexus:ResourceTag/privileged": "true"}}),
            _allow("ReadUsers", ["admin:user.read"], [_own("iam", "user")]),
            _allow("ReadManagedIam", ["admin:group.read", "admin:policy.read"],
                   [_system("iam", "group"), _system("iam", "policy")]),
            _allow("GrantManagedGroups", ["admin:group.update", "admin:policy.update"],
                   [_system("iam", "group"), _system("iam", "policy")],
                   {"StringEquals": {"nexus:ResourceTag/name": ["security-admins", "developers", "viewers"]}}),
            _allow("Hooks", ["admin:hook.*"], [_own("compliance", "hook")]),
            _allow("ReadCompliance",
                   ["admin:hook.read", "admin:rule-pack.read", "admin:interception-domain.read",
                    "admin:exemption.read", "admin:rule-override.read"],
                   [_system("compliance", "hook"), _system("compliance", "rule-pack"),
                    _system("compliance", "interception-domain"), _system("compliance", "exemption"),
                    _own("compliance")]),
            _allow("AuditLog", ["admin:audit-log.read", "admin:audit-log.verify"],
                   [_own("platform", "audit-log")]),
            _allow("Alerts", ["admin:alert.*"], [_own("platform", "alert")]),
            _allow("Devices", ["admin:thing.*", "admin:enrollment-token.*"],
                   [_own("platform", "thing"), _own("platform", "enrollment-token")]),
            _allow("Traffic", ["admin:traffic.read", "admin:traffic.read-payload"], [_own("gateway", "traffic")]),
            _allow("IncidentResponse", ["admin:virtual-key.read", "admin:virtual-key.revoke"],
                   [_own("gateway", "virtual-key")]),
            _allow("Observe",
                   ["admin:organization.read", "admin:project.read", "admin:usage.read", "admin:analytics.read"],
                   [_own("platform"), _own("gateway")]),
            _OWN_ACCOUNT,
        ]},
    ),
    SeededGroup(
        "compliance-team",
        "Rule packs, overrides, hooks, exemptions, interception domains; traffic with payloads; audit log.",
        {"Version": "2025-01-01", "Statement": [
            _allow("ComplianceCatalogue",
                   ["admin:rule-pack.*", "admin:interception-domain.*", "admin:exemption.*"],
                   [_system("compliance", "rule-pack"), _system("compliance", "interception-domain"),
                    _system("compliance", "exemption"), _own("compliance")]),
            _allow("OrgCompliance", ["admin:rule-override.*", "admin:hook.*"], [_own("compliance")]),
            _allow("ReadGlobalHooks", ["admin:hook.read"], [_system("compliance", "hook")]),
            _allow("Traffic", ["admin:traffic.read", "admin:traffic.read-payload"], [_own("gateway", "traffic")]),
            _allow("AuditLog", ["admin:audit-log.read", "admin:audit-log.verify"],
                   [_own("platform", "audit-log")]),
            _allow("Observe",
                   ["admin:organization.read", "admin:project.read", "admin:analytics.read", "admin:alert.read",
                    "admin:usage.read"],
                   [_own("platform"), _own("gateway")]),
            _OWN_ACCOUNT,
        ]},
    ),
    SeededGroup(
        "developers",
        "Read models and providers; create and manage their own virtual keys; read their own usage.",
        {"Version": "2025-01-01", "Statement": [
            _allow("ReadModels", ["admin:model.read", "admin:provider.read"],
                   [_system("gateway", "model"), _system("gateway", "provider"),
                    _own("gateway", "model"), _own("gateway", "provider")]),
            _allow("CreateOwnKeys", ["admin:virtual-key.create"], [_own("gateway", "virtual-key")], OWNER),
            _allow("ManageOwnKeys",
                   ["admin:virtual-key.read", "admin:virtual-key.revoke", "admin:virtual-key.delete"],
                   [_own("gateway", "virtual-key")], OWNER),
            _allow("ReadOwnUsage", ["admin:usage.read"], [_own("gateway", "usage")], OWNER),
            _allow("ReadOrgs", ["admin:organization.read", "admin:project.read"], [_own("platform")]),
            _OWN_ACCOUNT,
        ]},
    ),
    SeededGroup(
        "viewers",
        "Read-only view of their org subtree (no traffic payloads, no audit chain verification).",
        {"Version": "2025-01-01", "Statement": [
            _allow("ReadOwnOrgs", ["admin:*.read"], [f"nrn:nexus:*:org/{ORG}:*"]),
            _allow("ReadCatalogue",
                   ["admin:model.read", "admin:provider.read", "admin:rule-pack.read",
                    "admin:interception-domain.read"],
                   [_system("gateway", "model"), _system("gateway", "provider"),
                    _system("compliance", "rule-pack"), _system("compliance", "interception-domain")]),
            _OWN_ACCOUNT,
        ]},
    ),
)

SEEDED_GROUPS: Mapping[str, SeededGroup] = MappingProxyType({g.name: g for g in _GROUPS})
# Parsed at import: a mistake in a seeded document fails every test and every start, loudly.
SEEDED_POLICIES: Mapping[str, PolicyDocument] = MappingProxyType(
    {g.name: parse_document(g.policy) for g in _GROUPS})


def seed_iam(conn: psycopg.Connection[Any]) -> None:
    """Upsert the managed groups and policies and attach each policy to its group, in one transaction."""
    with conn.transaction():
        for group in _GROUPS:
            document = orjson.dumps(document_to_json(SEEDED_POLICIES[group.name])).decode()
            conn.execute(
                "INSERT INTO iam_policy (org_id, name, description, document, managed) "
                "VALUES (NULL, %(name)s, %(description)s, %(document)s::jsonb, true) "
                "ON CONFLICT ON CONSTRAINT iam_policy_name_key DO UPDATE "
                "SET description = EXCLUDED.description, document = EXCLUDED.document, managed = true "
                "WHERE (iam_policy.description, iam_policy.document, iam_policy.managed) "
                "IS DISTINCT FROM (EXCLUDED.description, EXCLUDED.document, true)",
                {"name": group.name, "description": group.description, "document": document})
            conn.execute(
                "INSERT INTO iam_group (org_id, name, description, managed) "
                "VALUES (NULL, %(name)s, %(description)s, true) "
                "ON CONFLICT ON CONSTRAINT iam_group_name_key DO UPDATE "
                "SET description = EXCLUDED.description, managed = true "
                "WHERE (iam_group.description, iam_group.managed) IS DISTINCT FROM (EXCLUDED.description, true)",
                {"name": group.name, "description": group.description})
            conn.execute(
                "INSERT INTO iam_attachment (policy_id, group_id) "
                "SELECT p.id, g.id FROM iam_policy p, iam_group g "
                "WHERE p.org_id IS NULL AND p.name = %(name)s AND g.org_id IS NULL AND g.name = %(name)s "
                "ON CONFLICT (group_id, policy_id) DO NOTHING",
                {"name": group.name})
