"""sd_notify over ``NOTIFY_SOCKET`` and the watchdog pinger.

sdnotify sends the datagrams, but wrapped: it reads ``NOTIFY_SOCKET`` from
``os.environ`` itself, swallows send errors (unless ``debug``) and raises
``TypeError`` in debug mode when the variable is absent.  Here the address comes
from the environment mapping we are given, an absent socket means "not under
systemd" and every call is a no-op, and a broken socket is logged once.  The watchdog interval
comes from ``WATCHDOG_USEC`` (honouring ``WATCHDOG_PID``) and pings are sent
from the Trio loop, so a stuck event loop stops pinging and gets restarted.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import sdnotify
import trio

log = logging.getLogger("nexus.runtime")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self._failed = False
        self._notifier = _connect(self.socket_path) if self.socket_path else None
        self.watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def send(self, *lines: str) -> None:
        if self._notifier is None:
            return
        try:
            self._notifier.notify("\n".join(lines))
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
                self._failed = True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str = "draining") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    async def watchdog(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ping ``WATCHDOG=1`` at half the interval systemd asked for; returns at once if none."""
        task_status.started()
        if self._notifier is None or not self.watchdog_usec:
            return
        period = self.watchdog_usec / 2_000_000
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(period)


class _SdNotifier(sdnotify.SystemdNotifier):  # type: ignore[misc]
    def __init__(self, sock: socket.socket) -> None:  # sdnotify's own __init__ reads os.environ
        self.debug = True
        self.socket = sock


def _connect(address: str) -> _SdNotifier | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        # A leading "@" names a socket in the abstract namespace.
        sock.connect("\0" + address[1:] if address.startswith("@") else address)
    except OSError as exc:
        sock.close()
        log.warning("cannot reach NOTIFY_SOCKET %s: %s", address, exc)
        return None
    return _SdNotifier(sock)


def _watchdog_usec(env: Mapping[str, str]) -> int:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return 0
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return 0
    try:
        return max(int(raw), 0)
    except ValueError:
        log.warning("ignoring bad WATCHDOG_USEC=%r", raw)
        return 0
