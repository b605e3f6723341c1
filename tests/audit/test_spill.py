"""nexus.audit.spill: the content-addressed filesystem store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from nexus.audit.events import SpillRef
from nexus.audit.spill import FsSpillStore, SpillCorrupt, SpillError, SpillNotFound


def test_a_mebibyte_round_trips_under_its_sha256(tmp_path: Path) -> None:
    store = FsSpillStore(tmp_path / "spill")
    body = os.urandom(1 << 20)
    ref = store.put(body)
    digest = hashlib.sha256(body)
    assert ref == SpillRef(backend="fs", key=digest.hexdigest(), size=1 << 20, sha256=digest.digest())
    path = store.path_for(ref.key)
    assert path == tmp_path / "spill" / ref.key[:2] / ref.key[2:4] / ref.key
    assert path.read_bytes() == body
    assert store.get(ref) == body
    # Nothing but the body is left behind: the temporary file was renamed.
    assert [p.name for p in path.parent.iterdir()] == [ref.key]


def test_the_same_body_is_stored_once_and_kept_alive(tmp_path: Path) -> None:
    store = FsSpillStore(tmp_path)
    ref = store.put(b"same body")
    path = store.path_for(ref.key)
    old = time.time() - 7 * 86400
    os.utime(path, (old, old))
    assert store.put(b"same body") == ref
    assert path.stat().st_mtime > old + 86400
    assert sum(1 for p in tmp_path.rglob("*") if p.is_file()) == 1


def test_corruption_and_absence_are_reported(tmp_path: Path) -> None:
    store = FsSpillStore(tmp_path)
    ref = store.put(b"original")
    store.path_for(ref.key).write_bytes(b"tampered")
    with pytest.raises(SpillCorrupt):
        store.get(ref)
    store.path_for(ref.key).unlink()
    with pytest.raises(SpillNotFound):
        store.get(ref)
    with pytest.raises(SpillError, match="invalid spill key"):
        store.get(SpillRef(backend="fs", key="../../etc/passwd", size=1, sha256=b"\x00" * 32))
    with pytest.raises(SpillError, match="backend"):
        store.get(SpillRef(backend="s3", key=ref.key, size=ref.size, sha256=ref.sha256))


def test_a_put_that_cannot_write_raises_spill_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SpillError, match="Not a directory"):
        FsSpillStore(tmp_path / "file").put(b"body")


def test_prune_removes_bodies_not_put_since_the_cutoff(tmp_path: Path) -> None:
    store = FsSpillStore(tmp_path / "spill")
    assert FsSpillStore(tmp_path / "missing").prune(time.time()) == 0
    old_ref, new_ref = store.put(b"old"), store.put(b"new")
    past = time.time() - 40 * 86400
    os.utime(store.path_for(old_ref.key), (past, past))
    stale_tmp = store.path_for(new_ref.key).parent / ".tmp-leftover"
    stale_tmp.write_bytes(b"partial")
    os.utime(stale_tmp, (past, past))
    assert store.prune(time.time() - 32 * 86400) == 1
    assert not store.path_for(old_ref.key).exists() and not stale_tmp.exists()
    assert store.get(new_ref) == b"new"
