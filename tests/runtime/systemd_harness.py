"""Start a daemon the way systemd does: a listening socket as fd 3 with ``LISTEN_FDS=1`` and ``LISTEN_PID``,
and a ``NOTIFY_SOCKET`` datagram socket owned by the test."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs

# Runs in the child between fork and the daemon: moves the socket to fd 3 and names the pid, as systemd does.
_EXEC_WRAPPER = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=sys.argv[2])
os.execv(sys.argv[3], sys.argv[3:])
"""


@attrs.define
class Activated:
    proc: subprocess.Popen[bytes]
    port: int
    notify: socket.socket
    log: Path
    messages: list[str] = attrs.field(factory=list)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if message.startswith(prefix) or f"\n{prefix}" in message:
                    self.messages.remove(message)
                    return message
            ready, _, _ = select.select([self.notify], [], [], 0.05)
            if ready:
                self.messages.append(self.notify.recv(4096).decode())
            elif self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        raise AssertionError(
            f"no {prefix!r} within {timeout}s; got {self.messages}; log: {self.log.read_text()[-3000:]}"
        )

    def received(self, prefix: str) -> bool:
        while select.select([self.notify], [], [], 0)[0]:
            self.messages.append(self.notify.recv(4096).decode())
        return any(m.startswith(prefix) or f"\n{prefix}" in m for m in self.messages)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


def start(daemon: str, config: Path, fd_name: str = "http", extra_env: dict[str, str] | None = None) -> Activated:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    notify_path = str(Path(tempfile.mkdtemp()) / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    log = config.parent / f"{daemon}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "LISTEN_", "NOTIFY_", "WATCHDOG_"))}
    env.update({"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"}, **(extra_env or {}))
    nexus = str(Path(sys.executable).parent / "nexus")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WRAPPER, str(listener.fileno()), fd_name, nexus, daemon,
             "--config", str(config)],
            pass_fds=[listener.fileno()], env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    listener.close()  # the daemon holds it now, as under systemd
    return Activated(proc, port, notify, log)
