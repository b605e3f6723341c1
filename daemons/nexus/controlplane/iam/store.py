"""Loading the policies that apply to a principal from PostgreSQL (Trio, through ``PgPool``).

One query per call: a user's policies are those attached to the user directly plus those
attached to any group the user belongs to; an admin API key's are those attached to the key
(keys are not group members). Each comes with its owning org's path (None for system policies),
which ``evaluate`` uses to keep org policies inside their org.

Documents are read as JSON text and parsed through a cache keyed by that text, so a request pays
one round trip and dictionary lookups, not a parse and a compile.

Errors: pool and psycopg errors propagate (the caller answers 503). A stored document that does
not parse raises ``StoredPolicyError`` naming the policy: the request must fail rather than be
evaluated without it, which could drop a Deny.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import orjson

from nexus.controlplane.iam.document import PolicyDocument, parse_document
from nexus.controlplane.iam.errors import PolicyError, StoredPolicyError
from nexus.controlplane.iam.evaluate import AttachedPolicy
from nexus.controlplane.principal import Principal
from nexus.storage.pgpool import PgPool

__all__ = ["SYSTEM_POLICY", "policies_for_api_key", "policies_for_principal", "policies_for_user"]

_COLUMNS = ("SELECT p.id, p.name, p.document::text, o.path "
            "FROM iam_policy p LEFT JOIN organization o ON o.id = p.org_id ")
_ORDER = " ORDER BY o.path NULLS FIRST, p.name, p.id"
_FOR_USER = (
    _COLUMNS
    + "WHERE p.id IN (SELECT a.policy_id FROM iam_attachment a WHERE a.user_id = %(id)s "
    "UNION SELECT a.policy_id FROM iam_group_member m JOIN iam_attachment a ON a.group_id = m.group_id "
    "WHERE m.user_id = %(id)s)"
    + _ORDER
)
_FOR_API_KEY = (
    _COLUMNS + "WHERE p.id IN (SELECT a.policy_id FROM iam_attachment a WHERE a.admin_api_key_id = %(id)s)" + _ORDER
)

# The control plane's own work (jobs, first-boot seeding) runs as a "system" principal, which only
# code inside the control plane mints (no credential authenticates as one).
SYSTEM_POLICY = AttachedPolicy(None, "system", parse_document(
    {"Version": "2025-01-01", "Statement": [{"Sid": "System", "Effect": "Allow", "Action": "*", "Resource": "*"}]}))


@functools.lru_cache(maxsize=2048)
def _parse(text: str) -> PolicyDocument:
    return parse_document(orjson.loads(text))


def _attached(row: tuple[Any, ...]) -> AttachedPolicy:
    policy_id, name, text, org_path = row
    try:
        document = _parse(text)
    except (PolicyError, orjson.JSONDecodeError) as exc:
        raise StoredPolicyError(f'stored policy "{name}" ({policy_id}) is invalid: {exc}') from None
    return AttachedPolicy(policy_id, name, document, org_path)


async def _load(pool: PgPool, query: str, principal_id: uuid.UUID) -> list[AttachedPolicy]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, {"id": principal_id})
        rows = await cur.fetchall()
    return [_attached(row) for row in rows]


async def policies_for_user(pool: PgPool, user_id: uuid.UUID) -> list[AttachedPolicy]:
    """The user's policies: attached directly and through groups (each once), system ones first."""
    return await _load(pool, _FOR_USER, user_id)


async def policies_for_api_key(pool: PgPool, key_id: uuid.UUID) -> list[AttachedPolicy]:
    """The policies attached to an admin API key."""
    return await _load(pool, _FOR_API_KEY, key_id)


async def policies_for_principal(pool: PgPool, principal: Principal) -> list[AttachedPolicy]:
    """The policies of any principal; a ``system`` principal gets ``SYSTEM_POLICY`` without a query."""
    if principal.kind == "user":
        return await policies_for_user(pool, principal.id)
    if principal.kind == "api_key":
        return await policies_for_api_key(pool, principal.id)
    return [SYSTEM_POLICY]
