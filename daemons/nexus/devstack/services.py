"""Private PostgreSQL, Valkey/Redis and NATS servers run from the system binaries.

``make run`` and the test suite use whatever is reachable at the configured
address; when nothing answers there, they start a private instance under a state
directory (``.nexus/dev/`` by default) and stop it again on exit.  Tests that
prove reconnection use the same classes to stop and restart a server they own,
never the machine's shared services.

Resource handling: each ``Private*`` object owns its child process and its data
directory; ``stop()`` is idempotent and is also what ``__exit__`` calls.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

PACKAGE_HINT = {
    "postgres": "install PostgreSQL: Debian `apt-get install postgresql`, "
    "Amazon Linux `dnf install postgresql15-server`",
    "valkey": "install Valkey or Redis: Debian `apt-get install redis-server` (or valkey-server), "
    "Amazon Linux `dnf install valkey`",
    "nats": "install the NATS server: Debian `apt-get install nats-server`, elsewhere the nats-server release binary",
}


class MissingBinary(RuntimeError):
    """A server is needed, none is reachable, and its binary is not installed."""


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def free_port(avoid: frozenset[int] = frozenset()) -> int:
    """A port nothing listens on now, and not one of ``avoid`` (ports the caller is about to hand out)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in avoid:
            return port


def find_binary(names: list[str], extra_globs: tuple[str, ...] = ()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for pattern in extra_globs:
        for candidate in sorted(glob.glob(pattern), reverse=True):
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def _wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(host, port, 0.2):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"server on {host}:{port} did not come up; log {log}:\n{tail}")


class _PrivateServer:
    kind = ""
    default_port = 0

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root).absolute()
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / f"{self.kind}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _preexec(self) -> Callable[[], None] | None:
        return None

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._prepare()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._preexec(),
            )
        _wait_port("127.0.0.1", self.port, timeout, self.proc, self.log)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> _PrivateServer:
        self.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


class PrivateValkey(_PrivateServer):
    kind = "valkey"
    default_port = 6379

    def __init__(self, root: Path, port: int | None = None) -> None:
        super().__init__(root, port)
        binary = find_binary(["valkey-server", "redis-server"])
        if binary is None:
            raise MissingBinary(f"no Valkey/Redis reachable and no server binary found: {PACKAGE_HINT['valkey']}")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.root), "--daemonize", "no"]


class PrivateNats(_PrivateServer):
    kind = "nats"
    default_port = 4222

    def __init__(self, root: Path, port: int | None = None) -> None:
        super().__init__(root, port)
        binary = find_binary(["nats-server"], ("/usr/sbin/nats-server", "/usr/local/bin/nats-server"))
        if binary is None:
            raise MissingBinary(f"no NATS reachable and no nats-server binary found: {PACKAGE_HINT['nats']}")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.root / "jetstream")]


def _traversable_by_others(path: Path) -> bool:
    for parent in [*reversed(path.parents), path]:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            return True  # created below with mode 0755
        if not mode & 0o001:
            return False
    return True


class PrivatePostgres(_PrivateServer):
    """A throwaway cluster with trust auth on loopback.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the
    ``postgres`` system user (created by every distribution's server package).
    """

    kind = "postgres"
    default_port = 5432

    def __init__(self, root: Path, port: int | None = None) -> None:
        super().__init__(root, port)
        pg_globs = ("/usr/lib/postgresql/*/bin/postgres", "/usr/pgsql-*/bin/postgres")
        postgres = find_binary(["postgres"], pg_globs)
        if postgres is None:
            raise MissingBinary(f"no PostgreSQL reachable and no postgres binary found: {PACKAGE_HINT['postgres']}")
        self.postgres = postgres
        bindir = Path(postgres).parent
        initdb = bindir / "initdb"
        self.initdb = str(initdb) if initdb.exists() else (shutil.which("initdb") or "initdb")
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise MissingBinary(
                    "running as root needs the `postgres` system user to own a private cluster"
                ) from exc
            if not _traversable_by_others(self.root):
                # The cluster must be reachable by the postgres user; a root-only tree (/root, pytest's tmp) is not.
                digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
                self.root = Path("/var/tmp") / f"nexus-postgres-{digest}"  # noqa: S108 - owned 0755 by postgres
                self.log = self.root / f"{self.kind}.log"
        self.data = self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _demote(self) -> None:
        if self.user is not None:
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)

    def _preexec(self) -> Callable[[], None] | None:
        return self._demote if self.user is not None else None

    def _prepare(self) -> None:
        super()._prepare()
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            with contextlib.suppress(FileNotFoundError):
                os.chown(self.log, self.user.pw_uid, self.user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            with open(self.log, "ab") as log:
                done = subprocess.run(
                    [self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                     "--no-sync"],
                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._preexec(),
                )
            if done.returncode != 0:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"initdb failed for a private PostgreSQL in {self.data}:\n{tail}")

    def _command(self) -> list[str]:
        return [self.postgres, "-D", str(self.data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.root}", "-c", "fsync=off", "-c", "max_connections=200"]

    def stop(self, timeout: float = 15.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        super().stop(timeout)


def ensure(kind: str, url: str, state_dir: Path, avoid: frozenset[int] = frozenset()
           ) -> tuple[str, _PrivateServer | None]:
    """Return a URL that answers for ``kind``: ``url`` itself if reachable, else a started private server's."""
    classes: dict[str, type[_PrivateServer]] = {
        "postgres": PrivatePostgres, "valkey": PrivateValkey, "nats": PrivateNats,
    }
    cls = classes[kind]
    host, port = host_port(url, cls.default_port)
    if reachable(host, port):
        return url, None
    server = cls(state_dir / kind, free_port(avoid))
    server.start()
    if kind == "postgres":
        # Keep the caller's database name on the private cluster.
        path = urlsplit(url).path or "/nexus"
        return f"postgresql://postgres@127.0.0.1:{server.port}{path}", server
    if kind == "valkey":
        return f"redis://127.0.0.1:{server.port}{urlsplit(url).path or '/0'}", server
    return server.url, server
