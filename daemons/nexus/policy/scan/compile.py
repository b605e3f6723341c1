"""Compile every enabled rule into Hyperscan databases, with an on-disk cache.  Synchronous.

Two block-mode databases, both without start-of-match tracking (the cheap
mode; the scanner finds exact spans with Python ``re`` in a window around each
hit):

* ``block``: one pass over a whole body, every end offset of every match;
* ``single``: the same patterns with ``HS_FLAG_SINGLEMATCH``, used only when a
  pathological body reports too many matches (at most one report per rule).

There is no stream-mode database: vectorscan 5.4.12 in stream mode misses
some matches split across writes (a ``Query|Exec|QueryRow`` alternation cut after
``db.Q``), so streams rescan an overlap window in block mode instead (see
``stream``).

The serialised databases are cached as one file named by a key over the
patterns, the Hyperscan version and the CPU's SIMD features, so a daemon
starts in milliseconds.  A cache file is written atomically and carries a
SHA-256 of its content; a corrupt or foreign file is ignored and rewritten.

Errors: ``CompileError`` (a ``ValueError``) names the rule Hyperscan rejected.
Cache I/O errors never propagate: the databases are compiled instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import attrs
import hyperscan

from nexus.policy.rules.model import Rule

_FLAG_BITS = {
    "caseless": hyperscan.HS_FLAG_CASELESS,
    "dotall": hyperscan.HS_FLAG_DOTALL,
    "multiline": hyperscan.HS_FLAG_MULTILINE,
    "utf8": hyperscan.HS_FLAG_UTF8,
    "ucp": hyperscan.HS_FLAG_UCP,
}
_MAGIC = b"NXHSDB2\n"
_COUNT = 2
_SIMD = ("sse4_2", "popcnt", "avx", "avx2", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512vbmi", "neon", "asimd")


class CompileError(ValueError):
    """Hyperscan rejected a pattern (the message names the rule)."""


@attrs.frozen
class Databases:
    block: hyperscan.Database
    single: hyperscan.Database


def hs_flags(flags: Sequence[str]) -> int:
    out = 0
    for name in flags:
        out |= _FLAG_BITS[name]
    if out & hyperscan.HS_FLAG_UCP:
        out |= hyperscan.HS_FLAG_UTF8  # Hyperscan requires UTF-8 mode for Unicode properties
    return out


def patterns_digest(rules: Sequence[Rule]) -> str:
    """SHA-256 over what the databases depend on: ids order, patterns and flags."""
    doc = [[r.id, r.pattern, sorted(r.flags)] for r in rules]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()


def platform_key() -> str:
    """Hyperscan binding and library versions plus the CPU's SIMD feature set."""
    probe = hyperscan.Database()
    probe.compile(expressions=[b"nexus"])
    binding = getattr(hyperscan, "__version__", "unknown")
    return f"{binding}|{probe.info()!r}|{','.join(_cpu_features())}"


def _cpu_features() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return [os.uname().machine]
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [os.uname().machine, *(f for f in _SIMD if f in present)]
    return [os.uname().machine]


def build(rules: Sequence[Rule], cache_dir: Path | None = None) -> Databases:
    """The databases for ``rules`` (pattern ids are the rule indexes), from the cache when possible."""
    if not rules:
        raise CompileError("no rules to compile")
    path: Path | None = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{patterns_digest(rules)}|{platform_key()}".encode()).hexdigest()[:32]
        path = cache_dir / f"hyperscan-{key}.db"
        cached = _load(path)
        if cached is not None:
            return cached
    dbs = Databases(
        block=_compile(rules, hyperscan.HS_MODE_BLOCK, 0),
        single=_compile(rules, hyperscan.HS_MODE_BLOCK, hyperscan.HS_FLAG_SINGLEMATCH),
    )
    if path is not None:
        _store(path, dbs)
    return dbs


def _compile(rules: Sequence[Rule], mode: int, extra: int) -> hyperscan.Database:
    db = hyperscan.Database(mode=mode)
    try:
        db.compile(
            expressions=[r.pattern.encode() for r in rules],
            ids=list(range(len(rules))),
            flags=[hs_flags(r.flags) | extra for r in rules],
        )
    except hyperscan.error as exc:
        raise CompileError(_culprit(rules, mode, str(exc))) from None
    return db


def _culprit(rules: Sequence[Rule], mode: int, message: str) -> str:
    # The multi-pattern error does not say which expression failed: find it.
    for rule in rules:
        try:
            hyperscan.Database(mode=mode).compile(expressions=[rule.pattern.encode()], flags=[hs_flags(rule.flags)])
        except hyperscan.error as exc:
            return f"{rule.pack}: rule {rule.id}: Hyperscan rejects the pattern: {exc}"
    return f"Hyperscan rejects the rule set: {message}"


def _store(path: Path, dbs: Databases) -> None:
    blobs = [hyperscan.dumpb(db) for db in (dbs.block, dbs.single)]
    body = _MAGIC + b"".join(struct.pack("<Q", len(b)) + b for b in blobs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hyperscan-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body + hashlib.sha256(body).digest())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return  # an unwritable cache only costs the next start a compile


def _load(path: Path) -> Databases | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    body, digest = raw[:-32], raw[-32:]
    if not body.startswith(_MAGIC) or hashlib.sha256(body).digest() != digest:
        return None
    blobs: list[bytes] = []
    offset = len(_MAGIC)
    while offset < len(body) and len(blobs) < _COUNT:
        if offset + 8 > len(body):
            return None
        (size,) = struct.unpack_from("<Q", body, offset)
        offset += 8
        blobs.append(body[offset:offset + size])
        offset += size
    if len(blobs) != _COUNT or offset != len(body):
        return None
    try:
        return Databases(
            block=hyperscan.loadb(blobs[0], hyperscan.HS_MODE_BLOCK),
            single=hyperscan.loadb(blobs[1], hyperscan.HS_MODE_BLOCK),
        )
    except hyperscan.error:
        return None
