"""Identity admin API against a real control plane: users, groups, policies, API keys, IdPs, simulation."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from tests.controlplane.conftest import ControlPlane

from nexus.controlplane.auth.federation import _secret_aad
from nexus.crypto import passwords, secretfiles, vkeys
from nexus.crypto.vault import Sealed

NEW_PASSWORD = "a brand new passphrase 7"


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _last_audit(cp: ControlPlane, action: str) -> dict[str, Any]:
    with psycopg.connect(cp.db_url) as conn:
        row = conn.execute(
            "SELECT action, resource_nrn, outcome, before, after FROM admin_audit_log WHERE action = %s "
            "ORDER BY seq DESC LIMIT 1", (action,)).fetchone()
    assert row is not None, f"no audit row for {action}"
    return {"action": row[0], "resource_nrn": row[1], "outcome": row[2], "before": row[3], "after": row[4]}


def _db(cp: ControlPlane, query: str, args: Any = ()) -> Any:
    with psycopg.connect(cp.db_url) as conn:
        return conn.execute(query, args).fetchone()


def _group_id(cp: ControlPlane, name: str) -> str:
    return str(_db(cp, "SELECT id FROM iam_group WHERE org_id IS NULL AND name = %s", (name,))[0])


def _policy_id(cp: ControlPlane, name: str) -> str:
    return str(_db(cp, "SELECT id FROM iam_policy WHERE org_id IS NULL AND name = %s", (name,))[0])


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code} {response.text[:400]}"
    error: dict[str, Any] = response.json()["error"]
    return error


def _create_user(admin: httpx.Client, cp: ControlPlane, **extra: Any) -> dict[str, Any]:
    body = {"email": f"{_uniq('user')}@example.test", "org_id": cp.org_id, **extra}
    response = admin.post("/api/admin/users", json=body)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


def _client(cp: ControlPlane, token: str) -> httpx.Client:
    return httpx.Client(base_url=cp.url, headers={"authorization": f"Bearer {token}"}, timeout=30)


def _org_policy(admin: httpx.Client, cp: ControlPlane, statements: list[dict[str, Any]]) -> dict[str, Any]:
    response = admin.post("/api/admin/policies", json={
        "org_id": cp.org_id, "name": _uniq("policy"),
        "document": {"Version": "2025-01-01", "Statement": statements}})
    assert response.status_code == 201, response.text
    policy: dict[str, Any] = response.json()
    return policy


# -- users --------------------------------------------------------------------------------------

def test_user_round_trip_normalises_email_and_never_returns_secrets(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    local = _uniq("Alice.Smith")
    response = admin.post("/api/admin/users", json={
        "email": f"  {local}@Example.TEST ", "org_id": cp.org_id, "display_name": "Alice",
        "password": "initial password 123", "attributes": {"team": "ml"}, "can_access_console": True})
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == f"{local.lower()}@example.test"
    assert (user["status"], user["has_password"], user["must_change_password"]) == ("active", True, True)
    assert user["attributes"] == {"team": "ml"}
    assert "initial password" not in response.text and "$scrypt" not in response.text and "password_hash" not in user
    stored = _db(cp, "SELECT password_hash FROM app_user WHERE id = %s", (user["id"],))[0]
    assert passwords.verify_password("initial password 123", stored)
    audit = _last_audit(cp, "admin:user.create")
    assert audit["outcome"] == "success" and "initial password" not in orjson.dumps(audit).decode()
    assert audit["resource_nrn"] == f"nrn:nexus:iam:org/demo:user/{user['id']}"

    listed = admin.get("/api/admin/users", params={"email": f"{local.upper()}@EXAMPLE.test"}).json()["items"]
    assert [u["id"] for u in listed] == [user["id"]]
    assert admin.get(f"/api/admin/users/{user['id']}").json() == user

    patched = admin.patch(f"/api/admin/users/{user['id']}", json={"display_name": "Alice S.",
                                                                   "attributes": {"team": "infra"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["display_name"] == "Alice S." and patched.json()["attributes"] == {"team": "infra"}
    assert _last_audit(cp, "admin:user.update")["before"]["attributes"] == {"team": "ml"}

    assert admin.delete(f"/api/admin/users/{user['id']}").status_code == 204
    assert _error(admin.get(f"/api/admin/users/{user['id']}"), 404)["code"] == "not_found"


def test_invited_user_without_password(cp: ControlPlane) -> None:
    user = _create_user(cp.client("security-admins"), cp)
    assert (user["status"], user["has_password"], user["must_change_password"]) == ("invited", False, False)


@pytest.mark.parametrize(("body", "field"), [
    ({"password": "short"}, "password"),
    ({"email": "no-at-sign"}, "email"),
    ({"attributes": {"bad key": "x"}}, "attributes"),
    ({"attributes": {"team": 5}}, "attributes"),
    ({"status": "gone"}, "status"),
    ({"org_id": None}, "org_id"),
])
def test_user_validation_names_the_field(cp: ControlPlane, body: dict[str, Any], field: str) -> None:
    request = {"email": f"{_uniq('v')}@example.test", "org_id": cp.org_id, **body}
    error = _error(cp.client("security-admins").post("/api/admin/users", json=request), 422)
    assert error["message"].startswith(field), error


def test_disabling_a_user_revokes_their_sessions(cp: ControlPlane) -> None:
    email, user_id = cp.add_user("viewers")
    victim = _client(cp, cp.login(email))
    assert victim.get("/api/admin/orgs").status_code == 200
    response = cp.client("security-admins").patch(f"/api/admin/users/{user_id}", json={"status": "disabled"})
    assert response.status_code == 200 and response.json()["status"] == "disabled"
    rows = _db(cp, "SELECT count(*), count(*) FILTER (WHERE revoked_reason = 'user_disabled') FROM refresh_token "
                   "WHERE user_id = %s", (user_id,))
    assert rows[0] >= 1 and rows[0] == rows[1]
    deadline = time.monotonic() + 20
    while victim.get("/api/admin/orgs").status_code != 401:
        assert time.monotonic() < deadline, "a disabled user's token kept working"
        time.sleep(0.5)


def test_cannot_disable_or_delete_yourself(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    me = cp.user_id("security-admins")
    assert _error(admin.patch(f"/api/admin/users/{me}", json={"status": "disabled"}), 409)["code"] == "conflict"
    assert _error(admin.delete(f"/api/admin/users/{me}"), 409)["code"] == "conflict"


def test_admin_password_reset_unlock_and_totp_reset(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    email, user_id = cp.add_user("viewers")
    cp.login(email)
    assert _error(admin.post(f"/api/admin/users/{user_id}/password", json={"password": "tiny"}), 422)[
        "details"]["field"] == "password"
    response = admin.post(f"/api/admin/users/{user_id}/password", json={"password": NEW_PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json()["must_change_password"] is True and NEW_PASSWORD not in response.text
    assert passwords.verify_password(NEW_PASSWORD, _db(cp, "SELECT password_hash FROM app_user WHERE id = %s",
                                                      (user_id,))[0])
    assert _db(cp, "SELECT count(*) FROM refresh_token WHERE user_id = %s AND revoked_at IS NULL", (user_id,))[0] == 0
    assert NEW_PASSWORD not in orjson.dumps(_last_audit(cp, "admin:user.update")).decode()
    login = httpx.post(cp.url + "/api/auth/login", json={"email": email, "password": NEW_PASSWORD}, timeout=30)
    assert login.status_code == 403 and "change" in login.text

    with psycopg.connect(cp.db_url) as conn:
        conn.execute("UPDATE app_user SET failed_login_count = 7, locked_until = now() + interval '1 hour', "
                     "totp_ciphertext = '\\x01', totp_nonce = '\\x000102030405060708090a0b', totp_key_id = 'k1', "
                     "totp_enabled_at = now() WHERE id = %s", (user_id,))
    before = admin.get(f"/api/admin/users/{user_id}").json()
    assert before["locked_until"] is not None and before["mfa_enabled"] is True and "totp" not in str(before.keys())
    unlocked = admin.post(f"/api/admin/users/{user_id}/unlock").json()
    assert (unlocked["locked_until"], unlocked["failed_login_count"]) == (None, 0)
    cleared = admin.delete(f"/api/admin/users/{user_id}/totp")
    assert cleared.status_code == 200 and cleared.json()["mfa_enabled"] is False
    assert _db(cp, "SELECT totp_ciphertext, totp_nonce, totp_key_id FROM app_user WHERE id = %s",
               (user_id,)) == (None, None, None)


def test_security_admin_cannot_take_over_privileged_accounts(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    _, super_id = cp.add_user("super-admins")
    _, dev_id = cp.add_user("developers")
    for user_id, allowed in ((super_id, False), (dev_id, True)):
        reset = admin.post(f"/api/admin/users/{user_id}/password", json={"password": NEW_PASSWORD})
        renamed = admin.patch(f"/api/admin/users/{user_id}", json={"display_name": "taken over"})
        assert (reset.status_code, renamed.status_code) == ((200, 200) if allowed else (403, 403)), reset.text
        # A privileged user cannot be made unprivileged by an attribute either: the tag is computed.
    planted = admin.patch(f"/api/admin/users/{super_id}", json={"attributes": {"privileged": "false"}})
    assert planted.status_code == 403
    assert admin.get(f"/api/admin/users/{super_id}").status_code == 200
    assert cp.client("super-admins").post(f"/api/admin/users/{super_id}/unlock").status_code == 200


# -- groups -------------------------------------------------------------------------------------

def test_group_round_trip_and_managed_groups_are_read_only(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    name = _uniq("sre")
    created = admin.post("/api/admin/groups", json={"org_id": cp.org_id, "name": name, "description": "on call"})
    assert created.status_code == 201, created.text
    group = created.json()
    assert (group["name"], group["managed"], group["org_id"]) == (name, False, cp.org_id)
    renamed = admin.patch(f"/api/admin/groups/{group['id']}", json={"name": name + "-x"})
    assert renamed.status_code == 200 and renamed.json()["name"] == name + "-x"
    listed = [g["name"] for g in admin.get("/api/admin/groups", params={"limit": 500}).json()["items"]]
    assert name + "-x" in listed and "super-admins" in listed
    assert admin.post("/api/admin/groups", json={"org_id": cp.org_id, "name": name + "-x"}).status_code == 409
    assert admin.delete(f"/api/admin/groups/{group['id']}").status_code == 204

    developers = _group_id(cp, "developers")
    for response in (admin.patch(f"/api/admin/groups/{developers}", json={"description": "mine now"}),
                     admin.delete(f"/api/admin/groups/{developers}")):
        assert _error(response, 409)["code"] == "managed_resource"


def test_security_admin_grants_developers_but_not_super_admins(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    _, user_id = cp.add_user(None)
    developers, supers = _group_id(cp, "developers"), _group_id(cp, "super-admins")

    added = security.put(f"/api/admin/groups/{developers}/members/{user_id}")
    assert added.status_code == 200, added.text
    assert (added.json()["user_id"], added.json()["source"]) == (user_id, "manual")
    members = security.get(f"/api/admin/groups/{developers}/members", params={"limit": 500}).json()["items"]
    assert user_id in [m["user_id"] for m in members]
    assert _last_audit(cp, "admin:group.update")["after"]["user_id"] == user_id

    refused = _error(security.put(f"/api/admin/groups/{supers}/members/{user_id}"), 403)
    assert refused["details"]["action"] == "admin:group.update"
    assert _last_audit(cp, "admin:group.update")["outcome"] == "denied"
    assert _db(cp, "SELECT count(*) FROM iam_group_member WHERE group_id = %s AND user_id = %s",
               (supers, user_id))[0] == 0

    assert security.delete(f"/api/admin/groups/{developers}/members/{user_id}").status_code == 204
    assert security.delete(f"/api/admin/groups/{developers}/members/{user_id}").status_code == 404


def test_adding_a_member_also_needs_user_update(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    policy = _org_policy(admin, cp, [{"Effect": "Allow", "Action": ["admin:group.*"],
                                      "Resource": ["nrn:nexus:iam:org/demo:group/*"]}])
    email, actor_id = cp.add_user(None)
    assert admin.put(f"/api/admin/policies/{policy['id']}/attachments/user/{actor_id}").status_code == 200
    actor = _client(cp, cp.login(email))
    group = actor.post("/api/admin/groups", json={"org_id": cp.org_id, "name": _uniq("team")})
    assert group.status_code == 201, group.text
    _, member_id = cp.add_user(None)
    error = _error(actor.put(f"/api/admin/groups/{group.json()['id']}/members/{member_id}"), 403)
    assert error["details"]["action"] == "admin:user.update"
    assert admin.put(f"/api/admin/groups/{group.json()['id']}/members/{member_id}").status_code == 200


def test_org_group_members_come_from_its_org(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    org = admin.post("/api/admin/orgs", json={"slug": _uniq("other"), "name": "Other"}).json()
    outsider = _create_user(admin, cp, org_id=org["id"])
    group = admin.post("/api/admin/groups", json={"org_id": cp.org_id, "name": _uniq("team")}).json()
    error = _error(admin.put(f"/api/admin/groups/{group['id']}/members/{outsider['id']}"), 422)
    assert error["details"]["field"] == "user_id"


# -- policies and attachments -------------------------------------------------------------------

def test_policy_document_validation_names_the_path(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    bad = {"Version": "2025-01-01", "Statement": [{"Effect": "Maybe", "Action": "admin:user.read", "Resource": "*"}]}
    error = _error(admin.post("/api/admin/policies", json={"org_id": cp.org_id, "name": _uniq("p"), "document": bad}),
                   422)
    assert error["message"].startswith("document.Statement[0].Effect: "), error
    bad_action = {"Version": "2025-01-01", "Statement": [{"Effect": "Allow", "Action": ["admin:x"],
                                                           "Resource": "*"}]}
    error = _error(admin.post("/api/admin/policies", json={"org_id": cp.org_id, "name": _uniq("p"),
                                                           "document": bad_action}), 422)
    assert error["message"].startswith("document.Statement[0].Action[0]: "), error


def test_policy_round_trip_canonical_and_managed_read_only(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    policy = _org_policy(admin, cp, [{"Sid": "Read", "Effect": "Allow", "Action": "admin:user.read",
                                      "Resource": "nrn:nexus:iam:org/demo:user/*"}])
    assert policy["document"]["Statement"][0]["Action"] == ["admin:user.read"]
    assert policy["managed"] is False
    updated = admin.patch(f"/api/admin/policies/{policy['id']}", json={"document": {
        "Version": "2025-01-01", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}})
    assert updated.status_code == 200 and updated.json()["document"]["Statement"][0]["Effect"] == "Deny"
    assert admin.get(f"/api/admin/policies/{policy['id']}").json() == updated.json()
    assert admin.delete(f"/api/admin/policies/{policy['id']}").status_code == 204

    developers = _policy_id(cp, "developers")
    assert admin.get(f"/api/admin/policies/{developers}").json()["managed"] is True
    error = _error(admin.patch(f"/api/admin/policies/{developers}", json={"description": "x"}), 409)
    assert error["code"] == "managed_resource"
    # Security-admins may not delete any system policy; not even a super-admin may delete a managed one.
    assert _error(admin.delete(f"/api/admin/policies/{developers}"), 403)["code"] == "forbidden"
    supers = cp.client("super-admins")
    assert _error(supers.delete(f"/api/admin/policies/{developers}"), 409)["code"] == "managed_resource"


def test_attaching_a_policy_changes_what_the_user_may_do(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    policy = _org_policy(admin, cp, [{"Effect": "Allow", "Action": "admin:user.read",
                                      "Resource": "nrn:nexus:iam:org/demo:user/*"}])
    email, user_id = cp.add_user(None)
    user = _client(cp, cp.login(email))
    assert user.get("/api/admin/users").status_code == 403
    attach = f"/api/admin/policies/{policy['id']}/attachments/user/{user_id}"
    attached = admin.put(attach)
    assert attached.status_code == 200, attached.text
    assert (attached.json()["principal_type"], attached.json()["label"]) == ("user", email)
    assert user.get("/api/admin/users").status_code == 200
    listed = admin.get(f"/api/admin/policies/{policy['id']}/attachments").json()["items"]
    assert [(a["principal_type"], a["principal_id"]) for a in listed] == [("user", user_id)]
    assert admin.delete(attach).status_code == 204
    assert user.get("/api/admin/users").status_code == 403
    assert admin.delete(attach).status_code == 404
    assert admin.put(f"/api/admin/policies/{policy['id']}/attachments/robot/{user_id}").status_code == 404


def test_attachment_rules_for_managed_policies_and_system_groups(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    _, user_id = cp.add_user(None)
    refused = security.put(f"/api/admin/policies/{_policy_id(cp, 'super-admins')}/attachments/user/{user_id}")
    assert _error(refused, 403)["details"]["action"] == "admin:policy.update"
    allowed = security.put(f"/api/admin/policies/{_policy_id(cp, 'viewers')}/attachments/user/{user_id}")
    assert allowed.status_code == 200, allowed.text
    # An org policy on a system group would reach every tenant's members.
    policy = _org_policy(security, cp, [{"Effect": "Deny", "Action": "*", "Resource": "*"}])
    error = _error(security.put(
        f"/api/admin/policies/{policy['id']}/attachments/group/{_group_id(cp, 'developers')}"), 422)
    assert error["details"]["field"] == "principal_id"


# -- admin API keys -----------------------------------------------------------------------------

def test_api_key_is_shown_once_works_and_revokes(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    policy = _org_policy(admin, cp, [{"Effect": "Allow", "Action": "admin:organization.read",
                                      "Resource": "nrn:nexus:platform:org/demo:*"}])
    created = admin.post("/api/admin/api-keys", json={"org_id": cp.org_id, "name": "ci bot",
                                                      "policy_ids": [policy["id"]]})
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("nxa_") and body["key_prefix"] == key[:12] and body["policy_ids"] == [policy["id"]]
    stored = _db(cp, "SELECT key_hash FROM admin_api_key WHERE id = %s", (body["id"],))[0]
    assert bytes(stored) == vkeys.hash_key(secretfiles.key_hmac_secret(cp.secrets), key)
    shown = admin.get(f"/api/admin/api-keys/{body['id']}").json()
    assert "key" not in shown and key not in admin.get("/api/admin/api-keys").text
    audit = _last_audit(cp, "admin:api-key.create")
    assert key not in orjson.dumps(audit).decode() and audit["after"]["key_prefix"] == key[:12]

    robot = _client(cp, key)
    assert robot.get(f"/api/admin/orgs/{cp.org_id}").status_code == 200
    assert robot.get("/api/admin/users").status_code == 403
    revoked = admin.post(f"/api/admin/api-keys/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert _error(robot.get(f"/api/admin/orgs/{cp.org_id}"), 401)["code"] == "api_key_revoked"
    assert admin.delete(f"/api/admin/api-keys/{body['id']}").status_code == 204


def test_api_key_create_checks(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    error = _error(security.post("/api/admin/api-keys", json={"org_id": cp.org_id, "name": "k", "expires_at": past}),
                   422)
    assert error["details"]["field"] == "expires_at"
    escalate = security.post("/api/admin/api-keys", json={"org_id": cp.org_id, "name": "k",
                                                          "policy_ids": [_policy_id(cp, "super-admins")]})
    assert _error(escalate, 403)["details"]["action"] == "admin:policy.update"
    unknown = security.post("/api/admin/api-keys", json={"org_id": cp.org_id, "name": "k",
                                                         "policy_ids": [str(uuid.uuid4())]})
    assert _error(unknown, 422)["details"]["field"] == "policy_ids"


# -- identity providers -------------------------------------------------------------------------

def test_identity_provider_secret_is_write_only_and_sealed(cp: ControlPlane) -> None:
    admin = cp.client("security-admins")
    created = admin.post("/api/admin/identity-providers", json={
        "org_id": cp.org_id, "name": _uniq("okta"), "issuer": f"https://{_uniq('idp')}.example.test",
        "client_id": "nexus", "client_secret": "s3cret-value-xyz", "jit_enabled": True,
        "group_mappings": [{"claim": "groups", "value": "eng", "group_id": _group_id(cp, "developers")}]})
    assert created.status_code == 201, created.text
    idp = created.json()
    assert idp["has_client_secret"] is True and "s3cret" not in created.text
    assert idp["group_mappings"][0]["value"] == "eng"
    row = _db(cp, "SELECT client_secret_key_id, client_secret_nonce, client_secret_ciphertext FROM identity_provider "
                  "WHERE id = %s", (idp["id"],))
    vault = secretfiles.vault(cp.secrets)
    opened = vault.open(Sealed(row[0], bytes(row[1]), bytes(row[2])), _secret_aad(uuid.UUID(idp["id"])))
    assert opened == b"s3cret-value-xyz"
    assert "s3cret" not in orjson.dumps(_last_audit(cp, "admin:identity-provider.create")).decode()

    cleared = admin.patch(f"/api/admin/identity-providers/{idp['id']}", json={"client_secret": None})
    assert cleared.status_code == 200 and cleared.json()["has_client_secret"] is False
    assert admin.delete(f"/api/admin/identity-providers/{idp['id']}").status_code == 204


def test_identity_provider_checks(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    base = {"org_id": cp.org_id, "name": _uniq("idp"), "client_id": "c"}
    error = _error(security.post("/api/admin/identity-providers", json={**base, "issuer": "http://idp.test"}), 422)
    assert error["message"].startswith("issuer"), error
    error = _error(security.post("/api/admin/identity-providers", json={**base, "issuer": "https://idp.test",
                                                                        "scopes": ["email"]}), 422)
    assert error["details"]["field"] == "scopes"
    # JIT into super-admins would be a way around the membership rules.
    escalate = security.post("/api/admin/identity-providers", json={
        **base, "issuer": "https://idp.test", "group_mappings": [
            {"claim": "groups", "value": "x", "group_id": _group_id(cp, "super-admins")}]})
    assert _error(escalate, 403)["details"]["action"] == "admin:group.update"


# -- IAM simulation -----------------------------------------------------------------------------

def _simulate(cp: ControlPlane, principal_id: str, action: str, resource: str, **extra: Any) -> dict[str, Any]:
    response = cp.client("security-admins").post("/api/admin/iam/simulate", json={
        "principal": {"type": "user", "id": principal_id}, "action": action, "resource": resource, **extra})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_simulation_matches_what_the_router_does(cp: ControlPlane) -> None:
    developer = cp.client("developers")
    developer_id = cp.user_id("developers")

    denied = _simulate(cp, developer_id, "admin:user.read", "nrn:nexus:iam:org/demo:user/*")
    assert denied["decision"]["allowed"] is False and denied["decision"]["effect"] == "DefaultDeny"
    assert denied["principal_nrn"] == f"nrn:nexus:iam:org/demo:user/{developer_id}"
    assert developer.get("/api/admin/users").status_code == 403

    allowed = _simulate(cp, developer_id, "admin:organization.read",
                        f"nrn:nexus:platform:org/demo:organization/{cp.org_id}")
    assert allowed["decision"]["allowed"] is True
    assert (allowed["decision"]["policy_name"], allowed["decision"]["sid"]) == ("developers", "ReadOrgs")
    assert developer.get(f"/api/admin/orgs/{cp.org_id}").status_code == 200

    supers = _group_id(cp, "super-admins")
    security_id = cp.user_id("security-admins")
    near = _simulate(cp, security_id, "admin:group.update", f"nrn:nexus:iam::group/{supers}",
                     resource_tags={"name": "super-admins"})
    assert near["decision"]["allowed"] is False
    assert any(m["sid"] == "GrantManagedGroups" and "condition" in m["note"] for m in near["near_misses"])
    _, user_id = cp.add_user(None)
    assert cp.client("security-admins").put(f"/api/admin/groups/{supers}/members/{user_id}").status_code == 403
    ok = _simulate(cp, security_id, "admin:group.update", f"nrn:nexus:iam::group/{_group_id(cp, 'developers')}",
                   resource_tags={"name": "developers"})
    assert ok["decision"]["allowed"] is True and ok["matched"][0]["sid"] == "GrantManagedGroups"


@pytest.mark.parametrize(("patch", "field"), [
    ({"action": "read everything"}, "action"),
    ({"resource": "nrn:nexus:nowhere::x/1"}, "resource"),
    ({"source_ip": "10.0.0.300"}, "source_ip"),
    ({"principal": {"type": "user", "id": str(uuid.uuid4())}}, "principal.id"),
    ({"principal": {"type": "robot", "id": str(uuid.uuid4())}}, "principal.type"),
])
def test_simulation_validation(cp: ControlPlane, patch: dict[str, Any], field: str) -> None:
    body = {"principal": {"type": "user", "id": cp.user_id("developers")}, "action": "admin:user.read",
            "resource": "nrn:nexus:iam:org/demo:user/*", **patch}
    error = _error(cp.client("security-admins").post("/api/admin/iam/simulate", json=body), 422)
    assert error["message"].startswith(field), error


def test_viewer_cannot_simulate(cp: ControlPlane) -> None:
    response = cp.client("viewers").post("/api/admin/iam/simulate", json={
        "principal": {"type": "user", "id": cp.user_id("developers")}, "action": "admin:user.read",
        "resource": "nrn:nexus:iam:org/demo:user/*"})
    assert _error(response, 403)["code"] == "forbidden"
