"""``/api/my/*`` against a real control plane: profile, personal keys, usage and budget."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis
from tests.controlplane.conftest import PASSWORD, ControlPlane

from nexus import signals
from nexus.crypto import secretfiles, vkeys


def _client(cp: ControlPlane, token: str) -> httpx.Client:
    return httpx.Client(base_url=cp.url, headers={"authorization": f"Bearer {token}"}, timeout=30)


def _developer(cp: ControlPlane) -> tuple[httpx.Client, str]:
    """A fresh developer (each test its own, so usage and budgets do not mix)."""
    email, user_id = cp.add_user("developers")
    return _client(cp, cp.login(email)), user_id


def _create_key(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/my/virtual-keys", json={"name": "laptop", **extra})
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


class _Signals:
    """Collects ``nexus.config.changed.virtual_key`` payloads with nats-py (an independent client)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids: list[str | None] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import nats as nats_py

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats_py.connect(self.url)

        async def on_message(msg: Any) -> None:
            self.ids.append(signals.decode(msg.subject, msg.data)[1])

        await nc.subscribe(signals.subject("virtual_key"), cb=on_message)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.drain()

    def __enter__(self) -> _Signals:
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe to NATS"
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def wait_for(self, key_id: str, timeout: float = 10) -> None:
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        while key_id not in self.ids:
            assert dt.datetime.now() < deadline, f"no virtual_key signal for {key_id}: {self.ids}"
            threading.Event().wait(0.05)


def test_profile(cp: ControlPlane) -> None:
    client, user_id = _developer(cp)
    profile = client.get("/api/my/profile")
    assert profile.status_code == 200, profile.text
    body = profile.json()
    assert (body["id"], body["org_path"], body["groups"]) == (user_id, "demo", ["developers"])
    assert "password_hash" not in body and "totp" not in profile.text


def test_personal_key_round_trip(cp: ControlPlane) -> None:
    client, user_id = _developer(cp)
    with _Signals(cp.nats_url) as seen:
        created = _create_key(client, allowed_models=["mock-*"])
        seen.wait_for(created["id"])
    key = created["key"]
    assert key.startswith("nvk_") and created["key_prefix"] == vkeys.display_prefix(key)
    with psycopg.connect(cp.db_url) as conn:
        row = conn.execute("SELECT key_hash, kind, owner_user_id::text, org_id::text, created_by::text, "
                           "allowed_models FROM virtual_key WHERE id = %s", (created["id"],)).fetchone()
    assert row is not None
    assert bytes(row[0]) == vkeys.hash_key(secretfiles.key_hmac_secret(cp.secrets), key)
    assert row[1:] == ("personal", user_id, cp.org_id, user_id, ["mock-*"])

    listed = client.get("/api/my/virtual-keys")
    assert listed.status_code == 200 and key not in listed.text
    assert [k["id"] for k in listed.json()["items"]] == [created["id"]]
    with psycopg.connect(cp.db_url) as conn:
        audit = conn.execute("SELECT resource_nrn, outcome, after FROM admin_audit_log "
                             "WHERE action = 'my:virtual-key.create' ORDER BY seq DESC LIMIT 1").fetchone()
    assert audit is not None
    assert audit[0] == f"nrn:nexus:gateway:org/demo:virtual-key/{created['id']}" and audit[1] == "success"
    assert key not in orjson.dumps(audit[2]).decode() and audit[2]["key_prefix"] == created["key_prefix"]

    with _Signals(cp.nats_url) as seen:
        revoked = client.post(f"/api/my/virtual-keys/{created['id']}/revoke")
        assert revoked.status_code == 200, revoked.text
        seen.wait_for(created["id"])
    assert revoked.json()["revoked_at"] is not None and revoked.json()["revoked_reason"] == "revoked by owner"
    again = client.post(f"/api/my/virtual-keys/{created['id']}/revoke")
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]




def test_cannot_see_or_revoke_someone_elses_key(cp: ControlPlane) -> None:
    owner, _ = _developer(cp)
    other, _ = _developer(cp)
    key = _create_key(owner)
    response = other.post(f"/api/my/virtual-keys/{key['id']}/revoke")
    assert response.status_code in (403, 404), response.text
    assert key["id"] not in other.get("/api/my/virtual-keys").text
    with psycopg.connect(cp.db_url) as conn:
        assert conn.execute("SELECT revoked_at FROM virtual_key WHERE id = %s", (key["id"],)).fetchone() == (None,)


