"""Socket activation parsing and the notify/watchdog wrapper, without systemd."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
import trio

from nexus.runtime import activation
from nexus.runtime.notify import Notifier


def test_no_activation_environment() -> None:
    env: dict[str, str] = {}
    assert activation.take_inherited(env).by_name == {}


def test_listen_pid_for_another_process_is_ignored_and_cleared() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDNAMES": "http"}
    assert activation.take_inherited(env).by_name == {}
    assert env == {}


def test_bad_listen_fds() -> None:
    with pytest.raises(activation.ActivationError):
        activation.take_inherited({"LISTEN_FDS": "x", "LISTEN_PID": str(os.getpid())})


def test_names_map_to_fds_from_3() -> None:
    # Put two listening sockets on fds 3 and 4, as systemd would.
    a, b = activation.open_listener("127.0.0.1", 0), activation.open_listener("127.0.0.1", 0)
    saved = [os.dup(3), os.dup(4)]
    try:
        os.dup2(a.fileno(), 3)
        os.dup2(b.fileno(), 4)
        env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "http:admin"}
        inherited = activation.take_inherited(env)
        assert sorted(inherited.by_name) == ["admin", "http"]
        http = inherited.pop("http")
        assert http is not None and http.fileno() == 3
        assert http.getsockname() == a.getsockname()
        admin = activation.listener_for(inherited, "admin", "127.0.0.1", 1, only_one=False)
        assert admin.getsockname() == b.getsockname()
        for sock in (http, admin):
            sock.detach()
    finally:
        os.dup2(saved[0], 3)
        os.dup2(saved[1], 4)
        for fd in saved:
            os.close(fd)
        a.close()
        b.close()


def test_bind_when_nothing_inherited() -> None:
    sock = activation.listener_for(activation.Inherited(), "http", "127.0.0.1", 0, only_one=True)
    with sock:
        assert sock.getsockname()[0] == "127.0.0.1"


def _notify_socket() -> tuple[socket.socket, str]:
    path = str(Path(tempfile.mkdtemp()) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock, path


def test_notifier_sends_datagrams() -> None:
    sock, path = _notify_socket()
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        notifier.ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        notifier.stopping()
        assert sock.recv(4096).startswith(b"STOPPING=1")


def test_notifier_without_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready()


def test_notifier_survives_a_vanished_socket() -> None:
    sock, path = _notify_socket()
    sock.close()
    os.unlink(path)
    Notifier({"NOTIFY_SOCKET": path}).ready()


async def test_watchdog_pings_at_half_the_interval() -> None:
    sock, path = _notify_socket()
    with sock:
        sock.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
        async with trio.open_nursery() as nursery:
            await nursery.start(notifier.watchdog)
            await trio.sleep(0.35)
            nursery.cancel_scope.cancel()
        pings = []
        while True:
            try:
                pings.append(sock.recv(100))
            except BlockingIOError:
                break
        # t=0, 0.1, 0.2, 0.3: pinged every WATCHDOG_USEC / 2.
        assert pings.count(b"WATCHDOG=1") in (3, 4, 5)


def test_watchdog_for_another_pid_is_off() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_usec == 0
