"""ValkeyClient against real servers, checked with redis-py as an independent client.

The shared server (``valkey_url``) serves the tests that only read and write
their own keys (a unique prefix each, deleted afterwards); tests that stop a
server, flush its scripts, need a password or TLS run a private one.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nexus.devstack import services
from nexus.net.resp.client import ValkeyClient
from nexus.net.resp.codec import (
    Script,
    ValkeyAuthError,
    ValkeyConnectionError,
    ValkeyError,
    ValkeyProtocolError,
)

PASSWORD = "t0p-secret-pw"


@pytest.fixture
def checker(valkey_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey_url)
    yield client
    client.close()


@pytest.fixture
def prefix(checker: redis.Redis) -> Iterator[str]:
    prefix = f"test:resp:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(checker.scan_iter(match=prefix + "*"))
    if keys:
        checker.delete(*keys)


def _unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def _connections(checker: redis.Redis, client_name: str) -> list[dict[str, Any]]:
    return [c for c in checker.client_list() if c["name"] == client_name]


async def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    # Polls, because most checks ask the server (CLIENT LIST) what it sees.
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await trio.sleep(0.02)
    raise AssertionError(f"still false after {seconds}s: {check}")


async def _fails_within(call: Awaitable[Any], seconds: float, match: str) -> ValkeyConnectionError:
    start = trio.current_time()
    with pytest.raises(ValkeyConnectionError, match=match) as info:
        await call
    assert trio.current_time() - start < seconds
    return info.value


def _with_db(url: str, db: int) -> str:
    return f"{url.rpartition('/')[0]}/{db}"


async def test_commands_and_reply_types(valkey_url: str, prefix: str, checker: redis.Redis) -> None:
    binary = b"\x00bin\r\nary\xff"
    big = bytes(range(256)) * 4096  # 1 MiB: the reply spans many reads
    async with ValkeyClient(valkey_url) as client:
        assert await client.execute(b"SET", prefix + "bin", binary) == b"OK"
        assert checker.get(prefix + "bin") == binary
        checker.set(prefix + "from-redis-py", "hello")
        assert await client.execute("GET", prefix + "from-redis-py") == b"hello"
        assert await client.execute(b"GET", prefix + "missing") is None
        assert await client.execute(b"INCRBY", prefix + "n", 41) == 41
        assert await client.execute(b"INCRBYFLOAT", prefix + "f", 0.25) == b"0.25"
        assert await client.execute(b"RPUSH", prefix + "l", b"a", "b", 3) == 3
        assert await client.execute(b"LRANGE", prefix + "l", 0, -1) == [b"a", b"b", b"3"]
        assert checker.lrange(prefix + "l", 0, -1) == [b"a", b"b", b"3"]
        assert await client.execute(b"SET", prefix + "big", big) == b"OK"
        assert await client.execute(b"GET", prefix + "big") == big
        assert checker.strlen(prefix + "big") == len(big)

        with pytest.raises(ValkeyError) as info:
            await client.execute(b"LPUSH", prefix + "bin", b"x")
        assert info.value.code == "WRONGTYPE"
        # An error reply leaves the connection in step: the next reply is ours.
        assert await client.execute(b"GET", prefix + "bin") == binary


async def test_select_database_from_url(valkey_url: str) -> None:
    key = f"test:resp:{uuid.uuid4().hex}"
    db5 = redis.Redis.from_url(_with_db(valkey_url, 5))
    try:
        async with ValkeyClient(_with_db(valkey_url, 5)) as client:
            await client.execute(b"SET", key, b"in-five")
        assert db5.get(key) == b"in-five"
        with redis.Redis.from_url(_with_db(valkey_url, 0)) as db0:
            assert db0.get(key) is None
    finally:
        db5.delete(key)
        db5.close()


async def test_pipeline_returns_errors_in_place(valkey_url: str, prefix: str, checker: redis.Redis) -> None:
    async with ValkeyClient(valkey_url) as client:
        assert await client.pipeline([]) == []
        replies = await client.pipeline([
            [b"SET", prefix + "s", b"v"],
            [b"LPUSH", prefix + "s", b"x"],
            [b"GET", prefix + "s"],
            [b"INCRBY", prefix + "n", 5],
        ])
        assert replies[0] == b"OK"
        assert isinstance(replies[1], ValkeyError)
        assert replies[1].code == "WRONGTYPE"
        assert replies[2:] == [b"v", 5]
        # The commands after the error ran.
        assert checker.get(prefix + "n") == b"5"

        # Errors nested inside a reply (EXEC) come back in place too.
        replies = await client.pipeline([
            [b"MULTI"],
            [b"INCR", prefix + "n"],
            [b"LPUSH", prefix + "s", b"x"],
            [b"INCR", prefix + "n"],
            [b"EXEC"],
        ])
        assert replies[:4] == [b"OK", b"QUEUED", b"QUEUED", b"QUEUED"]
        exec_reply = replies[4]
        assert exec_reply[0] == 6
        assert isinstance(exec_reply[1], ValkeyError)
        assert exec_reply[2] == 7
        assert checker.get(prefix + "n") == b"7"


async def test_long_pipeline(valkey_url: str, prefix: str, checker: redis.Redis) -> None:
    async with ValkeyClient(valkey_url) as client:
        count = 5000
        replies = await client.pipeline([[b"INCR", prefix + "n"]] * count)
        assert replies == list(range(1, count + 1))
        values = await client.pipeline([[b"SET", prefix + str(i), b"x" * i] for i in range(300)])
        assert values == [b"OK"] * 300
        got = await client.pipeline([[b"GET", prefix + str(i)] for i in range(300)])
        assert got == [b"x" * i for i in range(300)]
    assert checker.get(prefix + "n") == str(count).encode()


async def test_concurrent_tasks_share_the_pool(valkey_url: str, prefix: str, checker: redis.Redis) -> None:
    name = _unique_name()
    key = prefix + "total"
    async with ValkeyClient(valkey_url, pool_size=8, client_name=name) as client:

        async def worker(amount: int) -> None:
            for _ in range(50):
                await client.execute(b"INCRBY", key, amount)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for amount in range(1, 101):
                    nursery.start_soon(worker, amount)
        assert await client.execute(b"GET", key) == str(50 * sum(range(1, 101))).encode()
        assert 1 <= len(_connections(checker, name)) <= 8
    assert checker.get(key) == str(50 * 5050).encode()


async def test_evalsha_loads_unknown_scripts(valkey_url: str, prefix: str, checker: redis.Redis) -> None:
    # The unique comment gives a SHA the shared server has never seen.
    script = Script(f"-- {prefix}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1]) * 10")
    failing = Script(f"-- {prefix}\nreturn redis.call('INCR', KEYS[1])")
    async with ValkeyClient(valkey_url) as client:
        assert checker.script_exists(script.sha) == [False]
        assert await client.evalsha(script, [prefix + "n"], [4]) == 40
        assert checker.script_exists(script.sha) == [True]
        assert await client.evalsha(script, [prefix + "n"], [1]) == 50
        assert checker.get(prefix + "n") == b"5"
        checker.set(prefix + "text", "not a number")
        with pytest.raises(ValkeyError, match="not an integer"):
            await client.evalsha(failing, [prefix + "text"])


async def test_evalsha_recovers_from_script_flush(private_valkey: services.PrivateValkey) -> None:
    admin = redis.Redis.from_url(private_valkey.url)
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    async with ValkeyClient(private_valkey.url) as client:
        await client.load_script(script)
        assert admin.script_exists(script.sha) == [True]
        admin.script_flush()
        admin.config_resetstat()
        assert await client.evalsha(script, [b"k"], [5]) == 5
        assert await client.evalsha(script, [b"k"], [2]) == 7
    stats = admin.info("commandstats")
    # One reload after the flush, then the cached script again.
    assert stats["cmdstat_script|load"]["calls"] == 1
    assert admin.get("k") == b"7"
    admin.close()


async def test_command_timeout_drops_only_that_connection(
    valkey_url: str, prefix: str, checker: redis.Redis
) -> None:
    name = _unique_name()
    async with ValkeyClient(valkey_url, pool_size=2, command_timeout=0.3, client_name=name) as client:

        async def blocked() -> None:
            await _fails_within(client.execute(b"BLPOP", prefix + "q", 5), 1.5, "no reply .* within 0.3s")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            nursery.start_soon(blocked)
        # The server sees those connections closed, not left blocked in BLPOP.
        await _eventually(lambda: not any(c["cmd"] == "blpop" for c in _connections(checker, name)))

        # A caller's own cancellation drops the connection the same way.
        with trio.move_on_after(0.1) as scope:
            await client.execute(b"BLPOP", prefix + "q", 5)
        assert scope.cancelled_caught
        await _eventually(lambda: not any(c["cmd"] == "blpop" for c in _connections(checker, name)))

        # Both pool slots came back: the pool still runs two commands at once.
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(client.execute, b"BLPOP", prefix + "q2", 0.1)
        assert [await client.execute(b"INCR", prefix + "n") for _ in range(3)] == [1, 2, 3]
        assert len(_connections(checker, name)) <= 2


async def test_callers_wait_for_a_free_connection(valkey_url: str, prefix: str) -> None:
    client = ValkeyClient(valkey_url, pool_size=1, command_timeout=3.0)
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(client.execute, b"BLPOP", prefix + "q", 0.6)
        await trio.sleep(0.05)
        start = trio.current_time()
        assert await client.execute(b"PING") == b"PONG"
        assert trio.current_time() - start >= 0.3

        nursery.start_soon(client.execute, b"BLPOP", prefix + "q", 1)
        await trio.sleep(0.05)
        # The timeout is read when a call starts: this waiter gets 0.3 s.
        client.command_timeout = 0.3
        await _fails_within(client.execute(b"PING"), 1.0, "could not get a connection")


async def test_dead_pooled_connection_fails_fast_then_is_replaced(
    valkey_url: str, checker: redis.Redis
) -> None:
    name = _unique_name()
    async with ValkeyClient(valkey_url, client_name=name) as client:
        assert await client.execute(b"PING") == b"PONG"
        [before] = _connections(checker, name)
        checker.client_kill_filter(_id=before["id"])
        await _fails_within(client.execute(b"PING"), 0.5, "closed by the server|lost")
        assert await client.execute(b"PING") == b"PONG"
        [after] = _connections(checker, name)
        assert after["id"] != before["id"]


async def test_run_starts_while_down_and_connects_later(private_dir: Path) -> None:
    port = services.free_port()
    client = ValkeyClient(f"redis://127.0.0.1:{port}/0", health_interval=0.1, backoff_max=0.2)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(0.5):
                await nursery.start(client.run)
            await _eventually(lambda: "cannot connect" in client.state.detail)
            assert not client.state.ok
            assert not await client.wait_ready(0.1)
            await _fails_within(client.execute(b"PING"), 0.2, "unavailable: .*cannot connect")

            server = services.PrivateValkey(private_dir / "late", port=port)
            try:
                await trio.to_thread.run_sync(server.start)
                assert await client.wait_ready(5)
                assert client.state.ok
                assert await client.execute(b"PING") == b"PONG"
            finally:
                await trio.to_thread.run_sync(server.stop)
            await client.aclose()
        # Reaching here within fail_after means run() returned on its own after aclose.
    await _fails_within(client.execute(b"PING"), 0.1, "client closed")


async def test_without_run_commands_connect_on_demand(private_dir: Path) -> None:
    port = services.free_port()
    async with ValkeyClient(f"redis://127.0.0.1:{port}/0", pool_size=1, command_timeout=0.5) as client:
        # Each failed connect gives its pool slot back, or the second call would wait it out.
        for _ in range(3):
            await _fails_within(client.execute(b"PING"), 0.3, "cannot connect to 127.0.0.1")
        server = services.PrivateValkey(private_dir / "on-demand", port=port)
        try:
            await trio.to_thread.run_sync(server.start)
            assert await client.execute(b"PING") == b"PONG"
        finally:
            await trio.to_thread.run_sync(server.stop)
        assert client.state.detail == "not connected"


async def test_reconnects_after_server_restart(private_valkey: services.PrivateValkey) -> None:
    name = _unique_name()
    admin = redis.Redis.from_url(private_valkey.url)
    client = ValkeyClient(private_valkey.url, health_interval=0.2, backoff_max=0.3, client_name=name)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            assert await client.wait_ready(5)
            # Several pooled connections, all of which die with the server.
            async with trio.open_nursery() as inner:
                for _ in range(4):
                    inner.start_soon(client.execute, b"BLPOP", b"q", 0.05)
            assert len(_connections(admin, name)) >= 2

            await trio.to_thread.run_sync(private_valkey.stop)
            await _eventually(lambda: not client.state.ok)
            for _ in range(3):
                await _fails_within(client.execute(b"PING"), 0.2, "unavailable")

            await trio.to_thread.run_sync(private_valkey.start)
            assert await client.wait_ready(10)
            # No stale pooled connection survives the restart: the first command works.
            assert await client.execute(b"SET", b"after", b"restart") == b"OK"
            assert admin.get(b"after") == b"restart"
            await client.aclose()
    admin.close()


class _PasswordValkey(services.PrivateValkey):
    def _command(self) -> list[str]:
        return [*super()._command(), "--requirepass", PASSWORD]


async def test_auth_and_select(private_dir: Path) -> None:
    server = _PasswordValkey(private_dir / "auth")
    await trio.to_thread.run_sync(server.start)
    base = f"127.0.0.1:{server.port}"
    admin = redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
    try:
        admin.acl_setuser("alice", enabled=True, passwords=["+alice-pw"], keys=["*"], commands=["+@all"])
        async with ValkeyClient(f"redis://:{PASSWORD}@{base}/0") as client:
            await client.execute(b"SET", b"k", b"default-user")
        assert admin.get("k") == b"default-user"

        async with ValkeyClient(f"valkey://alice:alice-pw@{base}/3") as client:
            assert await client.execute(b"ACL", b"WHOAMI") == b"alice"
            await client.execute(b"SET", b"k", b"alice-in-3")
        with redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD, db=3) as db3:
            assert db3.get("k") == b"alice-in-3"

        async with ValkeyClient(f"redis://:wrong-pw@{base}/0") as client:
            error = await _fails_within(client.execute(b"PING"), 1.0, "authentication .* failed: WRONGPASS")
            assert isinstance(error, ValkeyAuthError)
            assert "wrong-pw" not in str(error)
        async with ValkeyClient(f"redis://{base}/0") as client:
            error = await _fails_within(client.execute(b"PING"), 1.0, "authentication .* failed: NOAUTH")
            assert isinstance(error, ValkeyAuthError)

        client = ValkeyClient(f"redis://:wrong-pw@{base}/0", backoff_max=0.2)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                await _eventually(lambda: "WRONGPASS" in client.state.detail)
                assert not await client.wait_ready(0.1)
                await client.aclose()
    finally:
        admin.close()
        await trio.to_thread.run_sync(server.stop)


def _mint_tls(directory: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    hour = datetime.timedelta(hours=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "resp test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - hour).not_valid_after(now + hour)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - hour).not_valid_after(now + hour)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return ca_path, cert_path, key_path


class _TlsValkey(services.PrivateValkey):
    def __init__(self, root: Path, cert: Path, key: Path) -> None:
        super().__init__(root)
        self.cert, self.key = cert, key

    def _command(self) -> list[str]:
        command = super()._command()
        command[command.index("--port") + 1] = "0"
        return [*command, "--tls-port", str(self.port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(self.key), "--tls-auth-clients", "no"]


async def test_tls_verifies_the_server(private_dir: Path) -> None:
    ca, cert, key = _mint_tls(private_dir / "pki")
    server = _TlsValkey(private_dir / "tls", cert, key)
    await trio.to_thread.run_sync(server.start)
    try:
        url = f"rediss://127.0.0.1:{server.port}/0"
        async with ValkeyClient(url, ssl_context=ssl.create_default_context(cafile=str(ca))) as client:
            assert await client.execute(b"SET", b"k", b"over-tls") == b"OK"
        with redis.Redis(host="127.0.0.1", port=server.port, ssl=True, ssl_ca_certs=str(ca)) as checker:
            assert checker.get("k") == b"over-tls"
        # The system trust store does not know our CA: verification is on by default.
        async with ValkeyClient(url, connect_timeout=1.0) as client:
            await _fails_within(client.execute(b"PING"), 2.0, "CERTIFICATE_VERIFY_FAILED")
    finally:
        await trio.to_thread.run_sync(server.stop)


async def _serve(nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]) -> str:
    listeners: list[trio.SocketListener] = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    return f"redis://127.0.0.1:{listeners[0].socket.getsockname()[1]}/0"


async def test_servers_that_do_not_speak_resp() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await trio.sleep_forever()

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        async with ValkeyClient(await _serve(nursery, garbage)) as client:
            error = await _fails_within(client.execute(b"PING"), 1.0, "handshake .* failed: Protocol error")
            assert isinstance(error, ValkeyProtocolError)
        async with ValkeyClient(await _serve(nursery, hang_up)) as client:
            await _fails_within(client.execute(b"PING"), 1.0, "closed by the server")
        async with ValkeyClient(await _serve(nursery, silent), connect_timeout=0.2) as client:
            await _fails_within(client.execute(b"PING"), 1.0, "timed out after 0.2s")
        nursery.cancel_scope.cancel()


async def test_aclose_closes_every_connection(valkey_url: str, checker: redis.Redis) -> None:
    name = _unique_name()
    client = ValkeyClient(valkey_url, client_name=name)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            assert await client.wait_ready(5)
            async with trio.open_nursery() as inner:
                for _ in range(3):
                    inner.start_soon(client.execute, b"PING")
            assert len(_connections(checker, name)) >= 2  # the health connection plus pooled ones
            await client.aclose()
    await _eventually(lambda: not _connections(checker, name))
    assert client.state.detail == "closed"
    await _fails_within(client.execute(b"PING"), 0.1, "client closed")


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        ValkeyClient("redis://h", pool_size=0)
    with pytest.raises(ValueError, match="command_timeout"):
        ValkeyClient("redis://h", command_timeout=0)
    with pytest.raises(ValueError, match="rediss"):
        ValkeyClient("redis://h", ssl_context=ssl.create_default_context())
    with pytest.raises(ValueError, match="one word"):
        ValkeyClient("redis://h", client_name="two words")
    with pytest.raises(ValueError, match="scheme"):
        ValkeyClient("memcached://h")