def test_someone_elses_key_is_not_found(cp: ControlPlane) -> None:
    owner, _ = _developer(cp)
    other, _ = _developer(cp)
    key = _create_key(owner)
    assert other.post(f"/api/my/virtual-keys/{key['id']}/revoke").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"name": ""}, "name"),
    ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "k", "allowed_models": ["has space"]}, "allowed_models"),
    ({"name": "k", "owner_user_id": str(uuid.uuid4())}, "owner_user_id"),
])
def test_personal_key_validation(cp: ControlPlane, body: dict[str, Any], field: str) -> None:
    response = cp.client("developers").post("/api/my/virtual-keys", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field)


def test_usage_counts_only_my_keys(cp: ControlPlane) -> None:
    client, user_id = _developer(cp)
    key = _create_key(client)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [  # (bucket, key, user, model, requests, input, output, cost)
        (today, key["id"], user_id, "mock-small", 3, 100, 50, 700),
        (today, key["id"], user_id, "mock-large", 1, 10, 5, 300),
        (today - dt.timedelta(days=2), key["id"], user_id, "mock-small", 2, 20, 10, 100),
        (today - dt.timedelta(days=20), key["id"], user_id, "mock-small", 9, 90, 90, 900),
        (today, str(uuid.uuid4()), str(uuid.uuid4()), "mock-small", 50, 5000, 5000, 99999),
    ]
    with psycopg.connect(cp.db_url) as conn:
        for bucket, key_id, uid, model, requests, tin, tout, cost in rows:
            conn.execute(
                "INSERT INTO usage_rollup_1d (bucket, source, org_id, virtual_key_id, user_id, provider, model, "
                "requests, input_tokens, output_tokens, cost_micro_usd) VALUES "
                "(%s, 'gateway', %s, %s, %s, 'mock', %s, %s, %s, %s, %s)",
                (bucket, cp.org_id, key_id, uid, model, requests, tin, tout, cost))
    usage = client.get("/api/my/usage", params={"days": 7})
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert body["days"] == 7
    assert body["totals"] == {"requests": 6, "input_tokens": 130, "output_tokens": 65, "cost_micro_usd": 1100}
    assert [(line["day"], line["model"], line["requests"]) for line in body["by_day_model"]] == [
        (f"{today:%Y-%m-%d}", "mock-large", 1), (f"{today:%Y-%m-%d}", "mock-small", 3),
        (f"{today - dt.timedelta(days=2):%Y-%m-%d}", "mock-small", 2)]
    assert client.get("/api/my/usage", params={"days": 30}).json()["totals"]["requests"] == 15


def test_usage_window_validation(cp: ControlPlane) -> None:
    response = cp.client("developers").get("/api/my/usage", params={"days": 0})
    assert response.status_code == 422 and response.json()["error"]["message"].startswith("days")


@pytest.fixture
def checker(valkey_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey_url)
    yield client
    client.close()


