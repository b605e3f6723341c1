"""End to end: a change made through the admin API reaches a running gateway within a second."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from nexus.crypto import passwords
from nexus.devstack import services
from tests.controlplane.conftest import PASSWORD
from tests.gateway.conftest import Stack, daemon_env, start_daemon, stack, stop, wait_ready

__all__ = ["stack"]


@pytest.fixture(scope="module")
def admin_api(stack: Stack, valkey_url: str) -> Iterator[httpx.Client]:
    """A control plane on the gateway's own database and secrets, and a super-admin signed in to it."""
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    env = daemon_env(stack.db_url, valkey_url, stack.nats_url, stack.secrets,
                     NEXUS_CONTROL_PLANE__LISTEN__PORT=str(port), NEXUS_CONTROL_PLANE__PUBLIC_URL=url)
    log = stack.logs / "control-plane.log"
    proc = start_daemon("control-plane", env, log)
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.test"
    with psycopg.connect(stack.db_url) as conn:
        user_id = conn.execute(
            "INSERT INTO app_user (org_id, email, status, can_access_console, password_hash) "
            "VALUES (%s, %s, 'active', true, %s) RETURNING id", (stack.org_id, email, passwords.hash_password(PASSWORD)),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO iam_group_member (group_id, user_id) SELECT id, %s FROM iam_group "
                     "WHERE org_id IS NULL AND name = 'super-admins'", (user_id,))
    try:
        wait_ready(url, proc, log)
        token = httpx.post(url + "/api/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
            yield client
    finally:
        stop(proc)


def _chat(stack: Stack, key: str) -> int:
    response = httpx.post(stack.v1 + "/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    return response.status_code


def test_key_created_and_revoked_through_the_api(stack: Stack, admin_api: httpx.Client) -> None:
    created = admin_api.post("/api/admin/virtual-keys", json={
        "name": "e2e", "kind": "application", "org_id": stack.org_id, "project_id": stack.project_id})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    assert _chat(stack, key) == 200

    revoked = admin_api.post(f"/api/admin/virtual-keys/{key_id}/revoke", json={"reason": "e2e test"})
    assert revoked.status_code == 200, revoked.text
    deadline = time.monotonic() + 1.0
    status = _chat(stack, key)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        status = _chat(stack, key)
    assert status == 401, "revocation through the admin API did not reach the gateway within 1 s"
