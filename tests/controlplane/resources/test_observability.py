"""Admin API, observability area: traffic search / detail / payloads over events inserted with SQL, analytics
over inserted rollup rows, the admin audit log and its verification, alerts."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import orjson
import psycopg
import pytest
from tests.controlplane.conftest import ControlPlane

from nexus.audit.spill import FsSpillStore

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def uuid7_at(ts: dt.datetime) -> tuple[uuid.UUID, dt.datetime]:
    """A UUIDv7 minted at ``ts`` and the ``ts`` its rows carry (millisecond precision)."""
    ms = (ts - EPOCH) // dt.timedelta(milliseconds=1)
    rand = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value), EPOCH + dt.timedelta(milliseconds=ms)


def make_org(conn: psycopg.Connection[Any], parent: str | None = None) -> tuple[str, str]:
    slug = f"org-{uuid.uuid4().hex[:8]}"
    row = conn.execute("INSERT INTO organization (slug, name, parent_id) VALUES (%s, %s, "
                       "(SELECT id FROM organization WHERE path = %s)) RETURNING id::text, path",
                       (slug, slug, parent)).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def client_in(cp: ControlPlane, group: str, org_path: str) -> httpx.Client:
    email, _ = cp.add_user(group, org_path=org_path)
    return httpx.Client(base_url=cp.url, headers={"authorization": f"Bearer {cp.login(email)}"}, timeout=30)


def error_field(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["details"]["field"])


@attrs.frozen
class Event:
    id: str
    ts: dt.datetime
    org: str | None
    request_id: str
    model: str
    provider: str
    decision: str | None
    status: int
    cost: int
    project_id: str | None = None


@attrs.define
class Traffic:
    prefix: str
    other_path: str
    other_id: str
    child_id: str
    events: list[Event]
    old: Event
    payload_event: Event
    spilled_sha: str

    def ids(self, where: Any = lambda e: True) -> set[str]:
        return {e.id for e in self.events if where(e)}


@pytest.fixture(scope="module")
def traffic(cp: ControlPlane) -> Traffic:
    prefix = f"req-{uuid.uuid4().hex[:10]}"
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(cp.db_url) as conn:
        other_id, other_path = make_org(conn)
        child_id, _ = make_org(conn, parent="demo")
        specs: list[tuple[str | None, str, str, str | None, int, int]] = [
            (cp.org_id, "mock-gpt", "mock-openai", "approve", 200, 1500),
            (cp.org_id, "mock-gpt", "mock-openai", "block", 403, 0),
            (cp.org_id, "mock-claude", "mock-anthropic", None, 200, 9000),
            (cp.org_id, "mock-claude", "mock-anthropic", "redact", 500, 300),
            (cp.org_id, "mock-gemini", "mock-gemini", None, 200, 70),
            (child_id, "mock-gpt", "mock-openai", None, 200, 20),
            (other_id, "mock-gpt", "mock-openai", None, 200, 5),
            (other_id, "mock-claude", "mock-anthropic", "block", 403, 0),
            (None, "mock-gpt", "mock-openai", None, 200, 1),
        ]
        events = []
        for n, (org, model, provider, decision, status, cost) in enumerate(specs):
            event_id, ts = uuid7_at(now - dt.timedelta(minutes=10 * (n + 1)))
            events.append(Event(str(event_id), ts, org, f"{prefix}-{n}", model, provider, decision, status, cost,
                                cp.project_id if n == 0 else None))
        old_id, old_ts = uuid7_at(now - dt.timedelta(hours=30))
        old = Event(str(old_id), old_ts, cp.org_id, f"{prefix}-old", "mock-gpt", "mock-openai", None, 200, 1)
        hooks = [{"hook": "block-secrets", "decision": "approve", "duration_us": 80, "rule_ids": []},
                 {"hook": "pii", "decision": "redact", "duration_us": 120, "rule_ids": ["PII_EMAIL"]}]
        attempts = [{"provider": "mock-openai", "model": "gpt-4o", "outcome": "error", "status_code": 503},
                    {"provider": "mock-openai", "model": "gpt-4o", "outcome": "ok", "status_code": 200}]
        for e in [*events, old]:
            conn.execute(
                "INSERT INTO traffic_event (event_id, ts, source, org_id, project_id, request_id, trace_id, method, "
                "host, path, status_code, requested_model, provider, model, input_tokens, output_tokens, "
                "cost_micro_usd, request_decision, request_hooks, attempts, attempt_log, source_ip, rule_ids) "
                "VALUES (%s, %s, 'gateway', %s, %s, %s, %s, 'POST', 'gw', '/v1/chat/completions', %s, %s, %s, %s, "
                "10, 20, %s, %s, %s, 2, %s, '10.1.2.3', %s)",
                (e.id, e.ts, e.org, e.project_id, e.request_id, f"trace-{e.request_id}", e.status, e.model,
                 e.provider, e.model, e.cost, e.decision, orjson.dumps(hooks).decode(),
                 orjson.dumps(attempts).decode(), ["PII_EMAIL"] if e.decision == "redact" else []))
        payload_event = events[0]
        spilled = b"x" * 5000
        sha = FsSpillStore(cp.secrets.parent / "state" / "spill").put(spilled).sha256
        conn.execute(
            "INSERT INTO traffic_event_payload (event_id, ts, kind, content_type, size_bytes, body) VALUES "
            "(%s, %s, 'request', 'application/json', 27, %s), (%s, %s, 'response_stream', 'text/event-stream', 3, %s)",
            (payload_event.id, payload_event.ts, b'{"messages": "hello \xc3\xa9"}', payload_event.id,
             payload_event.ts, b"\xff\xfe\x00"))
        conn.execute(
            "INSERT INTO traffic_event_payload (event_id, ts, kind, content_type, size_bytes, truncated, "
            "spill_backend, spill_key, spill_size, spill_sha256) "
            "VALUES (%s, %s, 'response', 'application/json', 9000, true, 'fs', %s, 5000, %s)",
            (payload_event.id, payload_event.ts, sha.hex(), sha))
    return Traffic(prefix, other_path, other_id, child_id, events, old, payload_event, sha.hex())


def search(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/api/admin/traffic", params={k: v for k, v in params.items() if v is not None})


def all_pages(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        response = search(client, cursor=cursor, **params)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


# -- traffic search ---------------------------------------------------------------------------


def test_traffic_search_is_scoped_to_the_callers_org_subtree(cp: ControlPlane, traffic: Traffic) -> None:
    security = cp.client("security-admins")
    items = all_pages(security, q=traffic.prefix)
    demo_tree = {cp.org_id, traffic.child_id}
    assert {i["event_id"] for i in items} == traffic.ids(lambda e: e.org in demo_tree)
    assert [i["ts"] for i in items] == sorted((i["ts"] for i in items), reverse=True)

    other = client_in(cp, "security-admins", traffic.other_path)
    assert {i["event_id"] for i in all_pages(other, q=traffic.prefix)} == traffic.ids(
        lambda e: e.org == traffic.other_id)
    assert search(other, org="demo").status_code == 403
    assert search(security, org=traffic.other_path).status_code == 403
    assert search(security, org="*").status_code == 403
    assert search(security, org="no-such-org").status_code == 404

    everything = all_pages(cp.client("super-admins"), q=traffic.prefix, org="*")
    assert {i["event_id"] for i in everything} == traffic.ids()
    child_only = all_pages(cp.client("super-admins"), q=traffic.prefix, org=f"demo/{_child_slug(cp, traffic)}")
    assert {i["event_id"] for i in child_only} == traffic.ids(lambda e: e.org == traffic.child_id)


def _child_slug(cp: ControlPlane, traffic: Traffic) -> str:
    with psycopg.connect(cp.db_url) as conn:
        return str(conn.execute("SELECT slug FROM organization WHERE id = %s", (traffic.child_id,)).fetchone()[0])  # type: ignore[index]


def test_traffic_search_pages_by_ts_and_event_id(cp: ControlPlane, traffic: Traffic) -> None:
    security = cp.client("security-admins")
    pages = []
    cursor = None
    while True:
        page = search(security, q=traffic.prefix, limit=2, cursor=cursor).json()
        pages.append([i["event_id"] for i in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    flat = [i for p in pages for i in p]
    assert len(flat) == len(set(flat)) == 6 and all(len(p) == 2 for p in pages)
    expected = sorted((e for e in traffic.events if e.org in (cp.org_id, traffic.child_id)),
                      key=lambda e: (e.ts, e.id), reverse=True)
    assert flat == [e.id for e in expected]
    assert error_field(search(security, cursor="garbage")) == "cursor"


@pytest.mark.parametrize(("params", "where"), [
    ({"model": "mock-claude"}, lambda e: e.model == "mock-claude"),
    ({"provider": "mock-openai"}, lambda e: e.provider == "mock-openai"),
    ({"decision": "block"}, lambda e: e.decision == "block"),
    ({"decision": "redact"}, lambda e: e.decision == "redact"),
    ({"status": 500}, lambda e: e.status == 500),
    ({"min_cost_micro_usd": 300}, lambda e: e.cost >= 300),
    ({"source": "proxy"}, lambda e: False),
])
def test_traffic_search_filters(cp: ControlPlane, traffic: Traffic, params: dict[str, Any], where: Any) -> None:
    items = all_pages(cp.client("security-admins"), q=traffic.prefix, **params)
    demo_tree = {cp.org_id, traffic.child_id}
    assert {i["event_id"] for i in items} == traffic.ids(lambda e: e.org in demo_tree and where(e))


def test_traffic_search_by_ids_and_window(cp: ControlPlane, traffic: Traffic) -> None:
    security = cp.client("security-admins")
    first = traffic.events[0]
    assert [i["event_id"] for i in search(security, q=first.request_id).json()["items"]] == [first.id]
    assert [i["event_id"] for i in search(security, q=first.id).json()["items"]] == [first.id]
    assert [i["event_id"] for i in search(security, q=f"trace-{first.request_id}").json()["items"]] == [first.id]
    by_project = search(security, q=traffic.prefix, project_id=cp.project_id).json()["items"]
    assert [i["event_id"] for i in by_project] == [first.id]
    assert by_project[0]["rule_ids"] == [] and by_project[0]["cost_micro_usd"] == first.cost

    # The old event is outside the default 24 h window and inside an explicit one.
    assert traffic.old.id not in {i["event_id"] for i in all_pages(security, q=traffic.prefix)}
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=48)).isoformat()
    assert traffic.old.id in {i["event_id"] for i in all_pages(security, q=traffic.prefix, since=since)}
    until = (traffic.events[2].ts + dt.timedelta(milliseconds=1)).isoformat()
    windowed = all_pages(security, q=traffic.prefix, since=traffic.events[2].ts.isoformat(), until=until)
    assert [i["event_id"] for i in windowed] == [traffic.events[2].id]

    assert error_field(search(security, since="2020-01-01T00:00:00Z", until="2021-01-01T00:00:00Z")) == "since"
    assert error_field(search(security, since="2021-01-02T00:00:00Z", until="2021-01-01T00:00:00Z")) == "since"
    assert error_field(search(security, since="yesterday")) == "since"
    assert error_field(search(security, decision="allow")) == "decision"
    assert error_field(search(security, status=42)) == "status"
    assert error_field(search(security, bogus=1)) == "bogus"
    assert search(cp.client("developers"), q=traffic.prefix).status_code == 403


# -- traffic detail and payloads --------------------------------------------------------------


def test_traffic_detail_has_hook_trace_attempts_and_payload_summaries(cp: ControlPlane, traffic: Traffic) -> None:
    event = traffic.payload_event
    for group in ("security-admins", "viewers", "compliance-team", "provider-admins"):
        response = cp.client(group).get(f"/api/admin/traffic/{event.id}")
        assert response.status_code == 200, (group, response.text)
    detail = response.json()
    assert detail["event_id"] == event.id and detail["request_id"] == event.request_id
    assert detail["source_ip"] == "10.1.2.3" and detail["attempts"] == 2
    assert [h["hook"] for h in detail["request_hooks"]] == ["block-secrets", "pii"]
    assert [a["outcome"] for a in detail["attempt_log"]] == ["error", "ok"]
    assert {p["kind"]: p["stored"] for p in detail["payloads"]} == {
        "request": "inline", "response": "spilled", "response_stream": "inline"}
    assert "body" not in response.text

    security = cp.client("security-admins")
    other_event = next(e for e in traffic.events if e.org == traffic.other_id)
    system_event = next(e for e in traffic.events if e.org is None)
    assert security.get(f"/api/admin/traffic/{other_event.id}").status_code == 403
    assert security.get(f"/api/admin/traffic/{system_event.id}").status_code == 403
    assert cp.client("super-admins").get(f"/api/admin/traffic/{system_event.id}").status_code == 200
    assert security.get(f"/api/admin/traffic/{uuid7_at(dt.datetime.now(dt.UTC))[0]}").status_code == 404
    assert security.get(f"/api/admin/traffic/{uuid.uuid4()}").status_code == 404
    assert security.get("/api/admin/traffic/not-an-id").status_code == 404


def test_traffic_payload_needs_read_payload(cp: ControlPlane, traffic: Traffic) -> None:
    event = traffic.payload_event
    viewer = cp.client("viewers")
    assert viewer.get(f"/api/admin/traffic/{event.id}").status_code == 200
    refused = viewer.get(f"/api/admin/traffic/{event.id}/payload")
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["action"] == "admin:traffic.read-payload"
    assert cp.client("provider-admins").get(f"/api/admin/traffic/{event.id}/payload").status_code == 403

    response = cp.client("security-admins").get(f"/api/admin/traffic/{event.id}/payload")
    assert response.status_code == 200, response.text
    body = response.json()
    payloads = {p["kind"]: p for p in body["payloads"]}
    assert body["event_id"] == event.id
    assert payloads["request"]["body"] == '{"messages": "hello é"}' and payloads["request"]["encoding"] == "utf-8"
    assert payloads["response_stream"]["encoding"] == "base64" and payloads["response_stream"]["body"] == "//4A"
    # The spilled body is read back from the box's spill store, next to its reference.
    assert payloads["response"]["body"] == "x" * 5000 and payloads["response"]["truncated"] is True
    assert payloads["response"]["spill"] == {"backend": "fs", "key": traffic.spilled_sha, "size": 5000,
                                             "sha256": traffic.spilled_sha}
    assert cp.client("compliance-team").get(f"/api/admin/traffic/{event.id}/payload").status_code == 200
    other_event = next(e for e in traffic.events if e.org == traffic.other_id)
    assert cp.client("security-admins").get(f"/api/admin/traffic/{other_event.id}/payload").status_code == 403


# -- analytics --------------------------------------------------------------------------------

DAY = dt.datetime(2020, 3, 1, tzinfo=dt.UTC)
METRICS = ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "cost_micro_usd", "errors", "blocked")


@attrs.frozen
class Rollups:
    rows: list[dict[str, Any]]
    other_id: str
    other_path: str
    child_id: str


@pytest.fixture(scope="module")
def rollups(cp: ControlPlane) -> Rollups:
    """Hourly rows on 2020-03-01 (no other test writes that day), and their daily and 5-minute sums."""
    with psycopg.connect(cp.db_url) as conn:
        other_id, other_path = make_org(conn)
        child_id, _ = make_org(conn, parent="demo")
        conn.execute("DELETE FROM usage_rollup_1h WHERE bucket >= %s AND bucket < %s", (DAY, DAY + dt.timedelta(1)))
        conn.execute("DELETE FROM usage_rollup_1d WHERE bucket = %s", (DAY,))
        conn.execute("DELETE FROM usage_rollup_5m WHERE bucket >= %s AND bucket < %s", (DAY, DAY + dt.timedelta(1)))
        rows = []
        rng = random.Random(7)
        for hour in (0, 1, 5, 23):
            for org, provider, model in ((cp.org_id, "mock-openai", "gpt-4o"), (cp.org_id, "mock-anthropic", "claude"),
                                         (child_id, "mock-openai", "gpt-4o"), (other_id, "mock-openai", "gpt-4o"),
                                         (None, "mock-openai", "gpt-4o")):
                row = {"bucket": DAY + dt.timedelta(hours=hour), "org_id": org, "provider": provider, "model": model,
                       **{m: rng.randrange(0, 1000) for m in METRICS}}
                rows.append(row)
                conn.execute(
                    "INSERT INTO usage_rollup_1h (bucket, source, org_id, provider, model, requests, input_tokens, "
                    "output_tokens, cached_input_tokens, cost_micro_usd, errors, blocked) VALUES "
                    "(%(bucket)s, 'gateway', %(org_id)s, %(provider)s, %(model)s, %(requests)s, %(input_tokens)s, "
                    "%(output_tokens)s, %(cached_input_tokens)s, %(cost_micro_usd)s, %(errors)s, %(blocked)s)", row)
                if hour == 1:
                    conn.execute(
                        "INSERT INTO usage_rollup_5m (bucket, source, org_id, provider, model, requests, "
                        "cost_micro_usd) VALUES (%s, 'gateway', %s, %s, %s, %s, %s)",
                        (row["bucket"] + dt.timedelta(minutes=15), org, provider, model, row["requests"],
                         row["cost_micro_usd"]))
        conn.execute(
            "INSERT INTO usage_rollup_1d (bucket, source, org_id, provider, model, requests, input_tokens, "
            "output_tokens, cached_input_tokens, cost_micro_usd, errors, blocked) "
            "SELECT date_trunc('day', bucket), source, org_id, provider, model, sum(requests), sum(input_tokens), "
            "sum(output_tokens), sum(cached_input_tokens), sum(cost_micro_usd), sum(errors), sum(blocked) "
            "FROM usage_rollup_1h WHERE bucket >= %s AND bucket < %s GROUP BY 1, 2, 3, 4, 5",
            (DAY, DAY + dt.timedelta(1)))
    return Rollups(rows, other_id, other_path, child_id)


def analytics(client: httpx.Client, **params: Any) -> httpx.Response:
    base = {"since": DAY.isoformat(), "until": (DAY + dt.timedelta(days=1)).isoformat()}
    return client.get("/api/admin/analytics", params={**base, **params})


def sums(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {m: sum(r[m] for r in rows) for m in METRICS}


def test_analytics_totals_and_groups_match_the_rollups(cp: ControlPlane, rollups: Rollups) -> None:
    security = cp.client("security-admins")
    mine = [r for r in rollups.rows if r["org_id"] in (cp.org_id, rollups.child_id)]
    hourly = analytics(security)
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    assert body["totals"] == sums(mine) and body["bucket"] == "hour" and body["truncated"] is False
    assert [p["bucket"][:13] for p in body["series"]] == ["2020-03-01T00", "2020-03-01T01", "2020-03-01T05",
                                                          "2020-03-01T23"]
    for point in body["series"]:
        hour = dt.datetime.fromisoformat(point["bucket"])
        assert {m: point[m] for m in METRICS} == sums([r for r in mine if r["bucket"] == hour])
        assert point["provider"] is None and point["org_id"] is None

    grouped = analytics(security, group_by="provider,org").json()
    assert grouped["group_by"] == ["provider", "org"]
    assert len(grouped["series"]) == 4 * 3
    for point in grouped["series"]:
        hour = dt.datetime.fromisoformat(point["bucket"])
        match = [r for r in mine if r["bucket"] == hour and r["provider"] == point["provider"]
                 and r["org_id"] == point["org_id"]]
        assert len(match) == 1 and {m: point[m] for m in METRICS} == sums(match)
        assert point["model"] is None

    daily = analytics(security, bucket="day", group_by="model").json()
    assert [(p["bucket"][:10], p["model"]) for p in daily["series"]] == [("2020-03-01", "claude"),
                                                                          ("2020-03-01", "gpt-4o")]
    for point in daily["series"]:
        assert {m: point[m] for m in METRICS} == sums([r for r in mine if r["model"] == point["model"]])
    assert daily["totals"] == sums(mine)

    five = analytics(security, bucket="5m", since=(DAY + dt.timedelta(hours=1, minutes=3)).isoformat(),
                     until=(DAY + dt.timedelta(hours=2)).isoformat()).json()
    assert five["since"].startswith("2020-03-01T01:00") and len(five["series"]) == 1
    assert five["series"][0]["bucket"].startswith("2020-03-01T01:15")
    assert five["totals"]["requests"] == sum(r["requests"] for r in mine if r["bucket"].hour == 1)


def test_analytics_org_scoping(cp: ControlPlane, rollups: Rollups) -> None:
    other = client_in(cp, "compliance-team", rollups.other_path)
    mine = [r for r in rollups.rows if r["org_id"] == rollups.other_id]
    assert analytics(other).json()["totals"] == sums(mine)
    assert analytics(other, org="demo").status_code == 403
    everyone = analytics(cp.client("super-admins"), org="*", group_by="org").json()
    assert everyone["totals"] == sums(rollups.rows)
    assert None in {p["org_id"] for p in everyone["series"]}
    assert analytics(cp.client("developers")).status_code == 403


def test_analytics_validation(cp: ControlPlane) -> None:
    security = cp.client("security-admins")
    assert error_field(analytics(security, group_by="planet")) == "group_by"
    assert error_field(analytics(security, group_by="org,")) == "group_by"
    assert error_field(analytics(security, bucket="week")) == "bucket"
    assert error_field(analytics(security, bucket="5m", since="2020-01-01T00:00:00Z",
                                 until="2020-02-01T00:00:00Z")) == "since"
    assert error_field(analytics(security, limit=0)) == "limit"
    default = security.get("/api/admin/analytics")
    assert default.status_code == 200, default.text
    window = dt.datetime.fromisoformat(default.json()["until"]) - dt.datetime.fromisoformat(default.json()["since"])
    assert dt.timedelta(hours=24) <= window <= dt.timedelta(hours=26)
    truncated = analytics(cp.client("super-admins"), org="*", group_by="org,provider", limit=2).json()
    assert truncated["truncated"] is True and len(truncated["series"]) == 2


# -- alerts -----------------------------------------------------------------------------------


@pytest.fixture
def alerts(cp: ControlPlane) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    ids: dict[str, str] = {}
    with psycopg.connect(cp.db_url) as conn:
        other_id, _ = make_org(conn)
        for name, org, severity in (("mine", cp.org_id, "warning"), ("critical", cp.org_id, "critical"),
                                    ("system", None, "critical"), ("other", other_id, "warning")):
            ids[name] = str(conn.execute(
                "INSERT INTO alert (kind, severity, dedup_key, title, org_id) VALUES (%s, %s, %s, %s, %s) "
                "RETURNING id", (f"test.{tag}", severity, f"{tag}-{name}", f"Alert {name}", org)).fetchone()[0])  # type: ignore[index]
    yield ids


def test_alert_list_get_ack_and_resolve(cp: ControlPlane, alerts: dict[str, str]) -> None:
    security = cp.client("security-admins")
    kind = security.get(f"/api/admin/alerts/{alerts['mine']}").json()["kind"]
    listed = security.get("/api/admin/alerts", params={"kind": kind}).json()["items"]
    assert {a["id"] for a in listed} == {alerts["mine"], alerts["critical"]}
    critical = security.get("/api/admin/alerts", params={"kind": kind, "severity": "critical"}).json()["items"]
    assert [a["id"] for a in critical] == [alerts["critical"]]
    assert security.get(f"/api/admin/alerts/{alerts['system']}").status_code == 403
    assert security.get(f"/api/admin/alerts/{alerts['other']}").status_code == 403
    everything = cp.client("super-admins").get("/api/admin/alerts", params={"kind": kind, "org": "*"}).json()
    assert {a["id"] for a in everything["items"]} == set(alerts.values())

    assert cp.client("provider-admins").post(f"/api/admin/alerts/{alerts['mine']}/ack").status_code == 403
    acked = security.post(f"/api/admin/alerts/{alerts['mine']}/ack")
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == cp.user_id("security-admins")
    again = security.post(f"/api/admin/alerts/{alerts['mine']}/ack").json()
    assert again["acknowledged_at"] == acked.json()["acknowledged_at"]
    opened = security.get("/api/admin/alerts", params={"kind": kind, "status": "open"}).json()["items"]
    assert [a["id"] for a in opened] == [alerts["critical"]]

    resolved = security.post(f"/api/admin/alerts/{alerts['mine']}/resolve")
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"] == cp.user_id("security-admins")
    assert security.post(f"/api/admin/alerts/{alerts['mine']}/resolve").status_code == 409
    assert security.post(f"/api/admin/alerts/{alerts['mine']}/ack").status_code == 409
    with psycopg.connect(cp.db_url) as conn:
        row = conn.execute("SELECT action, org_id::text, before->>'status', after->>'status' FROM admin_audit_log "
                           "WHERE resource_nrn = %s AND outcome = 'success' ORDER BY seq DESC LIMIT 1",
                           (f"nrn:nexus:platform:org/demo:alert/{alerts['mine']}",)).fetchone()
    assert row == ("admin:alert.update", cp.org_id, "acknowledged", "resolved")


# -- admin audit log --------------------------------------------------------------------------


def test_audit_log_lists_the_writes_made(cp: ControlPlane, alerts: dict[str, str]) -> None:
    security = cp.client("security-admins")
    assert security.post(f"/api/admin/alerts/{alerts['critical']}/ack").status_code == 200
    assert security.post(f"/api/admin/alerts/{alerts['critical']}/resolve").status_code == 200
    nrn = f"nrn:nexus:platform:org/demo:alert/{alerts['critical']}"
    listed = security.get("/api/admin/audit-log", params={"resource": nrn})
    assert listed.status_code == 200, listed.text
    entries = listed.json()["items"]
    assert [(e["action"], e["after"]["status"]) for e in entries] == [("admin:alert.update", "resolved"),
                                                                       ("admin:alert.update", "acknowledged")]
    first = entries[0]
    assert first["actor_id"] == cp.user_id("security-admins") and first["actor_type"] == "user"
    assert first["org_id"] == cp.org_id and first["outcome"] == "success"
    assert len(first["hash"]) == 64 and first["seq"] > entries[1]["seq"]

    page = security.get("/api/admin/audit-log", params={"resource": nrn, "limit": 1}).json()
    assert [e["seq"] for e in page["items"]] == [first["seq"]] and page["next_cursor"] == str(first["seq"])
    rest = security.get("/api/admin/audit-log", params={"resource": nrn, "cursor": page["next_cursor"]}).json()
    assert [e["seq"] for e in rest["items"]] == [entries[1]["seq"]] and rest["next_cursor"] is None

    mine = security.get("/api/admin/audit-log", params={"actor": cp.user_id("security-admins"),
                                                        "action": "admin:alert.", "limit": 1000}).json()["items"]
    assert {e["seq"] for e in entries} <= {e["seq"] for e in mine}
    since = security.get("/api/admin/audit-log", params={"resource": nrn, "since": first["ts"]}).json()["items"]
    assert [e["seq"] for e in since] == [first["seq"]]
    denied = security.get("/api/admin/audit-log", params={"outcome": "denied", "limit": 5}).json()["items"]
    assert all(e["outcome"] == "denied" for e in denied)

    assert security.get("/api/admin/audit-log", params={"org": "*"}).status_code == 403
    assert cp.client("developers").get("/api/admin/audit-log").status_code == 403
    assert error_field(security.get("/api/admin/audit-log", params={"cursor": "x"})) == "cursor"
    assert error_field(security.get("/api/admin/audit-log", params={"outcome": "maybe"})) == "outcome"


def test_audit_log_verifies(cp: ControlPlane) -> None:
    for group in ("security-admins", "compliance-team"):
        response = cp.client(group).get("/api/admin/audit/verify")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["ok"] is True and report["problems"] == [] and report["problems_total"] == 0
        assert report["rows_checked"] >= 1 and len(report["last_hash"]) == 64
    assert cp.client("viewers").get("/api/admin/audit/verify").status_code == 403
