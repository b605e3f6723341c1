"""The spill store: bodies too large to keep inline, content-addressed by SHA-256.

A traffic payload row whose body exceeds ``inline_max`` keeps a reference
``{backend, key, size, sha256}`` (:class:`~nexus.audit.events.SpillRef`) instead
of the bytes.  The key is the hex SHA-256 of the content, so storing the same
body twice stores it once, and a reader can check what it got back.

:class:`SpillStore` is the interface.  :class:`FsSpillStore` is the appliance's
backend: ``<root>/<k[0:2]>/<k[2:4]>/<k>``, written atomically (temporary file in
the same directory, ``fsync``, ``rename``, ``fsync`` of the directory), so a
reader never sees a partial body and a crash leaves either nothing or the whole
file.  An S3-compatible backend implements the same two calls (``put`` as a
``PutObject`` with the key as object name and the SHA-256 as checksum, ``get``
verifying it) and reports ``backend = "s3"``; the schema already accepts it.

Retention: a body is kept alive by every ``put`` of it (a repeat bumps the
file's mtime), and :meth:`FsSpillStore.prune` removes files not put for longer
than the traffic retention, so a file outlives every row that refers to it
(a row's ``ts`` is never later than the ``put`` of its bodies).

Resource handling: every call opens and closes its own files; the store holds
no descriptors.  All calls block on the disk: from Trio, run them with
``trio.to_thread.run_sync``.

Error handling: :class:`SpillNotFound` (no such body), :class:`SpillCorrupt`
(content does not match its SHA-256 or size) and :class:`SpillError` for any
other I/O failure (disk full, permissions), with the path in the message.
Pure of Trio.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Literal, Protocol

from nexus.audit.events import SpillRef

__all__ = ["FsSpillStore", "SpillCorrupt", "SpillError", "SpillNotFound", "SpillStore"]

log = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"
# A temporary file older than this was left by a crash mid-write.
_TMP_STALE_S = 3600.0


class SpillError(Exception):
    """The spill store failed (I/O error, disk full, permissions)."""


class SpillNotFound(SpillError):
    """No body is stored under this reference."""


class SpillCorrupt(SpillError):
    """The stored body does not match the SHA-256 or size of its reference."""


class SpillStore(Protocol):
    """Where bodies larger than ``inline_max`` go; implementations may block (call them in a thread)."""

    @property
    def backend(self) -> Literal["fs", "s3"]: ...

    def put(self, data: bytes) -> SpillRef:
        """Store ``data`` (once per content) and return its reference."""
        ...

    def get(self, ref: SpillRef) -> bytes:
        """The body ``ref`` names, checked against its size and SHA-256."""
        ...


class FsSpillStore:
    """The local filesystem backend (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # Nothing is created here: a daemon that never spills needs no directory.
        self.root = Path(root)

    @property
    def backend(self) -> Literal["fs"]:
        return "fs"

    def path_for(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise SpillError(f"invalid spill key {key!r}")
        return self.root / key[0:2] / key[2:4] / key

    def put(self, data: bytes) -> SpillRef:
        digest = hashlib.sha256(data).digest()
        key = digest.hex()
        path = self.path_for(key)
        ref = SpillRef(backend="fs", key=key, size=len(data), sha256=digest)
        try:
            if path.stat().st_size == len(data):
                os.utime(path)  # keeps it past prune() as long as rows keep referring to it
                return ref
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SpillError(f"spill store {path}: {exc}") from exc
        try:
            self._write(path, data)
        except OSError as exc:
            raise SpillError(f"spill store {path}: cannot write: {exc}") from exc
        return ref

    def _write(self, path: Path, data: bytes) -> None:
        directory = path.parent
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        tmp = directory / f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{time.monotonic_ns()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            # Same content, same name: a concurrent writer of the same body replaces it with equal bytes.
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, ref: SpillRef) -> bytes:
        if ref.backend != "fs":
            raise SpillError(f"this store reads backend fs, not {ref.backend}")
        path = self.path_for(ref.key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SpillNotFound(f"spilled body {ref.key} not found at {path}") from None
        except OSError as exc:
            raise SpillError(f"spill store {path}: {exc}") from exc
        if len(data) != ref.size or hashlib.sha256(data).digest() != ref.sha256:
            raise SpillCorrupt(f"spilled body at {path} does not match its reference"
                               f" ({len(data)} bytes, expected {ref.size})")
        return data

    def prune(self, older_than: float) -> int:
        """Delete bodies last put before ``older_than`` (Unix seconds), and stale temporary files.

        Returns how many bodies were deleted.  A missing root is an empty store.
        """
        removed = 0
        stale_tmp = time.time() - _TMP_STALE_S
        try:
            tops = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SpillError(f"spill store {self.root}: {exc}") from exc
        for top in tops:
            if not top.is_dir(follow_symlinks=False):
                continue
            for sub in os.scandir(top.path):
                if not sub.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(sub.path):
                    try:
                        mtime = entry.stat(follow_symlinks=False).st_mtime
                        if entry.name.startswith(_TMP_PREFIX):
                            if mtime < stale_tmp:
                                os.unlink(entry.path)
                        elif mtime < older_than:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise SpillError(f"spill store {entry.path}: {exc}") from exc
        if removed:
            log.info("spill store %s: pruned %d bodies", self.root, removed)
        return removed
