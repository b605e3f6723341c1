"""Admin API, nodes area: things with their shadows (desired edits bump versions and land in the config
log) and agent enrollment tokens (shown once, stored as SHA-256)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import orjson
import psycopg
import pytest
from tests.controlplane.conftest import ControlPlane


def make_thing(cp: ControlPlane, *, type_: str = "agent", org: str | None = "demo", status: str = "online") -> str:
    with psycopg.connect(cp.db_url) as conn:
        row = conn.execute(
            "INSERT INTO thing (type, name, org_id, host, version, status, reported, reported_ver, labels) "
            "VALUES (%s, %s, (SELECT id FROM organization WHERE path = %s), 'host-1', '1.2.3', %s, %s, 3, %s) "
            "RETURNING id::text",
            (type_, f"{type_}-{uuid.uuid4().hex[:8]}", org, status,
             orjson.dumps({"log.level": {"ver": 3, "value": "info"}}).decode(),
             orjson.dumps({"site": "lab"}).decode())).fetchone()
    assert row is not None
    return str(row[0])


def make_org(cp: ControlPlane, parent: str | None = None) -> str:
    slug = f"org-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cp.db_url) as conn:
        row = conn.execute(
            "INSERT INTO organization (slug, name, parent_id) VALUES (%s, %s, "
            "(SELECT id FROM organization WHERE path = %s)) RETURNING path", (slug, slug, parent)).fetchone()
    assert row is not None
    return str(row[0])


def error_field(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["details"]["field"])


# -- things -----------------------------------------------------------------------------------


def test_things_are_listed_in_their_org_only(cp: ControlPlane) -> None:
    mine = make_thing(cp)
    gateway = make_thing(cp, type_="gateway", org=None)
    other = make_thing(cp, org=make_org(cp))
    offline = make_thing(cp, status="offline")
    security = cp.client("security-admins")
    listed = security.get("/api/admin/things", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    ids = [t["id"] for t in listed.json()["items"]]
    assert mine in ids and offline in ids and gateway not in ids and other not in ids
    assert "desired" not in listed.json()["items"][0]

    online = security.get("/api/admin/things", params={"status": "online", "type": "agent", "limit": 500}).json()
    assert mine in [t["id"] for t in online["items"]] and offline not in [t["id"] for t in online["items"]]
    assert security.get(f"/api/admin/things/{gateway}").status_code == 403
    assert security.get(f"/api/admin/things/{other}").status_code == 403
    everything = cp.client("super-admins").get("/api/admin/things", params={"org": "*", "limit": 500}).json()
    assert {mine, gateway, other} <= {t["id"] for t in everything["items"]}
    assert cp.client("viewers").get(f"/api/admin/things/{mine}").status_code == 200
    assert cp.client("developers").get(f"/api/admin/things/{mine}").status_code == 403


def test_thing_shadow_and_desired_edits(cp: ControlPlane) -> None:
    rid = make_thing(cp)
    with psycopg.connect(cp.db_url) as conn:
        conn.execute("INSERT INTO config_template (thing_type, key, value) VALUES ('agent', %s, '\"from-template\"') "
                     "ON CONFLICT (thing_type, key) DO NOTHING", ("intercept.mode",))
    security = cp.client("security-admins")
    thing = security.get(f"/api/admin/things/{rid}").json()
    assert thing["reported"] == {"log.level": {"ver": 3, "value": "info"}} and thing["desired"] == {}
    assert thing["desired_ver"] == 0 and thing["reported_ver"] == 3 and thing["drift"] is False

    first = security.patch(f"/api/admin/things/{rid}", json={"desired": {"log.level": "debug",
                                                                         "intercept.mode": {"hosts": ["a"]}}})
    assert first.status_code == 200, first.text
    shadow = first.json()
    assert shadow["desired_ver"] == 1
    assert shadow["desired"] == {"log.level": {"ver": 1, "value": "debug"},
                                 "intercept.mode": {"ver": 1, "value": {"hosts": ["a"]}}}

    second = security.patch(f"/api/admin/things/{rid}", json={"desired": {"intercept.mode": None},
                                                              "labels": {"site": "hq"}}).json()
    assert second["desired_ver"] == 2 and second["labels"] == {"site": "hq"}
    assert second["desired"]["intercept.mode"] == {"ver": 2, "value": "from-template"}
    assert second["desired"]["log.level"] == {"ver": 1, "value": "debug"}
    # Drift is desired_ver ahead of reported_ver: make the thing report an older version.
    with psycopg.connect(cp.db_url) as conn:
        conn.execute("UPDATE thing SET reported_ver = 1 WHERE id = %s", (rid,))
        overrides = conn.execute("SELECT key, value, version FROM config_override WHERE thing_id = %s",
                                 (rid,)).fetchall()
        events = conn.execute("SELECT change, key, version, actor_id::text FROM config_change_event "
                              "WHERE thing_id = %s ORDER BY seq", (rid,)).fetchall()
        audit = conn.execute("SELECT action, before, after FROM admin_audit_log WHERE resource_nrn = %s "
                             "ORDER BY seq DESC LIMIT 1", (f"nrn:nexus:platform:org/demo:thing/{rid}",)).fetchone()
    assert overrides == [("log.level", "debug", 1)]
    me = cp.user_id("security-admins")
    assert sorted(events) == sorted([("override", "log.level", 1, me), ("override", "intercept.mode", 1, me),
                                     ("override_removed", "intercept.mode", 2, me)])
    assert audit is not None and audit[0] == "admin:thing.update"
    assert audit[1]["desired_ver"] == 1 and audit[2]["desired_ver"] == 2
    drifting = [t for t in security.get("/api/admin/things", params={"limit": 500}).json()["items"] if t["id"] == rid]
    assert drifting[0]["drift"] is True

    assert error_field(security.patch(f"/api/admin/things/{rid}", json={"desired": {"Bad Key": 1}})
                       ) == "desired.Bad Key"
    assert error_field(security.patch(f"/api/admin/things/{rid}", json={"desired": {}})) == "desired"
    assert error_field(security.patch(f"/api/admin/things/{rid}", json={"status": "online"})) == "status"
    assert cp.client("viewers").patch(f"/api/admin/things/{rid}", json={"labels": {}}).status_code == 403


def test_thing_delete(cp: ControlPlane) -> None:
    rid = make_thing(cp)
    security = cp.client("security-admins")
    assert security.delete(f"/api/admin/things/{rid}").status_code == 204
    assert security.get(f"/api/admin/things/{rid}").status_code == 404
    assert security.delete(f"/api/admin/things/{uuid.uuid4()}").status_code == 404
    assert security.get("/api/admin/things/not-a-uuid").status_code == 404


# -- enrollment tokens ------------------------------------------------------------------------


def test_enrollment_token_is_returned_once_and_stored_hashed(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    created = security.post("/api/admin/enrollment-tokens", json={
        "org_id": cp.org_id, "name": "laptops", "labels": {"fleet": "laptops"}, "max_uses": 25})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert token.startswith("nxe_") and len(token) > 40
    assert body["token_prefix"] == token[:12] and body["status"] == "active" and body["max_uses"] == 25
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert dt.timedelta(hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)

    with psycopg.connect(cp.db_url) as conn:
        stored = conn.execute("SELECT token_hash, token_prefix, created_by::text FROM enrollment_token "
                              "WHERE id = %s", (body["id"],)).fetchone()
        audit = conn.execute("SELECT action, after::text FROM admin_audit_log WHERE resource_nrn LIKE %s "
                             "ORDER BY seq DESC LIMIT 1", (f"%{body['id']}",)).fetchone()
    assert stored is not None
    assert bytes(stored[0]) == hashlib.sha256(token.encode()).digest()
    assert stored[1] == token[:12] and stored[2] == cp.user_id("security-admins")
    assert audit is not None and audit[0] == "admin:enrollment-token.create" and token not in audit[1]

    got = security.get(f"/api/admin/enrollment-tokens/{body['id']}")
    listed = security.get("/api/admin/enrollment-tokens", params={"org_id": cp.org_id, "limit": 500})
    for response in (got, listed):
        assert response.status_code == 200 and token not in response.text and '"token"' not in response.text
    assert body["id"] in [t["id"] for t in listed.json()["items"]]

    revoked = security.post(f"/api/admin/enrollment-tokens/{body['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"] is not None
    again = security.post(f"/api/admin/enrollment-tokens/{body['id']}/revoke")
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert security.delete(f"/api/admin/enrollment-tokens/{body['id']}").status_code == 204
    assert security.get(f"/api/admin/enrollment-tokens/{body['id']}").status_code == 404


def test_enrollment_tokens_are_scoped_to_the_org_and_validated(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    other = make_org(cp)
    with psycopg.connect(cp.db_url) as conn:
        other_id = conn.execute("SELECT id::text FROM organization WHERE path = %s", (other,)).fetchone()[0]  # type: ignore[index]
    assert security.post("/api/admin/enrollment-tokens", json={"org_id": other_id}).status_code == 403
    child = make_org(cp, parent="demo")
    with psycopg.connect(cp.db_url) as conn:
        child_id = conn.execute("SELECT id::text FROM organization WHERE path = %s", (child,)).fetchone()[0]  # type: ignore[index]
    assert security.post("/api/admin/enrollment-tokens", json={"org_id": child_id}).status_code == 201
    assert cp.client("viewers").post("/api/admin/enrollment-tokens", json={"org_id": cp.org_id}).status_code == 403

    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=91)).isoformat()
    for body, field in (({"expires_at": past}, "expires_at"), ({"expires_at": far}, "expires_at"),
                        ({"max_uses": 0}, "max_uses"), ({"labels": {"a": 1}}, "labels.a")):
        response = security.post("/api/admin/enrollment-tokens", json={"org_id": cp.org_id, **body})
        assert error_field(response).startswith(field.split(".")[0]), (body, response.text)
    assert error_field(security.post("/api/admin/enrollment-tokens", json={})) == "org_id"


@pytest.mark.parametrize("status", ["expired", "exhausted"])
def test_enrollment_token_status(cp: ControlPlane, status: str) -> None:
    security = cp.client("security-admins")
    token = security.post("/api/admin/enrollment-tokens", json={"org_id": cp.org_id}).json()
    with psycopg.connect(cp.db_url) as conn:
        if status == "expired":
            conn.execute("UPDATE enrollment_token SET created_at = now() - interval '2 days', "
                         "expires_at = now() - interval '1 day' WHERE id = %s", (token["id"],))
        else:
            conn.execute("UPDATE enrollment_token SET use_count = max_uses WHERE id = %s", (token["id"],))
    assert security.get(f"/api/admin/enrollment-tokens/{token['id']}").json()["status"] == status
