"""NatsClient against real nats-server processes, cross-checked with nats-py.

The shared server (``nats_url``) serves tests that only use subjects of their
own (a random prefix each); tests that stop, freeze or configure a server (auth,
TLS) run a private one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nexus.devstack import services
from nexus.net.nats.client import NatsClient
from nexus.net.nats.errors import (
    NatsConnectionError,
    NatsNoResponders,
    NatsPayloadTooLarge,
    NatsTimeout,
)


def _prefix() -> str:
    return f"test.nats.{uuid.uuid4().hex[:12]}"


async def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    # Polls: the client has no event for "state changed", and tests should not add one.
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"still false after {seconds} s")


class ConfiguredNats(services.PrivateNats):
    """A private nats-server with extra command-line options (auth, TLS)."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        super().__init__(root)
        self.extra = extra

    def _command(self) -> list[str]:
        return [*super()._command(), *self.extra]


@pytest.fixture
def configured_nats(private_dir: Path) -> Iterator[Callable[[list[str]], ConfiguredNats]]:
    servers: list[ConfiguredNats] = []

    def start(extra: list[str]) -> ConfiguredNats:
        server = ConfiguredNats(private_dir / f"nats-{len(servers)}", extra)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


async def test_publish_reaches_nats_py(client: NatsClient, peer: Any) -> None:
    p = _prefix()
    sub = await peer.do(peer.nc.subscribe(f"{p}.>"))
    await peer.do(peer.nc.flush())
    await client.publish(f"{p}.plain", b"hello")
    await client.publish(f"{p}.hdr", b"\x00bin\r\n", headers={"Nats-Msg-Id": "m-1", "X-Trace": "a b"})
    await client.publish(f"{p}.reply", b"", reply=f"{p}.back")
    first = await peer.do(sub.next_msg(timeout=5))
    assert (first.subject, first.data, first.headers) == (f"{p}.plain", b"hello", None)
    second = await peer.do(sub.next_msg(timeout=5))
    assert (second.subject, second.data) == (f"{p}.hdr", b"\x00bin\r\n")
    assert second.headers == {"Nats-Msg-Id": "m-1", "X-Trace": "a b"}
    third = await peer.do(sub.next_msg(timeout=5))
    assert (third.subject, third.reply, third.data) == (f"{p}.reply", f"{p}.back", b"")


async def test_nats_py_publish_reaches_subscription(client: NatsClient, peer: Any) -> None:
    p = _prefix()
    wild = client.subscribe(f"{p}.*")
    exact = client.subscribe(f"{p}.b")
    await client.flush()
    await peer.do(peer.nc.publish(f"{p}.a", b"one"))
    await peer.do(peer.nc.publish(f"{p}.b", b"two", headers={"K": "v"}, reply=f"{p}.r"))
    await peer.do(peer.nc.flush())
    one = await wild.next_msg(5)
    assert (one.subject, one.reply, one.headers, one.data) == (f"{p}.a", None, None, b"one")
    two = await wild.next_msg(5)
    assert (two.subject, two.reply, two.headers, two.data) == (f"{p}.b", f"{p}.r", {"K": "v"}, b"two")
    assert (await exact.next_msg(5)).data == b"two"
    with pytest.raises(NatsTimeout):
        await exact.next_msg(0.1)


async def test_queue_group_delivers_each_message_once(client: NatsClient, peer: Any) -> None:
    p = _prefix()
    members = [client.subscribe(f"{p}.work", queue="workers") for _ in range(3)]
    await client.flush()
    for i in range(30):
        await peer.do(peer.nc.publish(f"{p}.work", str(i).encode()))
    await peer.do(peer.nc.flush())
    await client.flush()
    got: list[bytes] = []
    for member in members:
        with trio.move_on_after(0.2):
            async for msg in member:
                got.append(msg.data)
    assert sorted(got, key=int) == [str(i).encode() for i in range(30)]


async def test_echo_receives_own_publish(client: NatsClient) -> None:
    p = _prefix()
    with client.subscribe(f"{p}.signal") as sub:
        await client.flush()
        await client.publish(f"{p}.signal", b"changed")
        assert (await sub.next_msg(5)).data == b"changed"


