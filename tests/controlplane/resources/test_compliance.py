"""Admin API, compliance area: hooks (validated by the engine's own parser), rule packs and rules, rule
overrides, interception domains, exemptions — round trips, 422s naming the field, IAM scoping,
config signals on NATS and the admin audit rows."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import psycopg
import pytest
from tests.controlplane.conftest import ControlPlane

from nexus.storage.rulepacks import seed_rule_packs


class SignalWatch:
    """nats-py on its own thread, collecting ``nexus.config.changed.>`` messages (an independent peer)."""

    def __init__(self, url: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc = asyncio.run_coroutine_threadsafe(nats.connect(url, connect_timeout=5), self._loop).result(10)

        async def subscribe() -> None:
            async def handler(msg: Any) -> None:
                self.messages.append((msg.subject, msg.data))

            await self._nc.subscribe("nexus.config.changed.>", cb=handler)
            await self._nc.flush()

        asyncio.run_coroutine_threadsafe(subscribe(), self._loop).result(10)

    def wait_for(self, subject: str, rid: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s == subject and rid.encode() in data for s, data in list(self.messages)):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {subject} signal for {rid}; saw {self.messages[-5:]}")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def signals(cp: ControlPlane) -> Iterator[SignalWatch]:
    watch = SignalWatch(cp.nats_url)
    yield watch
    watch.close()


@pytest.fixture(scope="module")
def packs(cp: ControlPlane) -> None:
    with psycopg.connect(cp.db_url) as conn:
        seed_rule_packs(conn)


def last_audit(cp: ControlPlane, needle: str) -> tuple[str, str, Any, Any]:
    with psycopg.connect(cp.db_url) as conn:
        row = conn.execute(
            "SELECT action, outcome, before, after FROM admin_audit_log WHERE resource_nrn LIKE %s "
            "ORDER BY seq DESC LIMIT 1", (f"%{needle}%",)).fetchone()
    assert row is not None, f"no audit row for {needle}"
    return row[0], row[1], row[2], row[3]


def error_field(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["details"]["field"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- hooks ------------------------------------------------------------------------------------


def test_hook_round_trip_signals_and_audits(cp: ControlPlane, signals: SignalWatch) -> None:
    admin = cp.client("super-admins")
    name = unique("no-codenames")
    created = admin.post("/api/admin/hooks", json={
        "name": name, "implementation": "keyword-filter", "stage": "request", "priority": 5,
        "config": {"keywords": ["project-x"], "onMatch": "block"}})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["scope_kind"] == "global" and hook["org_id"] is None
    assert hook["config"] == {"keywords": ["project-x"], "onMatch": "block"}
    assert hook["created_by"] == cp.user_id("super-admins")
    signals.wait_for("nexus.config.changed.hook_config", hook["id"])
    assert last_audit(cp, hook["id"])[:2] == ("admin:hook.create", "success")

    assert admin.get(f"/api/admin/hooks/{hook['id']}").json() == hook
    listed = admin.get("/api/admin/hooks", params={"implementation": "keyword-filter", "limit": 500}).json()
    assert hook["id"] in [h["id"] for h in listed["items"]]

    patched = admin.patch(f"/api/admin/hooks/{hook['id']}", json={"config": {"keywords": ["a", "b"]},
                                                                   "enabled": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["config"] == {"keywords": ["a", "b"]} and patched.json()["enabled"] is False
    action, _, before, after = last_audit(cp, hook["id"])
    assert action == "admin:hook.update" and before["enabled"] is True and after["enabled"] is False

    assert admin.delete(f"/api/admin/hooks/{hook['id']}").status_code == 204
    assert admin.get(f"/api/admin/hooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize(("implementation", "config", "field"), [
    ("keyword-filter", {"keywords": "project-x"}, "config.keywords"),
    ("keyword-filter", {"keywordz": ["x"]}, "config.keywordz"),
    ("webhook-forward", {}, "config.url"),
    ("rate-limiter", {"limit": -1}, "config.limit"),
    ("rulepack-engine", {"packs": ["no-such-pack"]}, "config"),
])
def test_invalid_hook_config_is_a_422_naming_the_field(cp: ControlPlane, implementation: str, config: dict[str, Any],
                                                        field: str) -> None:
    response = cp.client("super-admins").post("/api/admin/hooks", json={
        "name": unique("bad"), "implementation": implementation, "stage": "request", "config": config})
    assert error_field(response) == field
    assert response.json()["error"]["message"].startswith(field + ":")


def test_invalid_hook_config_on_update_is_refused_and_nothing_changes(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    hook = admin.post("/api/admin/hooks", json={"name": unique("kw"), "implementation": "keyword-filter",
                                                "stage": "request", "config": {"keywords": ["x"]}}).json()
    response = admin.patch(f"/api/admin/hooks/{hook['id']}", json={"config": {"keywords": [1]}})
    assert error_field(response).startswith("config.keywords")
    assert admin.get(f"/api/admin/hooks/{hook['id']}").json()["config"] == {"keywords": ["x"]}
    unknown = admin.patch(f"/api/admin/hooks/{hook['id']}", json={"implementation": "pii-detector"})
    assert error_field(unknown) == "implementation"
    admin.delete(f"/api/admin/hooks/{hook['id']}")


def test_hook_scopes_follow_the_org_and_iam(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    body = {"implementation": "pii-detector", "stage": "request", "config": {"onMatch": "redact"}}
    org_hook = security.post("/api/admin/hooks", json={**body, "name": unique("org"), "scope_kind": "org",
                                                       "org_id": cp.org_id})
    assert org_hook.status_code == 201, org_hook.text
    project_hook = security.post("/api/admin/hooks", json={**body, "name": unique("proj"), "scope_kind": "project",
                                                           "project_id": cp.project_id})
    assert project_hook.status_code == 201, project_hook.text
    assert project_hook.json()["org_id"] is None and project_hook.json()["project_id"] == cp.project_id
    # The project's org is the hook's NRN scope.
    with psycopg.connect(cp.db_url) as conn:
        nrn = conn.execute("SELECT resource_nrn FROM admin_audit_log WHERE resource_nrn LIKE %s",
                           (f"%{project_hook.json()['id']}",)).fetchone()
    assert nrn is not None and nrn[0] == f"nrn:nexus:compliance:org/demo:hook/{project_hook.json()['id']}"

    # Global hooks are reserved to super-admins.
    denied = security.post("/api/admin/hooks", json={**body, "name": unique("glob")})
    assert denied.status_code == 403
    assert last_audit(cp, "compliance::hook/*")[:2] == ("admin:hook.create", "denied")

    mismatch = security.post("/api/admin/hooks", json={**body, "name": unique("x"), "scope_kind": "org"})
    assert error_field(mismatch) == "org_id"
    extra = security.post("/api/admin/hooks", json={**body, "name": unique("x"), "org_id": cp.org_id})
    assert error_field(extra) == "org_id"
    missing_project = security.post("/api/admin/hooks", json={**body, "name": unique("x"), "scope_kind": "project",
                                                              "project_id": str(uuid.uuid4())})
    assert error_field(missing_project) == "project_id"

    # Listed in the org (with the global ones), readable, deletable.
    listed = [h["id"] for h in security.get("/api/admin/hooks", params={"limit": 500}).json()["items"]]
    assert org_hook.json()["id"] in listed and project_hook.json()["id"] in listed
    viewer = cp.client("viewers")
    assert viewer.get(f"/api/admin/hooks/{project_hook.json()['id']}").status_code == 200
    assert viewer.delete(f"/api/admin/hooks/{project_hook.json()['id']}").status_code == 403
    for hook in (org_hook, project_hook):
        assert security.delete(f"/api/admin/hooks/{hook.json()['id']}").status_code == 204


def test_duplicate_hook_name_is_a_conflict(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    body = {"name": unique("dup"), "implementation": "pii-detector", "stage": "request"}
    first = admin.post("/api/admin/hooks", json=body)
    assert first.status_code == 201
    assert admin.post("/api/admin/hooks", json=body).status_code == 409
    admin.delete(f"/api/admin/hooks/{first.json()['id']}")


# -- rule packs -------------------------------------------------------------------------------


def test_rule_packs_list_with_counts_and_paged_rules(cp: ControlPlane, packs: None) -> None:
    team = cp.client("compliance-team")
    listed = team.get("/api/admin/rule-packs", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    by_name = {p["name"]: p for p in listed.json()["items"]}
    pack = by_name["secret-leak"]
    assert pack["rule_count"] > 5 and pack["enabled_rule_count"] == pack["rule_count"]
    assert team.get(f"/api/admin/rule-packs/{pack['id']}").json()["rule_count"] == pack["rule_count"]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = team.get(f"/api/admin/rule-packs/{pack['id']}/rules", params=params)
        assert page.status_code == 200, page.text
        seen += [r["rule_id"] for r in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == pack["rule_count"] == len(set(seen)) and seen == sorted(seen)
    hard = team.get(f"/api/admin/rule-packs/{pack['id']}/rules", params={"severity": "hard", "limit": 1000}).json()
    assert hard["items"] and all(r["severity"] == "hard" for r in hard["items"])
    assert cp.client("viewers").get("/api/admin/rule-packs").status_code == 200


def test_rule_pack_patch_toggles_enabled_only(cp: ControlPlane, packs: None, signals: SignalWatch) -> None:
    team = cp.client("compliance-team")
    pack = {p["name"]: p for p in team.get("/api/admin/rule-packs", params={"limit": 100}).json()["items"]}["pii"]
    off = team.patch(f"/api/admin/rule-packs/{pack['id']}", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    signals.wait_for("nexus.config.changed.rule_pack", pack["id"])
    assert error_field(team.patch(f"/api/admin/rule-packs/{pack['id']}", json={"name": "x"})) == "name"
    assert team.patch(f"/api/admin/rule-packs/{pack['id']}", json={"enabled": True}).json()["enabled"] is True
    assert cp.client("viewers").patch(f"/api/admin/rule-packs/{pack['id']}", json={"enabled": False}
                                      ).status_code == 403
    assert team.post("/api/admin/rule-packs", json={}).status_code == 405


# -- rule overrides ---------------------------------------------------------------------------


def test_rule_override_round_trip(cp: ControlPlane, packs: None, signals: SignalWatch) -> None:
    with psycopg.connect(cp.db_url) as conn:
        rule_ids = [r[0] for r in conn.execute("SELECT rule_id FROM rule ORDER BY rule_id LIMIT 40").fetchall()]
        conn.execute("DELETE FROM rule_override WHERE rule_id = ANY(%s)", (rule_ids,))
    rule_id = rule_ids[uuid.uuid4().int % len(rule_ids)]
    team = cp.client("compliance-team")
    created = team.post("/api/admin/rule-overrides", json={"org_id": cp.org_id, "rule_id": rule_id,
                                                            "severity": "warn", "reason": "too noisy here"})
    assert created.status_code == 201, created.text
    override = created.json()
    assert override["severity"] == "warn" and override["disabled"] is False
    signals.wait_for("nexus.config.changed.rule_pack", override["id"])
    assert team.post("/api/admin/rule-overrides", json={"org_id": cp.org_id, "rule_id": rule_id,
                                                         "disabled": True}).status_code == 409
    updated = team.patch(f"/api/admin/rule-overrides/{override['id']}", json={"disabled": True, "severity": None})
    assert updated.status_code == 200, updated.text
    assert updated.json()["disabled"] is True and updated.json()["severity"] is None
    assert error_field(team.patch(f"/api/admin/rule-overrides/{override['id']}", json={"disabled": False})
                       ) == "severity"
    listed = team.get("/api/admin/rule-overrides", params={"rule_id": rule_id}).json()["items"]
    assert [o["id"] for o in listed] == [override["id"]]
    assert team.delete(f"/api/admin/rule-overrides/{override['id']}").status_code == 204
    assert last_audit(cp, override["id"])[0] == "admin:rule-override.delete"


def test_rule_override_validation(cp: ControlPlane, packs: None) -> None:
    team = cp.client("compliance-team")
    assert error_field(team.post("/api/admin/rule-overrides", json={
        "org_id": cp.org_id, "rule_id": "NO_SUCH_RULE_EVER", "disabled": True})) == "rule_id"
    assert error_field(team.post("/api/admin/rule-overrides", json={
        "org_id": cp.org_id, "rule_id": "whatever", "reason": "x"})) == "severity"
    assert error_field(team.post("/api/admin/rule-overrides", json={
        "org_id": cp.org_id, "rule_id": "bad id!", "disabled": True})) == "rule_id"
    assert error_field(team.post("/api/admin/rule-overrides", json={
        "org_id": cp.org_id, "rule_id": "x", "severity": "fatal"})) == "severity"


# -- interception domains ---------------------------------------------------------------------


def test_interception_domain_round_trip(cp: ControlPlane, signals: SignalWatch) -> None:
    team = cp.client("compliance-team")
    pattern = f"*.{uuid.uuid4().hex[:10]}.example.com"
    created = team.post("/api/admin/interception-domains", json={"pattern": pattern, "provider": "openai"})
    assert created.status_code == 201, created.text
    domain = created.json()
    assert domain["builtin"] is False and domain["enabled"] is True
    signals.wait_for("nexus.config.changed.interception_domain", domain["id"])
    assert team.post("/api/admin/interception-domains", json={"pattern": pattern}).status_code == 409
    patched = team.patch(f"/api/admin/interception-domains/{domain['id']}", json={"enabled": False,
                                                                                  "description": "paused"})
    assert patched.json()["enabled"] is False and patched.json()["description"] == "paused"
    assert error_field(team.patch(f"/api/admin/interception-domains/{domain['id']}", json={"pattern": "a.b"})
                       ) == "pattern"
    assert cp.client("viewers").get(f"/api/admin/interception-domains/{domain['id']}").status_code == 200
    assert team.delete(f"/api/admin/interception-domains/{domain['id']}").status_code == 204


@pytest.mark.parametrize("pattern", ["API.OPENAI.COM", "localhost", "a..b", "-a.b", "a.b.", "**.b.com"])
def test_interception_domain_pattern_is_validated(cp: ControlPlane, pattern: str) -> None:
    response = cp.client("compliance-team").post("/api/admin/interception-domains", json={"pattern": pattern})
    assert error_field(response) == "pattern"


def test_builtin_interception_domain_cannot_be_deleted(cp: ControlPlane) -> None:
    pattern = f"{uuid.uuid4().hex[:10]}.builtin.example.com"
    with psycopg.connect(cp.db_url) as conn:
        rid = conn.execute("INSERT INTO interception_domain (pattern, builtin) VALUES (%s, true) RETURNING id::text",
                           (pattern,)).fetchone()[0]  # type: ignore[index]
    team = cp.client("compliance-team")
    refused = team.delete(f"/api/admin/interception-domains/{rid}")
    assert refused.status_code == 409 and "disable" in refused.json()["error"]["message"]
    assert team.patch(f"/api/admin/interception-domains/{rid}", json={"enabled": False}).status_code == 200


# -- exemptions -------------------------------------------------------------------------------


def test_exemption_round_trip(cp: ControlPlane, signals: SignalWatch) -> None:
    team = cp.client("compliance-team")
    host = team.post("/api/admin/exemptions", json={
        "kind": "host", "bypass": "interception", "host_pattern": f"{uuid.uuid4().hex[:8]}.bank.example",
        "certificate_pinned": True, "reason": "pinned certificate"})
    assert host.status_code == 201, host.text
    signals.wait_for("nexus.config.changed.exemption", host.json()["id"])
    cidr = team.post("/api/admin/exemptions", json={"kind": "source_cidr", "bypass": "interception",
                                                    "source_cidr": "10.20.0.0/16", "reason": "lab network"})
    assert cidr.status_code == 201, cidr.text
    assert cidr.json()["source_cidr"] == "10.20.0.0/16"
    user = team.post("/api/admin/exemptions", json={"kind": "user", "bypass": "hooks",
                                                    "user_id": cp.user_id("viewers"), "reason": "red team"})
    assert user.status_code == 201, user.text

    patched = team.patch(f"/api/admin/exemptions/{user.json()['id']}",
                         json={"expires_at": "2099-01-01T00:00:00Z", "reason": "red team, until the exercise ends"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["expires_at"].startswith("2099-01-01")
    listed = team.get("/api/admin/exemptions", params={"kind": "source_cidr", "limit": 500}).json()["items"]
    assert cidr.json()["id"] in [e["id"] for e in listed]
    assert all(e["kind"] == "source_cidr" for e in listed)
    for created in (host, cidr, user):
        assert team.delete(f"/api/admin/exemptions/{created.json()['id']}").status_code == 204
    assert cp.client("developers").get("/api/admin/exemptions").status_code == 403


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "host", "bypass": "interception"}, "host_pattern"),
    ({"kind": "host", "bypass": "interception", "host_pattern": "a.example", "user_id": str(uuid.uuid4())},
     "user_id"),
    ({"kind": "source_cidr", "bypass": "interception", "source_cidr": "10.0.0.1/8"}, "source_cidr"),
    ({"kind": "source_cidr", "bypass": "interception", "source_cidr": "not-a-net"}, "source_cidr"),
    ({"kind": "user", "bypass": "interception", "user_id": str(uuid.uuid4())}, "bypass"),
    ({"kind": "source_cidr", "bypass": "hooks", "source_cidr": "10.0.0.0/8", "certificate_pinned": True},
     "certificate_pinned"),
    ({"kind": "user", "bypass": "hooks", "user_id": str(uuid.uuid4())}, None),
    ({"kind": "host", "bypass": "hooks", "host_pattern": "a.example", "reason": ""}, "reason"),
])
def test_exemption_validation(cp: ControlPlane, body: dict[str, Any], field: str | None) -> None:
    response = cp.client("compliance-team").post("/api/admin/exemptions", json={"reason": "because", **body})
    if field is None:  # a user that does not exist: the foreign key
        assert response.status_code == 422 and "does not exist" in response.json()["error"]["message"]
    else:
        assert error_field(response) == field
