"""Secrets written through the admin API never come back, never reach the log, never reach the audit log.

Each secret is returned at most once, in the response that created it (keys and tokens the
caller must copy); after that no response, no line of the control plane's log and no admin
audit row contains it.
"""

from __future__ import annotations

import uuid

import httpx
import psycopg
from tests.controlplane.conftest import ControlPlane


def _every_readable_page(admin: httpx.Client) -> str:
    pages = []
    for path in ("/api/admin/users?limit=500", "/api/admin/credentials?limit=500", "/api/admin/virtual-keys?limit=500",
                 "/api/admin/api-keys?limit=500", "/api/admin/enrollment-tokens?limit=500",
                 "/api/admin/identity-providers?limit=500", "/api/admin/audit-log?limit=500",
                 "/api/admin/providers?limit=500"):
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text)
        pages.append(response.text)
        for item in response.json()["items"][:50]:
            if "id" in item:
                detail = admin.get(path.split("?")[0] + "/" + str(item["id"]))
                pages.append(detail.text)
    return "\n".join(pages)


def test_secrets_are_write_only_and_never_logged(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    tag = uuid.uuid4().hex[:8]
    secrets: dict[str, str] = {
        "password": f"pw-{tag}-correct horse battery",
        "credential": f"sk-live-{tag}{'Q' * 24}",
        "client_secret": f"idp-secret-{tag}{'Z' * 20}",
    }
    user = admin.post("/api/admin/users", json={
        "org_id": cp.org_id, "email": f"leak-{tag}@example.test", "password": secrets["password"],
        "must_change_password": False})
    assert user.status_code == 201, user.text
    provider = admin.post("/api/admin/providers", json={
        "adapter": "openai", "name": f"leak-{tag}", "base_url": "https://api.example.test/v1"})
    assert provider.status_code == 201, provider.text
    credential = admin.post("/api/admin/credentials", json={
        "provider_id": provider.json()["id"], "name": "default", "secret": secrets["credential"]})
    assert credential.status_code == 201, credential.text
    idp = admin.post("/api/admin/identity-providers", json={
        "org_id": cp.org_id, "name": f"idp-{tag}", "kind": "oidc", "issuer": f"https://idp-{tag}.example.test",
        "client_id": "nexus", "client_secret": secrets["client_secret"]})
    assert idp.status_code == 201, idp.text
    created_once = {
        "virtual_key": admin.post("/api/admin/virtual-keys", json={
            "name": f"leak-{tag}", "kind": "application", "org_id": cp.org_id, "project_id": cp.project_id}),
        "api_key": admin.post("/api/admin/api-keys", json={"org_id": cp.org_id, "name": f"leak-{tag}"}),
        "enrollment_token": admin.post("/api/admin/enrollment-tokens", json={"org_id": cp.org_id,
                                                                            "name": f"leak-{tag}"}),
    }
    for kind, response in created_once.items():
        assert response.status_code == 201, (kind, response.text)
        body = response.json()
        secrets[kind] = next(v for k, v in body.items() if k in ("key", "token") and isinstance(v, str))
    for response in (user, credential, idp):
        for secret in secrets.values():
            assert secret not in response.text
    # The password works (it was stored), and signing in logs nothing of it either.
    assert cp.login(f"leak-{tag}@example.test", secrets["password"])

    readable = _every_readable_page(admin)
    log = cp.log.read_text()
    with psycopg.connect(cp.db_url) as conn:
        audit = "\n".join(str(row) for row in conn.execute("SELECT before, after FROM admin_audit_log"))
    for kind, secret in secrets.items():
        assert secret not in readable, f"{kind} readable through the API"
        assert secret not in log, f"{kind} in the control plane log"
        assert secret not in audit, f"{kind} in the admin audit log"