async def test_burst_arrives_complete_and_in_order(client: NatsClient, peer: Any) -> None:
    p = _prefix()
    sub = await peer.do(peer.nc.subscribe(f"{p}.burst"))
    await peer.do(peer.nc.flush())
    for i in range(5000):
        await client.publish(f"{p}.burst", b"%d" % i)
    await client.flush(5)

    def collect() -> list[bytes]:
        return [peer.run(sub.next_msg(timeout=5)).data for _ in range(5000)]

    assert await trio.to_thread.run_sync(collect) == [b"%d" % i for i in range(5000)]


async def test_publisher_waits_for_writer_past_max_pending_bytes(
    nats_url: str, nursery: trio.Nursery
) -> None:
    client = NatsClient(nats_url, max_pending_bytes=32 * 1024)
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    p = _prefix()
    payload = b"x" * 4096
    with client.subscribe(f"{p}.bulk", max_pending=2000) as sub:
        await client.flush()
        for _ in range(1000):
            await client.publish(f"{p}.bulk", payload)
            assert len(client._out) <= 32 * 1024 + len(payload) + 64
        await client.flush(5)
        for _ in range(1000):
            assert (await sub.next_msg(5)).data == payload
    await client.aclose()


async def test_request_reply_both_ways(client: NatsClient, peer: Any) -> None:
    p = _prefix()

    async def responder(msg: Any) -> None:
        await msg.respond(b"pong:" + msg.data)

    await peer.do(peer.nc.subscribe(f"{p}.py-service", cb=responder))
    await peer.do(peer.nc.flush())
    replies = []
    async with trio.open_nursery() as nursery:
        async def ask(i: int) -> None:
            replies.append((await client.request(f"{p}.py-service", b"%d" % i, timeout=5)).data)

        for i in range(20):
            nursery.start_soon(ask, i)
    assert sorted(replies) == sorted(b"pong:%d" % i for i in range(20))

    service = client.subscribe(f"{p}.trio-service")
    await client.flush()

    async def serve() -> None:
        async for msg in service:
            assert msg.reply is not None
            await client.publish(msg.reply, msg.data.upper(), headers={"Served-By": "trio"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        answer = await peer.do(peer.nc.request(f"{p}.trio-service", b"shout", timeout=5))
        assert answer.data == b"SHOUT"
        assert answer.headers == {"Served-By": "trio"}
        service.unsubscribe()


async def test_request_with_headers_and_no_responders(client: NatsClient) -> None:
    p = _prefix()
    start = trio.current_time()
    with pytest.raises(NatsNoResponders):
        await client.request(f"{p}.nobody", b"?", timeout=5)
    assert trio.current_time() - start < 1.0

    with client.subscribe(f"{p}.echo-headers") as sub:
        await client.flush()

        async def serve() -> None:
            msg = await sub.next_msg(5)
            assert msg.reply is not None and msg.headers is not None
            await client.publish(msg.reply, msg.data, headers={**msg.headers, "Seen": "yes"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            reply = await client.request(f"{p}.echo-headers", b"body", headers={"Trace": "t-1"}, timeout=5)
        assert (reply.data, reply.headers, reply.status) == (b"body", {"Trace": "t-1", "Seen": "yes"}, None)


async def test_request_timeout(client: NatsClient) -> None:
    p = _prefix()
    with client.subscribe(f"{p}.silent") as silent:
        await client.flush()
        start = trio.current_time()
        with pytest.raises(NatsTimeout):
            await client.request(f"{p}.silent", b"?", timeout=0.3)
        assert 0.3 <= trio.current_time() - start < 2.0
        assert (await silent.next_msg(1)).data == b"?"
    # The timed-out request left nothing registered.
    assert client._replies == {}


async def test_unsubscribe_ends_iteration(client: NatsClient) -> None:
    p = _prefix()
    sub = client.subscribe(f"{p}.x")
    await client.flush()
    await client.publish(f"{p}.x", b"before")
    await client.flush()
    await trio.sleep(0.05)
    sub.unsubscribe()
    await client.publish(f"{p}.x", b"after")
    await client.flush()
    assert [m.data async for m in sub] == [b"before"]


async def test_full_subscription_drops_and_counts(client: NatsClient) -> None:
    p = _prefix()
    with client.subscribe(f"{p}.flood", max_pending=2) as sub:
        await client.flush()
        for i in range(10):
            await client.publish(f"{p}.flood", b"%d" % i)
        await client.flush()
        await _eventually(lambda: sub.dropped == 8)
        assert [(await sub.next_msg(1)).data for _ in range(2)] == [b"0", b"1"]
        # The connection is unaffected.
        await client.publish(f"{p}.flood", b"later")
        assert (await sub.next_msg(5)).data == b"later"


async def test_oversized_payload_and_bad_subject_are_refused_locally(client: NatsClient) -> None:
    limit = int(client.server_info["max_payload"])
    with pytest.raises(NatsPayloadTooLarge):
        await client.publish("test.nats.big", b"x" * (limit + 1))
    with pytest.raises(ValueError, match="invalid NATS subject"):
        await client.publish("bad subject", b"")
    with pytest.raises(ValueError, match="invalid NATS subject"):
        client.subscribe("bad\r\nsubject")
    await client.flush()
    assert client.state.ok


async def test_down_server_does_not_block_start(nursery: trio.Nursery) -> None:
    port = services.free_port()
    client = NatsClient(f"nats://127.0.0.1:{port}", connect_timeout=0.5)
    assert (client.state.ok, client.state.detail) == (False, "not connected")
    with trio.fail_after(1):
        await nursery.start(client.run)
    assert not await client.wait_ready(0.3)
    assert not client.state.ok
    assert "failed" in client.state.detail
    with trio.fail_after(0.5):
        with pytest.raises(NatsConnectionError):
            await client.publish("test.nats.x", b"")
        with pytest.raises(NatsConnectionError):
            await client.request("test.nats.x", b"", timeout=10)
        with pytest.raises(NatsConnectionError):
            await client.flush(10)
    # A subscription outlives connection failures; closing the client ends it.
    sub = client.subscribe("test.nats.later")
    with trio.fail_after(2):
        await client.aclose()
    assert client.state.detail == "closed"
    assert [m async for m in sub] == []


async def test_state_and_wait_ready(nats_url: str, nursery: trio.Nursery) -> None:
    client = NatsClient(nats_url)
    assert not client.state.ok
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    assert client.state.ok and client.is_connected
    assert client.state.detail.startswith("connected to nats://")
    assert client.server_info["headers"] is True
    async with client:
        pass
    assert not client.state.ok and client.state.detail == "closed"
    assert not await client.wait_ready(0.05)


async def test_subscriptions_survive_server_restart(
    private_nats: services.PrivateNats, nursery: trio.Nursery, nats_py: Callable[[str], Any]
) -> None:
    client = NatsClient(private_nats.url, reconnect_min=0.05, reconnect_max=0.5)
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    sub = client.subscribe("restart.>")
    queue_sub = client.subscribe("restart.q", queue="grp")
    await client.flush()
    up_since = client.state.since

    # A request in flight when the server goes away fails at once, not at its timeout.
    async def pending_request() -> None:
        start = trio.current_time()
        with pytest.raises(NatsConnectionError):
            await client.request("restart.q", b"will never be answered", timeout=30)
        assert trio.current_time() - start < 5

    async with trio.open_nursery() as inner:
        inner.start_soon(pending_request)
        assert (await queue_sub.next_msg(5)).data == b"will never be answered"
        assert (await sub.next_msg(5)).data == b"will never be answered"
        await trio.to_thread.run_sync(private_nats.stop)

    await _eventually(lambda: not client.state.ok)
    assert client.state.since > up_since
    with trio.fail_after(0.5), pytest.raises(NatsConnectionError):
        await client.publish("restart.a", b"while down")
    made_while_down = client.subscribe("later.x")

    await trio.to_thread.run_sync(private_nats.start)
    assert await client.wait_ready(10)
    assert client.state.ok
    other = await trio.to_thread.run_sync(nats_py, private_nats.url)
    await other.do(other.nc.publish("restart.b", b"after restart"))
    await other.do(other.nc.publish("restart.q", b"to the group"))
    await other.do(other.nc.publish("later.x", b"new"))
    await other.do(other.nc.flush())
    got = {(await sub.next_msg(5)).data, (await sub.next_msg(5)).data}
    assert got == {b"after restart", b"to the group"}
    assert (await queue_sub.next_msg(5)).data == b"to the group"
    assert (await made_while_down.next_msg(5)).data == b"new"
    # Our own publishes flow again too.
    await client.publish("restart.c", b"mine")
    assert (await sub.next_msg(5)).data == b"mine"
    await client.aclose()


async def test_frozen_server_is_detected_by_keepalive(
    private_nats: services.PrivateNats, nursery: trio.Nursery
) -> None:
    client = NatsClient(private_nats.url, ping_interval=0.3, connect_timeout=0.5, reconnect_max=0.3)
    await nursery.start(client.run)
    assert await client.wait_ready(5)
    assert private_nats.proc is not None
    pid = private_nats.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # The socket stays open; only the missing PONG tells.
        await _eventually(lambda: not client.state.ok, 3)
        assert "stale" in client.state.detail
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await client.wait_ready(5)
    await client.flush()
    await client.aclose()


async def test_user_password_and_token_auth(
    configured_nats: Callable[[list[str]], ConfiguredNats], nursery: trio.Nursery
) -> None:
    server = configured_nats(["--user", "nexus", "--pass", "s3cr:et@"])
    good = NatsClient(f"nats://nexus:s3cr%3Aet%40@127.0.0.1:{server.port}")
    await nursery.start(good.run)
    assert await good.wait_ready(5)
    bad = NatsClient(f"nats://nexus:wrong@127.0.0.1:{server.port}", reconnect_min=1.0)
    await nursery.start(bad.run)
    await _eventually(lambda: "Authorization Violation" in bad.state.detail)
    assert not bad.state.ok
    await good.aclose()
    await bad.aclose()

    token_server = configured_nats(["--auth", "tok-123"])
    tok = NatsClient(f"nats://tok-123@127.0.0.1:{token_server.port}")
    await nursery.start(tok.run)
    assert await tok.wait_ready(5)
    with tok.subscribe("auth.check") as sub:
        await tok.flush()
        await tok.publish("auth.check", b"ok")
        assert (await sub.next_msg(5)).data == b"ok"
    await tok.aclose()


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, written as PEM files: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_to = now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1)
    ip_san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nexus test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid_from).not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid_from).not_valid_after(valid_to)
        .add_extension(ip_san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def test_tls(
    configured_nats: Callable[[list[str]], ConfiguredNats], private_dir: Path, nursery: trio.Nursery
) -> None:
    ca, cert, key = _certificates(private_dir / "tls")
    server = configured_nats(["--tls", "--tlscert", str(cert), "--tlskey", str(key)])
    trusted = ssl.create_default_context(cafile=str(ca))

    for url in (f"tls://127.0.0.1:{server.port}", f"nats://127.0.0.1:{server.port}"):
        client = NatsClient(url, ssl_context=trusted)
        await nursery.start(client.run)
        assert await client.wait_ready(5), client.state.detail
        with client.subscribe("tls.check") as sub:
            await client.flush()
            await client.publish("tls.check", b"secret")
            assert (await sub.next_msg(5)).data == b"secret"
        await client.aclose()

    # Verification is on: the system trust store does not know the test CA.
    untrusted = NatsClient(f"tls://127.0.0.1:{server.port}", reconnect_min=1.0)
    await nursery.start(untrusted.run)
    await _eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in untrusted.state.detail)
    assert not untrusted.state.ok
    await untrusted.aclose()


def test_url_forms() -> None:
    with pytest.raises(ValueError, match="nats:// or tls://"):
        NatsClient("http://127.0.0.1:4222")
    with pytest.raises(ValueError, match="no host"):
        NatsClient("nats://:4222")
    target = NatsClient("nats://127.0.0.1")._target
    assert (target.port, target.tls, target.user, target.token) == (4222, False, None, None)
