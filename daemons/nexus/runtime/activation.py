"""systemd socket activation (``sd_listen_fds`` semantics) and listener creation.

systemd passes listening sockets as file descriptors starting at 3, with
``LISTEN_FDS`` (how many), ``LISTEN_PID`` (which process they are for) and
``LISTEN_FDNAMES`` (colon-separated names from ``FileDescriptorName=``).  We
take them once at start, clear the variables so child processes do not think the
sockets are theirs, and mark the fds close-on-exec.

Resource handling: ``take_inherited`` hands ownership of the sockets to the
caller; ``open_listener`` returns a socket the caller owns and must close.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

import attrs

SD_LISTEN_FDS_START = 3


class ActivationError(RuntimeError):
    """The activation environment is inconsistent (bad numbers, wrong socket type)."""


@attrs.define
class Inherited:
    """Sockets passed by the service manager, by ``FileDescriptorName=``."""

    by_name: dict[str, list[socket.socket]] = attrs.field(factory=dict)

    def pop(self, name: str) -> socket.socket | None:
        socks = self.by_name.get(name)
        if not socks:
            return None
        sock = socks.pop(0)
        if not socks:
            del self.by_name[name]
        return sock

    def close_unused(self) -> list[str]:
        names = sorted(self.by_name)
        for socks in self.by_name.values():
            for sock in socks:
                sock.close()
        self.by_name.clear()
        return names


def take_inherited(environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Inherited:
    env = os.environ if environ is None else environ
    inherited = Inherited()
    raw_pid, raw_fds = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    names = env.get("LISTEN_FDNAMES", "")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if raw_fds is None:
        return inherited
    try:
        count = int(raw_fds)
        pid = int(raw_pid) if raw_pid is not None else None
    except ValueError as exc:
        raise ActivationError(f"bad LISTEN_FDS/LISTEN_PID: {raw_fds!r}/{raw_pid!r}") from exc
    # The variables leak to children of the process they were meant for; those must ignore them.
    if pid is not None and pid != os.getpid():
        return inherited
    name_list = names.split(":") if names else []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        name = name_list[i] if i < len(name_list) and name_list[i] else "unknown"
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            raise ActivationError(f"inherited fd {fd} ({name}) is not a stream socket")
        inherited.by_name.setdefault(name, []).append(sock)
    return inherited


def open_listener(host: str, port: int, backlog: int = 4096) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def listener_for(inherited: Inherited, fd_name: str, host: str, port: int, *, only_one: bool) -> socket.socket:
    """The inherited socket named ``fd_name``; with a single unnamed socket passed (``only_one``), that one;
    else a freshly bound socket."""
    sock = inherited.pop(fd_name)
    if sock is None and only_one:
        sock = inherited.pop("unknown")
    if sock is None:
        return open_listener(host, port)
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    addr = sock.getsockname()
    if isinstance(addr, tuple):
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        return f"{host}:{addr[1]}"
    return str(addr)

