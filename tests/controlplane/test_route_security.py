"""Every admin route, generated from the route table: no token, bad tokens and a viewer's write are refused.

New routes are covered the moment they are added to ``resources.all_operations()``.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from tests.controlplane.conftest import ControlPlane

from nexus.controlplane.api.operation import Operation
from nexus.controlplane.auth import keys
from nexus.controlplane.auth.tokens import issue_access_token
from nexus.controlplane.resources import all_operations

OPERATIONS = all_operations()
ADMIN_WRITES = [op for op in OPERATIONS if op.writes and op.action.startswith("admin:")]


def _url(op: Operation) -> str:
    return re.sub(r"{[^}]+}", lambda _m: str(uuid.uuid4()), op.path)


def _send(cp: ControlPlane, op: Operation, headers: dict[str, str]) -> httpx.Response:
    body = {} if op.body is not None else None
    return httpx.request(op.method, cp.url + _url(op), headers=headers, json=body, timeout=30)


def _token(cp: ControlPlane, secrets: Path, *, now: float | None = None, ttl: int = 3600) -> str:
    ring = keys.KeyRing(secrets)
    with psycopg.connect(cp.db_url) as conn:
        user_id, org_id = conn.execute(
            "SELECT id, org_id FROM app_user WHERE email = 'admin@nexus.local'").fetchone()  # type: ignore[misc]
    return issue_access_token(
        ring, issuer=cp.url, audience="nexus-control-plane", subject=user_id, org_id=org_id, org_path="demo",
        session_id=str(uuid.uuid4()), amr=["pwd"], scope=["admin"], client_id="nexus-console", ttl=ttl, now=now,
    ).token


@pytest.fixture(scope="module")
def bad_tokens(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    foreign = tmp_path_factory.mktemp("foreign-keys")
    keys.ensure(foreign)
    return {
        "expired": _token(cp, cp.secrets, now=time.time() - 7200, ttl=3600),
        "foreign-signed": _token(cp, foreign),
        "garbage": "not.a.jwt",
        "unknown-api-key": "nxa_" + "A" * 40,
    }


def test_route_table_is_not_empty() -> None:
    assert len(OPERATIONS) > 20
    assert len({(op.method, op.path) for op in OPERATIONS}) == len(OPERATIONS), "duplicate routes"


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_refuses_missing_and_bad_tokens(cp: ControlPlane, bad_tokens: dict[str, str], op: Operation) -> None:
    for label, headers in [("none", {}), *[(k, {"authorization": f"Bearer {v}"}) for k, v in bad_tokens.items()]]:
        response = _send(cp, op, headers)
        assert response.status_code == 401, f"{label}: {response.status_code} {response.text[:200]}"
        assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("op", ADMIN_WRITES, ids=lambda op: f"{op.method} {op.path}")
def test_viewer_cannot_write(cp: ControlPlane, op: Operation) -> None:
    response = _send(cp, op, {"authorization": f"Bearer {cp.token('viewers')}"})
    assert response.status_code == 403, f"{response.status_code} {response.text[:300]}"
    assert response.json()["error"]["code"] == "forbidden"


def test_valid_token_accepted(cp: ControlPlane) -> None:
    response = httpx.get(cp.url + "/api/admin/orgs", headers={"authorization": f"Bearer {_token(cp, cp.secrets)}"})
    assert response.status_code == 200, response.text