def test_budget_reads_the_gateway_counters(cp: ControlPlane, checker: redis.Redis) -> None:
    client, user_id = _developer(cp)
    key = _create_key(client)
    with psycopg.connect(cp.db_url) as conn:
        conn.execute("UPDATE virtual_key SET rpm = 60 WHERE id = %s", (key["id"],))
        policy_id = conn.execute(
            "INSERT INTO quota_policy (name, axis, user_id, unit, window_kind, calendar_period, soft_limit, "
            "hard_limit) VALUES (%s, 'user', %s, 'total_tokens', 'calendar', 'day', 500, 1000) RETURNING id::text",
            (f"daily-{uuid.uuid4().hex[:6]}", user_id)).fetchone()[0]  # type: ignore[index]
        org_policy = conn.execute(
            "INSERT INTO quota_policy (name, axis, org_id, unit, window_kind, calendar_period, hard_limit) "
            "VALUES (%s, 'organization', %s, 'requests', 'calendar', 'day', 5) RETURNING id::text",
            (f"org-{uuid.uuid4().hex[:6]}", cp.org_id)).fetchone()[0]  # type: ignore[index]
    day = dt.datetime.now(dt.UTC)
    counter = f"nexus:quota:c:{policy_id}:{user_id}:d{day:%Y%m%d}"
    checker.set(counter, 650, ex=120)
    try:
        response = client.get("/api/my/budget")
    finally:
        checker.delete(counter)
        with psycopg.connect(cp.db_url) as conn:
            conn.execute("DELETE FROM quota_policy WHERE id IN (%s, %s)", (policy_id, org_policy))
    if dt.datetime.now(dt.UTC).date() != day.date():
        pytest.skip("crossed midnight UTC during the test")
    assert response.status_code == 200, response.text
    lines = {line["policy_id"]: line for line in response.json()["policies"]}
    mine = lines[policy_id]
    assert (mine["axis"], mine["subject"], mine["used"], mine["remaining"], mine["soft_limit_reached"]) == (
        "user", user_id, 650, 350, True)
    assert mine["window"]["kind"] == "calendar" and mine["window"]["period"] == "day"
    assert lines["key-rpm"]["subject"] == key["id"] and lines["key-rpm"]["hard_limit"] == 60
    assert org_policy not in lines  # organisation budgets are the admins' view, not a personal one


def test_api_keys_have_no_my_area(cp: ControlPlane) -> None:
    admin = cp.client("super-admins")
    created = admin.post("/api/admin/api-keys", json={"org_id": cp.org_id, "name": "robot"})
    assert created.status_code == 201, created.text
    robot = _client(cp, created.json()["key"])
    response = robot.get("/api/my/profile")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_second_factor_enrolment_confirm_sign_in_and_removal(cp: ControlPlane) -> None:
    from nexus.controlplane.auth import totp

    email, _user_id = cp.add_user("viewers")
    me = httpx.Client(base_url=cp.url, headers={"authorization": f"Bearer {cp.login(email)}"}, timeout=30)
    started = me.post("/api/my/mfa")
    assert started.status_code == 201, started.text
    secret = started.json()["secret"]
    assert started.json()["otpauth_uri"].startswith("otpauth://totp/")
    assert secret not in me.get("/api/my/profile").text
    step = totp.current_step()
    assert me.post("/api/my/mfa/confirm", json={"code": "000000" if totp.code_at(secret, step) != "000000"
                                                 else "111111"}).status_code == 422
    assert me.post("/api/my/mfa/confirm", json={"code": "12345"}).json()["error"]["details"]["field"] == "code"
    confirmed = me.post("/api/my/mfa/confirm", json={"code": totp.code_at(secret, step)})
    assert confirmed.status_code == 200 and confirmed.json() == {"enabled": True}, confirmed.text
    assert me.get("/api/my/profile").json()["mfa_enabled"] is True
    assert me.post("/api/my/mfa").status_code == 409  # one active factor at a time

    # Sign-in now asks for the code; the code already used to confirm cannot be replayed.
    without = httpx.post(cp.url + "/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert without.status_code in (401, 403) and "access_token" not in without.text
    replayed = httpx.post(cp.url + "/api/auth/login", timeout=30,
                          json={"email": email, "password": PASSWORD, "totp": totp.code_at(secret, step)})
    assert replayed.status_code in (401, 403)
    signed_in = httpx.post(cp.url + "/api/auth/login", timeout=30,
                           json={"email": email, "password": PASSWORD, "totp": totp.code_at(secret, step + 1)})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["access_token"]

    # Removing an active factor needs a fresh code from it.
    assert me.post("/api/my/mfa/remove", json={"code": totp.code_at(secret, step + 1)}).status_code == 422
    with psycopg.connect(cp.db_url) as conn:  # stand in for the next 30 s window instead of sleeping through it
        conn.execute("UPDATE app_user SET totp_last_step = totp_last_step - 2 WHERE email = %s", (email,))
    removed = me.post("/api/my/mfa/remove", json={"code": totp.code_at(secret, step + 1)})
    assert removed.status_code == 200 and removed.json() == {"enabled": False}, removed.text
    assert cp.login(email)
