"""Gateway admin resources through a real control plane: keys, catalogue, routing, quotas, passthrough.

Every test talks HTTP to ``nexus control-plane`` (the ``cp`` fixture) and checks what landed in
PostgreSQL, the admin audit log and on NATS with independent clients (psycopg, nats-py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import nats as nats_py
import orjson
import psycopg
import pytest
from psycopg.rows import dict_row
from tests.controlplane.conftest import ControlPlane
from tests.gateway.conftest import daemon_env, start_daemon, stop, wait_ready

from nexus import signals
from nexus.crypto import secretfiles, vkeys
from nexus.crypto.vault import Sealed
from nexus.devstack import services
from nexus.policy.config import KillSwitch, from_row

pytestmark = pytest.mark.timeout(180)


# -- helpers --------------------------------------------------------------------------------------

def audit_row(cp: ControlPlane, response: httpx.Response) -> dict[str, Any]:
    """The admin audit entry the request wrote (found by its request id)."""
    with psycopg.connect(cp.db_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT action, resource_nrn, outcome, before, after FROM admin_audit_log "
                           "WHERE request_id = %s ORDER BY seq DESC LIMIT 1",
                           (response.headers["x-request-id"],)).fetchone()
    assert row is not None, "no audit row for the request"
    return row


def one(cp: ControlPlane, query: str, *args: Any) -> Any:
    with psycopg.connect(cp.db_url) as conn:
        return conn.execute(query, args).fetchone()


def error_field(response: httpx.Response, status: int = 422) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith(error["details"]["field"] + ":"), error
    return str(error["details"]["field"])


class Signals:
    """Every ``nexus.config.changed.>`` message seen while open (nats-py on its own thread)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def wait(self, kind: str, rid: str | None, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for subject, payload in list(self.seen):
                if subject == signals.PREFIX + kind and payload.get("id") == rid:
                    return
            time.sleep(0.02)
        pytest.fail(f"no {kind} signal for {rid} within {timeout}s; saw {self.seen[-10:]}")


@contextlib.contextmanager
def watch_signals(cp: ControlPlane) -> Iterator[Signals]:
    got = Signals()
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        nc = await nats_py.connect(cp.nats_url)

        async def on_message(msg: Any) -> None:
            got.seen.append((msg.subject, orjson.loads(msg.data) if msg.data else {}))

        await nc.subscribe(signals.ALL, cb=on_message)
        await nc.flush()
        ready.set()
        await asyncio.to_thread(stop.wait)
        await nc.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the waiting test
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(15) and not failure, failure
    try:
        yield got
    finally:
        stop.set()
        thread.join(15)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def admin(cp: ControlPlane) -> Iterator[httpx.Client]:
    with cp.client("super-admins") as client:
        yield client


@pytest.fixture(scope="module")
def gateway(cp: ControlPlane, valkey_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real gateway over the control plane's database, secrets and NATS: the reader of what we write."""
    root = tmp_path_factory.mktemp("gateway")
    port = services.free_port()
    env = daemon_env(cp.db_url, valkey_url, cp.nats_url, cp.secrets, NEXUS_GATEWAY__LISTEN__PORT=str(port),
                     NEXUS_STATE_DIR=str(root / "state"), NEXUS_AUDIT__SPILL_DIR=str(root / "spill"),
                     NEXUS_AUDIT__SPOOL_DIR=str(root / "spool"))
    url, log = f"http://127.0.0.1:{port}", root / "gateway.log"
    proc = start_daemon("gateway", env, log)
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        stop(proc)


# -- virtual keys ---------------------------------------------------------------------------------

def test_gateway_accepts_a_new_key_sees_new_models_and_refuses_a_revoked_key_within_a_second(
        cp: ControlPlane, admin: httpx.Client, gateway: str) -> None:
    created = admin.post("/api/admin/virtual-keys", json={"name": "e2e", "kind": "application",
                                                          "project_id": cp.project_id})
    assert created.status_code == 201, created.text
    auth = {"authorization": f"Bearer {created.json()['key']}"}
    assert httpx.get(gateway + "/v1/models", headers=auth).status_code == 200  # now cached by the gateway

    provider_id = one(cp, "SELECT id::text FROM provider WHERE name = 'mock-openai'")[0]
    code = unique("fresh-model")
    assert admin.post("/api/admin/models", json={"provider_id": provider_id, "code": code,
                                                 "provider_model_id": "gpt-4o"}).status_code == 201
    deadline = time.monotonic() + 10
    while code not in httpx.get(gateway + "/v1/models", headers=auth).text:
        assert time.monotonic() < deadline, "the gateway did not reload its catalogue after the model signal"
        time.sleep(0.05)

    assert admin.post(f"/api/admin/virtual-keys/{created.json()['id']}/revoke", json={}).status_code == 200
    deadline = time.monotonic() + 1.0
    while httpx.get(gateway + "/v1/models", headers=auth).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted one second after the revocation"
        time.sleep(0.02)


def test_personal_keys_stop_with_their_owners_account(cp: ControlPlane, admin: httpx.Client, gateway: str) -> None:
    email, user_id = cp.add_user("developers")
    developer = httpx.Client(base_url=cp.url, headers={"authorization": f"Bearer {cp.login(email)}"}, timeout=30)
    created = developer.post("/api/my/virtual-keys", json={"name": unique("mine")})
    assert created.status_code == 201, created.text
    auth = {"authorization": f"Bearer {created.json()['key']}"}
    assert httpx.get(gateway + "/v1/models", headers=auth).status_code == 200

    def status_within_a_second(expected: int) -> None:
        deadline = time.monotonic() + 1.0
        while httpx.get(gateway + "/v1/models", headers=auth).status_code != expected:
            assert time.monotonic() < deadline, f"personal key not {expected} a second after the account change"
            time.sleep(0.02)

    assert admin.patch(f"/api/admin/users/{user_id}", json={"status": "disabled"}).status_code == 200
    status_within_a_second(401)
    assert admin.patch(f"/api/admin/users/{user_id}", json={"status": "active"}).status_code == 200
    status_within_a_second(200)


def test_virtual_key_shown_once_hash_matches_and_revocation_is_signalled(cp: ControlPlane, admin: httpx.Client
                                                                         ) -> None:
    created = admin.post("/api/admin/virtual-keys", json={
        "name": "ci", "kind": "application", "project_id": cp.project_id, "allowed_models": ["mock-*"], "rpm": 60,
        "metadata": {"team": "ml"}})
    assert created.status_code == 201, created.text
    body = created.json()
    key, key_id = body["key"], body["id"]
    assert key.startswith("nvk_") and vkeys.looks_valid(key)
    assert body["key_prefix"] == vkeys.display_prefix(key) and body["org_id"] == cp.org_id
    assert body["owner_user_id"] is None and body["revoked"] is False and body["created_by"] is not None
    stored = one(cp, "SELECT key_hash FROM virtual_key WHERE id = %s", key_id)
    assert bytes(stored[0]) == vkeys.hash_key(secretfiles.key_hmac_secret(cp.secrets), key)

    # Never again: not on read, not in lists, not in the audit log.
    got = admin.get(f"/api/admin/virtual-keys/{key_id}")
    assert got.status_code == 200 and "key" not in got.json() and "key_hash" not in got.json()
    listed = admin.get("/api/admin/virtual-keys", params={"project_id": cp.project_id, "revoked": "false"})
    assert listed.status_code == 200 and key_id in [k["id"] for k in listed.json()["items"]]
    assert key not in listed.text and key not in got.text
    entry = audit_row(cp, created)
    assert entry["action"] == "admin:virtual-key.create" and entry["outcome"] == "success"
    assert key not in orjson.dumps(entry).decode() and entry["after"]["id"] == key_id

    updated = admin.patch(f"/api/admin/virtual-keys/{key_id}", json={"rpm": None, "tpm": 5000, "name": "ci-2"})
    assert updated.status_code == 200 and updated.json()["rpm"] is None and updated.json()["tpm"] == 5000

    with watch_signals(cp) as seen:
        revoked = admin.post(f"/api/admin/virtual-keys/{key_id}/revoke", json={"reason": "leaked in a log"})
        assert revoked.status_code == 200, revoked.text
        seen.wait("virtual_key", key_id)
    assert revoked.json()["revoked"] is True and revoked.json()["revoked_reason"] == "leaked in a log"
    assert revoked.json()["revoked_by"] == body["created_by"]
    assert admin.post(f"/api/admin/virtual-keys/{key_id}/revoke", json={}).status_code == 409
    live = admin.get("/api/admin/virtual-keys", params={"project_id": cp.project_id, "revoked": "false"})
    assert key_id not in [k["id"] for k in live.json()["items"]]
    gone = admin.get("/api/admin/virtual-keys", params={"revoked": "true"})
    assert key_id in [k["id"] for k in gone.json()["items"]]

    assert admin.delete(f"/api/admin/virtual-keys/{key_id}").status_code == 204
    assert admin.get(f"/api/admin/virtual-keys/{key_id}").status_code == 404


def test_virtual_key_validation_names_the_field(cp: ControlPlane, admin: httpx.Client) -> None:
    url = "/api/admin/virtual-keys"
    assert error_field(admin.post(url, json={"name": "x", "kind": "application"})) == "project_id"
    assert error_field(admin.post(url, json={"name": "x", "kind": "application", "project_id": cp.project_id,
                                             "owner_user_id": cp.user_id("viewers")})) == "owner_user_id"
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    assert error_field(admin.post(url, json={"name": "x", "expires_at": past})) == "expires_at"
    assert error_field(admin.post(url, json={"name": "x", "allowed_models": ["a b"]})) == "allowed_models[0]"
    assert error_field(admin.post(url, json={"name": "", "kind": "personal"})) == "name"
    assert error_field(admin.post(url, json={"name": "x", "rpm": 0})) == "rpm"
    assert error_field(admin.post(url, json={"name": "x", "kind": "robot"})) == "kind"


def test_developers_create_and_manage_only_keys_they_own(cp: ControlPlane) -> None:
    me = cp.user_id("developers")
    with cp.client("developers") as dev:
        mine = dev.post("/api/admin/virtual-keys", json={"name": "laptop"})
        assert mine.status_code == 201, mine.text
        assert mine.json()["owner_user_id"] == me and mine.json()["kind"] == "personal"
        key_id = mine.json()["id"]
        assert dev.get(f"/api/admin/virtual-keys/{key_id}").status_code == 200

        someone_else = dev.post("/api/admin/virtual-keys", json={"name": "x", "owner_user_id": cp.user_id("viewers")})
        assert someone_else.status_code == 403, someone_else.text
        assert dev.post("/api/admin/virtual-keys", json={
            "name": "x", "kind": "application", "project_id": cp.project_id}).status_code == 403
        assert audit_row(cp, someone_else)["outcome"] == "denied"

        own_list = dev.get("/api/admin/virtual-keys", params={"owner_user_id": me})
        assert own_list.status_code == 200 and [k["id"] for k in own_list.json()["items"]] == [key_id]
        assert dev.get("/api/admin/virtual-keys").status_code == 403
        # Limits are provider-admins' business, not the owner's.
        assert dev.patch(f"/api/admin/virtual-keys/{key_id}", json={"rpm": 10}).status_code == 403
        with cp.client("provider-admins") as pa:
            limited = pa.patch(f"/api/admin/virtual-keys/{key_id}", json={"rpm": 10})
            assert limited.status_code == 200 and limited.json()["rpm"] == 10
        assert dev.post(f"/api/admin/virtual-keys/{key_id}/revoke", json={}).status_code == 200
        assert dev.delete(f"/api/admin/virtual-keys/{key_id}").status_code == 204


# -- providers, credentials, models ---------------------------------------------------------------

def test_provider_credential_and_model_round_trip_with_write_only_secrets(cp: ControlPlane) -> None:
    secret, rotated_secret = "sk-live-" + uuid.uuid4().hex + "wxyz", "sk-next-" + uuid.uuid4().hex + "9876"
    responses: list[httpx.Response] = []
    with cp.client("provider-admins") as pa:
        name = unique("acme-openai")
        provider = pa.post("/api/admin/providers", json={
            "name": name, "adapter": "openai", "base_url": "https://api.example.test/v1", "timeout_ms": 30000,
            "settings": {"organization": "org-1"}})
        assert provider.status_code == 201, provider.text
        pid = provider.json()["id"]
        assert provider.json()["enabled"] is True and provider.json()["region"] is None
        patched = pa.patch(f"/api/admin/providers/{pid}", json={"display_name": "Acme OpenAI", "region": "eu"})
        assert patched.status_code == 200 and patched.json()["display_name"] == "Acme OpenAI"
        listed = pa.get("/api/admin/providers", params={"adapter": "openai"})
        assert pid in [p["id"] for p in listed.json()["items"]]
        assert error_field(pa.post("/api/admin/providers", json={
            "name": "Bad Name", "adapter": "openai", "base_url": "https://x"})) == "name"
        assert error_field(pa.post("/api/admin/providers", json={
            "name": unique("p"), "adapter": "openai", "base_url": "ftp://x"})) == "base_url"
        assert pa.post("/api/admin/providers", json={
            "name": name, "adapter": "openai", "base_url": "https://x"}).status_code == 409

        created = pa.post("/api/admin/credentials", json={"provider_id": pid, "name": "primary", "secret": secret})
        responses.append(created)
        assert created.status_code == 201, created.text
        cred = created.json()
        cid = cred["id"]
        assert cred["secret_hint"] == "wxyz" and cred["key_id"] and "secret" not in cred
        assert not {"ciphertext", "nonce"} & set(cred)
        vault = secretfiles.vault(cp.secrets)
        ct, nonce, key_id = one(cp, "SELECT ciphertext, nonce, key_id FROM credential WHERE id = %s", cid)
        # Sealed exactly as the gateway's catalog opens it: the credential id is the associated data.
        assert vault.open(Sealed(key_id, bytes(nonce), bytes(ct)), uuid.UUID(cid).bytes).decode() == secret
        entry = audit_row(cp, created)
        assert entry["after"]["secret"] == "***" and secret not in orjson.dumps(entry).decode()

        responses.append(pa.get(f"/api/admin/credentials/{cid}"))
        responses.append(pa.get("/api/admin/credentials", params={"provider_id": pid}))
        responses.append(pa.patch(f"/api/admin/credentials/{cid}", json={"weight": 5}))
        assert responses[-1].json()["weight"] == 5
        assert error_field(pa.patch(f"/api/admin/credentials/{cid}", json={"secret": "x"})) == "secret"

        rotated = pa.post(f"/api/admin/credentials/{cid}/rotate", json={"secret": rotated_secret})
        responses.append(rotated)
        assert rotated.status_code == 200 and rotated.json()["secret_hint"] == "9876"
        assert rotated.json()["rotated_at"] is not None
        ct, nonce, key_id = one(cp, "SELECT ciphertext, nonce, key_id FROM credential WHERE id = %s", cid)
        assert vault.open(Sealed(key_id, bytes(nonce), bytes(ct)), uuid.UUID(cid).bytes).decode() == rotated_secret
        entry = audit_row(cp, rotated)
        assert entry["action"] == "admin:credential.rotate" and entry["after"]["secret"] == "***"
        assert rotated_secret not in orjson.dumps(entry).decode() and secret not in orjson.dumps(entry).decode()
        short = pa.post("/api/admin/credentials", json={"provider_id": pid, "name": "short", "secret": "abc12345"})
        assert short.status_code == 201 and short.json()["secret_hint"] == ""
        for response in responses:
            assert secret not in response.text and rotated_secret not in response.text

        model = pa.post("/api/admin/models", json={
            "provider_id": pid, "code": unique("gpt-acme"), "provider_model_id": "gpt-4o",
            "input_micro_usd_per_mtok": 2_500_000, "output_micro_usd_per_mtok": 10_000_000,
            "cached_input_micro_usd_per_mtok": 1_250_000, "context_window": 128000, "max_output_tokens": 16384,
            "default_max_tokens": 4096, "aliases": ["acme-default"]})
        assert model.status_code == 201, model.text
        mid = model.json()["id"]
        assert model.json()["input_micro_usd_per_mtok"] == 2_500_000 and model.json()["aliases"] == ["acme-default"]
        assert model.json()["reasoning_micro_usd_per_mtok"] == 0 and model.json()["modality"] == "chat"
        repriced = pa.patch(f"/api/admin/models/{mid}", json={"output_micro_usd_per_mtok": 8_000_000})
        assert repriced.status_code == 200 and repriced.json()["output_micro_usd_per_mtok"] == 8_000_000
        assert error_field(pa.patch(f"/api/admin/models/{mid}", json={"default_max_tokens": 20000})) == \
            "default_max_tokens"
        assert error_field(pa.patch(f"/api/admin/models/{mid}", json={"aliases": ["ok", "not ok"]})) == "aliases[1]"
        assert error_field(pa.patch(f"/api/admin/models/{mid}", json={"input_micro_usd_per_mtok": -1})) == \
            "input_micro_usd_per_mtok"
        assert pa.get("/api/admin/models", params={"provider_id": pid}).json()["items"][0]["id"] == mid

        assert pa.delete(f"/api/admin/models/{mid}").status_code == 204
        assert pa.delete(f"/api/admin/credentials/{cid}").status_code == 204
        assert pa.delete(f"/api/admin/providers/{pid}").status_code == 204
        assert pa.get(f"/api/admin/providers/{pid}").status_code == 404


def test_viewers_and_developers_read_the_catalogue_but_cannot_change_it(cp: ControlPlane) -> None:
    body = {"name": unique("p"), "adapter": "anthropic", "base_url": "https://api.example.test"}
    for group in ("viewers", "developers"):
        with cp.client(group) as client:
            assert client.get("/api/admin/providers").status_code == 200
            assert client.get("/api/admin/models").status_code == 200
            assert client.post("/api/admin/providers", json=body).status_code == 403
            assert client.get("/api/admin/credentials").status_code == 403
    with cp.client("provider-admins") as pa:
        assert pa.post("/api/admin/providers", json=body).status_code == 201


# -- routing --------------------------------------------------------------------------------------

def test_routing_rule_round_trip_and_validation_by_the_gateway_parser(cp: ControlPlane) -> None:
    with cp.client("provider-admins") as pa, watch_signals(cp) as seen:
        rule = pa.post("/api/admin/routing-rules", json={
            "org_id": cp.org_id, "name": unique("prod"), "priority": 5,
            "match_conditions": {"model": {"$in": ["mock-gpt", "auto"]}},
            "strategy": {"type": "loadbalance", "weightedTargets": [
                {"weight": 3, "node": {"provider": "mock-openai", "model": "mock-gpt"}},
                {"weight": 1, "node": {"provider": "mock-anthropic", "model": "mock-claude"}}]},
            "retry_policy": {"max_retries": 1, "retry_on": [429, "5xx"]},
            "fallback_chain": [{"provider": "mock-gemini", "model": "mock-gemini"}]})
        assert rule.status_code == 201, rule.text
        rid = rule.json()["id"]
        seen.wait("routing_rule", rid)
        assert rule.json()["org_id"] == cp.org_id and rule.json()["stage"] == 1
        assert pa.get(f"/api/admin/routing-rules/{rid}").json()["strategy"]["type"] == "loadbalance"
        assert rid in [r["id"] for r in pa.get("/api/admin/routing-rules").json()["items"]]

        base = {"org_id": cp.org_id, "name": unique("bad")}
        bad = {
            "strategy": {"type": "roundrobin"},
            "match_conditions": {"model": {"$bogus": 1}},
            "retry_policy": {"max_retries": "two"},
            "fallback_chain": [{"provider": "x"}],
        }
        for column, value in bad.items():
            body = {"strategy": {"model": "mock-gpt"}, **base, column: value}
            assert error_field(pa.post("/api/admin/routing-rules", json=body)) == column
        stage0 = pa.post("/api/admin/routing-rules", json={**base, "stage": 0, "strategy": {"model": "mock-gpt"}})
        assert error_field(stage0) == "strategy"

        assert error_field(pa.patch(f"/api/admin/routing-rules/{rid}", json={
            "strategy": {"type": "fallback", "targets": []}})) == "strategy"
        moved = pa.patch(f"/api/admin/routing-rules/{rid}", json={"priority": 7, "enabled": False})
        assert moved.status_code == 200 and moved.json()["priority"] == 7 and moved.json()["enabled"] is False
        # Global rules are installation-wide: not a provider-admin's to create.
        assert pa.post("/api/admin/routing-rules", json={
            "name": unique("global"), "strategy": {"model": "mock-gpt"}}).status_code == 403
        assert pa.delete(f"/api/admin/routing-rules/{rid}").status_code == 204
        seen.wait("routing_rule", rid)


def test_simulate_answers_the_target_order_of_a_rule(cp: ControlPlane) -> None:
    marker = uuid.uuid4().hex
    with cp.client("provider-admins") as pa:
        rule = pa.post("/api/admin/routing-rules", json={
            "org_id": cp.org_id, "name": unique("sim"), "priority": 1000,
            "match_conditions": {"metadata.sim": marker},
            "strategy": {"type": "fallback", "targets": [
                {"provider": "mock-anthropic", "model": "mock-claude"},
                {"provider": "mock-openai", "model": "mock-gpt"}]}})
        assert rule.status_code == 201, rule.text
        simulated = pa.post("/api/admin/routing-rules/simulate", json={
            "model": "mock-gpt", "metadata": {"sim": marker}})
        assert simulated.status_code == 200, simulated.text
        result = simulated.json()
        assert [(t["provider"], t["model"]) for t in result["targets"]] == [
            ("mock-anthropic", "mock-claude"), ("mock-openai", "mock-gpt")]
        assert result["rule"] == {"id": rule.json()["id"], "name": rule.json()["name"]}
        verdicts = {r["id"]: r["verdict"] for r in result["rules"]}
        assert verdicts[rule.json()["id"]] == "selected"
        assert result["request"]["org_path"] == "demo" and "fallback #1" in result["targets"][0]["why"]

        # Without the marker the rule does not match; a draft rule replaces the live ones.
        other = pa.post("/api/admin/routing-rules/simulate", json={"model": "mock-gpt"}).json()
        assert {r["id"]: r["verdict"] for r in other["rules"]}[rule.json()["id"]] == "did not match"
        draft = pa.post("/api/admin/routing-rules/simulate", json={"model": "mock-gpt", "rules": [
            {"name": "draft", "strategy": {"provider": "mock-gemini", "model": "mock-gemini"}}]}).json()
        assert [(t["provider"], t["model"]) for t in draft["targets"]] == [("mock-gemini", "mock-gemini")]

        assert error_field(pa.post("/api/admin/routing-rules/simulate", json={"model": ""})) == "model"
        assert error_field(pa.post("/api/admin/routing-rules/simulate", json={
            "model": "mock-gpt", "virtual_key_id": str(uuid.uuid4())})) == "virtual_key_id"
        assert pa.delete(f"/api/admin/routing-rules/{rule.json()['id']}").status_code == 204
    with cp.client("developers") as dev:
        assert dev.post("/api/admin/routing-rules/simulate", json={"model": "mock-gpt"}).status_code == 403


# -- quotas ---------------------------------------------------------------------------------------

def test_quota_policies_and_overrides_round_trip_and_validation(cp: ControlPlane, admin: httpx.Client) -> None:
    url = "/api/admin/quota-policies"
    with cp.client("provider-admins") as pa, watch_signals(cp) as seen:
        policy = pa.post(url, json={
            "name": "project daily", "scope_org_id": cp.org_id, "axis": "project", "project_id": cp.project_id,
            "unit": "requests", "window_kind": "calendar", "calendar_period": "day", "soft_limit": 80,
            "hard_limit": 100})
        assert policy.status_code == 201, policy.text
        pid = policy.json()["id"]
        seen.wait("quota_policy", pid)
        assert policy.json()["created_by"] == cp.user_id("provider-admins")

        base = {"name": "q", "scope_org_id": cp.org_id, "axis": "virtual_key", "unit": "total_tokens",
                "window_kind": "sliding", "window_seconds": 60, "hard_limit": 1000}
        assert error_field(pa.post(url, json={**base, "window_kind": "calendar", "window_seconds": None})) == \
            "calendar_period"
        assert error_field(pa.post(url, json={**base, "calendar_period": "day"})) == "calendar_period"
        assert error_field(pa.post(url, json={**base, "window_seconds": None})) == "window_seconds"
        assert error_field(pa.post(url, json={**base, "hard_limit": None})) == "hard_limit"
        assert error_field(pa.post(url, json={**base, "soft_limit": 2000})) == "soft_limit"
        assert error_field(pa.post(url, json={**base, "project_id": cp.project_id})) == "project_id"
        assert error_field(pa.post(url, json={**base, "axis": "diagonal"})) == "axis"
        assert error_field(pa.post(url, json={**base, "axis": "project", "project_id": str(uuid.uuid4())})) == \
            "project_id"
        assert error_field(pa.patch(f"{url}/{pid}", json={"window_kind": "sliding"})) == "window_seconds"
        # Installation-wide policies are super-admins'.
        assert pa.post(url, json={**base, "scope_org_id": None}).status_code == 403

        per_key = pa.post(url, json=base)
        assert per_key.status_code == 201, per_key.text
        key = admin.post("/api/admin/virtual-keys", json={"name": "quota", "kind": "application",
                                                           "project_id": cp.project_id}).json()
        override = pa.post("/api/admin/quota-overrides", json={
            "quota_policy_id": per_key.json()["id"], "virtual_key_id": key["id"], "hard_limit": 5000,
            "reason": "load test this week"})
        assert override.status_code == 201, override.text
        oid = override.json()["id"]
        seen.wait("quota_override", oid)
        bad = {"quota_policy_id": per_key.json()["id"], "reason": "x", "hard_limit": 1}
        assert error_field(pa.post("/api/admin/quota-overrides", json={**bad, "user_id": cp.user_id("viewers")})) \
            == "user_id"
        assert error_field(pa.post("/api/admin/quota-overrides", json=bad)) == "virtual_key_id"
        assert error_field(pa.post("/api/admin/quota-overrides", json={
            **bad, "virtual_key_id": key["id"], "hard_limit": None})) == "hard_limit"
        assert error_field(pa.post("/api/admin/quota-overrides", json={
            **bad, "quota_policy_id": pid, "project_id": str(uuid.uuid4())})) == "project_id"
        assert pa.post("/api/admin/quota-overrides", json={
            **bad, "virtual_key_id": key["id"]}).status_code == 409

        raised = pa.patch(f"/api/admin/quota-overrides/{oid}", json={"soft_limit": 4000, "hard_limit": 6000})
        assert raised.status_code == 200 and raised.json()["hard_limit"] == 6000
        assert error_field(pa.patch(f"/api/admin/quota-overrides/{oid}", json={"soft_limit": 7000})) == "soft_limit"
        listed = pa.get("/api/admin/quota-overrides", params={"quota_policy_id": per_key.json()["id"]})
        assert [o["id"] for o in listed.json()["items"]] == [oid]
        assert pid in [p["id"] for p in pa.get(url, params={"axis": "project"}).json()["items"]]
        first = pa.get(url, params={"limit": 1}).json()
        assert len(first["items"]) == 1 and first["next_cursor"]
        second = pa.get(url, params={"limit": 1, "cursor": first["next_cursor"]}).json()
        assert second["items"] and second["items"][0]["id"] != first["items"][0]["id"]

        assert pa.delete(f"/api/admin/quota-overrides/{oid}").status_code == 204
        for rid in (pid, per_key.json()["id"]):
            assert pa.delete(f"{url}/{rid}").status_code == 204
    with cp.client("viewers") as viewer:
        assert viewer.get(url).status_code == 200
        assert viewer.post(url, json=base).status_code == 403


# -- passthrough and the kill switch --------------------------------------------------------------

def test_passthrough_settings_round_trip(cp: ControlPlane, admin: httpx.Client) -> None:
    url = "/api/admin/passthrough"
    provider_id = one(cp, "SELECT id::text FROM provider WHERE name = 'mock-openai'")[0]
    with watch_signals(cp) as seen:
        created = admin.post(url, json={"tier": "provider_instance", "provider_id": provider_id,
                                        "bypass_cache": True, "reason": "upstream cache bug INC-42"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        seen.wait("passthrough", sid)
    setting = created.json()
    assert setting["live"] is True and setting["created_by"] == cp.user_id("super-admins")
    expires = dt.datetime.fromisoformat(setting["expires_at"])
    assert dt.timedelta(minutes=59) < expires - dt.datetime.fromisoformat(setting["created_at"]) <= dt.timedelta(
        hours=1)
    assert admin.post(url, json={"tier": "provider_instance", "provider_id": provider_id, "bypass_hooks": True,
                                 "reason": "again"}).status_code == 409
    assert sid in [s["id"] for s in admin.get(url, params={"live": "true"}).json()["items"]]

    too_long = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=9)).isoformat()
    cases = {
        "expires_at": {"tier": "global", "bypass_hooks": True, "reason": "r", "expires_at": too_long},
        "bypass_hooks": {"tier": "global", "reason": "r"},
        "bypass_normalize": {"tier": "global", "bypass_normalize": True, "reason": "r"},
        "provider_adapter": {"tier": "provider_type", "bypass_hooks": True, "reason": "r"},
        "provider_id": {"tier": "global", "provider_id": provider_id, "bypass_hooks": True, "reason": "r"},
    }
    for name, body in cases.items():
        assert error_field(admin.post(url, json=body)) == name, body

    reverted = admin.patch(f"{url}/{sid}", json={"reverted": True})
    assert reverted.status_code == 200, reverted.text
    assert reverted.json()["live"] is False and reverted.json()["reverted_at"] is not None
    assert admin.patch(f"{url}/{sid}", json={"reason": "late"}).status_code == 409
    assert sid not in [s["id"] for s in admin.get(url, params={"live": "true"}).json()["items"]]
    assert admin.delete(f"{url}/{sid}").status_code == 204
    with cp.client("provider-admins") as pa:
        # Passthrough is installation-wide: not an org's provider-admins' switch.
        assert pa.post(url, json={"tier": "global", "bypass_hooks": True, "reason": "r"}).status_code == 403


def test_kill_switch_is_written_where_the_gateway_reads_it(cp: ControlPlane, admin: httpx.Client) -> None:
    url = "/api/admin/kill-switch"
    assert admin.get(url).json()["engaged"] is False
    assert error_field(admin.put(url, json={"engaged": True})) == "reason"
    with watch_signals(cp) as seen:
        engaged = admin.put(url, json={"engaged": True, "reason": "hook outage"})
        assert engaged.status_code == 200, engaged.text
        seen.wait("kill_switch", None)
    assert engaged.json()["engaged"] is True and engaged.json()["changed_by"] == cp.user_id("super-admins")
    # The gateway's reader: system_metadata.kill_switch through policy.config.KillSwitch.
    stored = from_row(KillSwitch, one(cp, "SELECT value FROM system_metadata WHERE key = 'kill_switch'")[0])
    assert stored.engaged and stored.reason == "hook outage" and stored.changed_at is not None
    assert admin.get(url).json()["engaged"] is True
    entry = audit_row(cp, engaged)
    assert entry["before"]["engaged"] is False and entry["after"]["engaged"] is True
    with cp.client("viewers") as viewer:
        assert viewer.put(url, json={"engaged": False}).status_code == 403
    released = admin.put(url, json={"engaged": False})
    assert released.status_code == 200 and released.json()["engaged"] is False


def test_another_tenants_rules_and_quotas_are_out_of_reach(cp: ControlPlane, admin: httpx.Client) -> None:
    other = admin.post("/api/admin/orgs", json={"slug": unique("other"), "name": "Other tenant"})
    assert other.status_code == 201, other.text
    other_id = other.json()["id"]
    rule = admin.post("/api/admin/routing-rules", json={
        "org_id": other_id, "name": "their rule", "priority": 10**6, "strategy": {"model": "mock-gemini"}})
    policy = admin.post("/api/admin/quota-policies", json={
        "name": "their budget", "scope_org_id": other_id, "axis": "organization", "org_id": other_id,
        "unit": "cost_micro_usd", "window_kind": "calendar", "calendar_period": "month", "hard_limit": 10**9})
    assert rule.status_code == 201 and policy.status_code == 201, (rule.text, policy.text)
    override = admin.post("/api/admin/quota-overrides", json={
        "quota_policy_id": policy.json()["id"], "org_id": other_id, "hard_limit": 1, "reason": "x"})
    assert override.status_code == 201, override.text

    with cp.client("provider-admins") as pa:
        assert pa.get(f"/api/admin/routing-rules/{rule.json()['id']}").status_code == 403
        assert pa.get(f"/api/admin/quota-policies/{policy.json()['id']}").status_code == 403
        assert pa.get(f"/api/admin/quota-overrides/{override.json()['id']}").status_code == 403
        assert pa.patch(f"/api/admin/quota-overrides/{override.json()['id']}", json={"hard_limit": 5}).status_code \
            == 403
        assert rule.json()["id"] not in pa.get("/api/admin/routing-rules").text
        assert policy.json()["id"] not in pa.get("/api/admin/quota-policies").text
        assert override.json()["id"] not in pa.get("/api/admin/quota-overrides").text
        assert pa.post("/api/admin/routing-rules/simulate", json={"model": "mock-gpt", "org_id": other_id}
                       ).status_code == 403
        # Aiming a quota of one's own scope at another tenant's org is refused, without saying more.
        assert error_field(pa.post("/api/admin/quota-policies", json={
            "name": "x", "scope_org_id": cp.org_id, "axis": "organization", "org_id": other_id, "unit": "requests",
            "window_kind": "calendar", "calendar_period": "day", "hard_limit": 1})) == "org_id"
    # A simulation for the demo org neither applies nor shows the other tenant's rule.
    demo = admin.post("/api/admin/routing-rules/simulate", json={"model": "mock-gpt", "org_id": cp.org_id}).json()
    assert rule.json()["id"] not in [r["id"] for r in demo["rules"]]
    theirs = admin.post("/api/admin/routing-rules/simulate", json={"model": "mock-gpt", "org_id": other_id}).json()
    assert theirs["rule"]["id"] == rule.json()["id"] and theirs["targets"][0]["model"] == "mock-gemini"
