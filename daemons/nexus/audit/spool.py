"""The emitter's local spool: an append-only, length-prefixed log of messages not yet in JetStream.

Records go to segment files ``<seq>.spool`` (twelve digits, so names sort in
order) in one directory; a segment is closed once it passes ``file_max`` bytes
and the next one starts.  Each record is::

    u32 body length | u32 CRC-32 of body | body
    body = u16 subject length | u16 msg id length | subject | msg id | data

all big-endian.  Records are read back in the order they were appended
(:meth:`Spool.read` then :meth:`Spool.consume` once the batch is safely
published), and a segment is deleted as soon as every record in it is consumed.

Size cap: ``max_bytes`` bounds the records appended and not yet consumed
(:attr:`Spool.pending_bytes`, framing included).  :meth:`Spool.append` writes
records in order while they fit and returns how many it wrote; the caller
decides what happens to the rest (the emitter's loss mode).  An empty spool
always takes one record, so a record larger than the cap is never refused for
ever.  On disk the spool takes at most ``max_bytes`` plus the consumed part of
its head segment (under ``file_max``) plus one record.

Crash safety: each append is one ``write`` to a file opened ``O_APPEND``, so a
killed process leaves whole records (the page cache keeps them); a machine crash
can leave a torn last record, which :meth:`Spool.open` finds by its length or
CRC and cuts off.  Durability against a machine crash is the caller's
``fsync``: :meth:`Spool.sync`, or :meth:`Spool.dup_for_sync` to fsync in a worker
thread while appends continue.  A record consumed but whose segment was not yet
deleted when the process died is read again after a restart: delivery is at
least once, and the message id lets JetStream and the writer drop the repeat.

Not thread-safe: one thread calls every method (the emitter's Trio thread);
only an fsync of a descriptor from :meth:`dup_for_sync` may run elsewhere.

Error handling: :class:`SpoolError` for I/O failures (disk full, permissions);
an append that fails leaves the segment as it was.  A full spool is no error:
``append`` returns fewer records than it was given.  Pure of Trio.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import attrs

__all__ = ["Spool", "SpoolCursor", "SpoolError", "SpoolRecord"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_LENGTHS = struct.Struct(">HH")
_NAME = re.compile(r"([0-9]{12})\.spool")
_READ_CHUNK = 1024 * 1024
# A record this long is garbage (a torn length), not a message.
_MAX_RECORD = 256 * 1024 * 1024
# What ``fits`` allows for a record's subject and message id, which it is not told.
_ID_ROOM = 128


class SpoolError(Exception):
    """The spool could not be read or written; the message names the file."""


@attrs.frozen(slots=True)
class SpoolRecord:
    subject: str
    msg_id: str
    data: bytes


@attrs.frozen(slots=True)
class SpoolCursor:
    """A read position: segment number and byte offset in it."""

    seq: int
    offset: int


def _encode(record: SpoolRecord) -> bytes:
    subject = record.subject.encode()
    msg_id = record.msg_id.encode()
    body = b"".join((_LENGTHS.pack(len(subject), len(msg_id)), subject, msg_id, record.data))
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _parse(buf: bytes | memoryview, at: int) -> tuple[SpoolRecord, int] | None:
    """The record at ``at`` and the offset after it; None when ``buf`` ends inside it or it is torn."""
    if len(buf) - at < _HEADER.size:
        return None
    length, crc = _HEADER.unpack_from(buf, at)
    start = at + _HEADER.size
    end = start + length
    if length < _LENGTHS.size or length > _MAX_RECORD or end > len(buf):
        return None
    body = bytes(buf[start:end])
    if zlib.crc32(body) != crc:
        return None
    subject_len, msg_id_len = _LENGTHS.unpack_from(body, 0)
    cut = _LENGTHS.size + subject_len
    if cut + msg_id_len > length:
        return None
    try:
        subject = body[_LENGTHS.size : cut].decode()
        msg_id = body[cut : cut + msg_id_len].decode()
    except UnicodeDecodeError:
        return None
    return SpoolRecord(subject, msg_id, body[cut + msg_id_len :]), end


class Spool:
    """The segment files of one directory; see the module docstring."""

    def __init__(self, directory: str | os.PathLike[str], *, file_max: int = 64 * 1024 * 1024,
                 max_bytes: int = 1024 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.file_max = file_max
        self.max_bytes = max_bytes
        self._sizes: dict[int, int] = {}  # segment -> bytes written, in order of seq
        self._head = SpoolCursor(0, 0)
        self._wfd: int | None = None
        self._wseq = 0
        self._dirty = False
        self._opened = False

    # ------------------------------------------------------------------------------ status

    @property
    def pending_bytes(self) -> int:
        """Bytes appended and not yet consumed (framing included)."""
        head = self._head
        return sum(self._sizes.values()) - (head.offset if head.seq in self._sizes else 0)

    @property
    def empty(self) -> bool:
        return self.pending_bytes == 0

    @property
    def disk_bytes(self) -> int:
        """Bytes the segments take on disk (consumed records count until their segment goes)."""
        return sum(self._sizes.values())

    def fits(self, size: int) -> bool:
        """Whether a record of ``size`` data bytes would be appended now."""
        pending = self.pending_bytes
        return pending == 0 or pending + _HEADER.size + _LENGTHS.size + size + _ID_ROOM <= self.max_bytes

    def open(self) -> None:
        """Find the segments left by an earlier run and cut a torn last record; no-op if open."""
        if self._opened:
            return
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise SpoolError(f"spool {self.directory}: {exc}") from exc
        seqs = [int(m[1]) for name in names if (m := _NAME.fullmatch(name))]
        for seq in seqs:
            path = self._path(seq)
            try:
                size = path.stat().st_size
                if seq == seqs[-1]:
                    size = self._repair(path, size)
            except OSError as exc:
                raise SpoolError(f"spool {path}: {exc}") from exc
            self._sizes[seq] = size
        for seq in [s for s, size in self._sizes.items() if size == 0]:
            self._unlink(seq)
        if self._sizes:
            first = next(iter(self._sizes))
            self._head = SpoolCursor(first, 0)
            self._wseq = next(reversed(self._sizes))
            log.info("spool %s: %d bytes in %d segment(s) left to replay",
                     self.directory, self.pending_bytes, len(self._sizes))
        self._opened = True

    def _repair(self, path: Path, size: int) -> int:
        """Cut whatever follows the last whole record (a crash mid-append); return the new size."""
        data = path.read_bytes()
        at = 0
        while (parsed := _parse(data, at)) is not None:
            at = parsed[1]
        if at != size:
            log.warning("spool %s: cutting %d bytes of a torn record at offset %d", path, size - at, at)
            os.truncate(path, at)
        return at

    # ----------------------------------------------------------------------------- writing

    def append(self, records: Iterable[SpoolRecord]) -> int:
        """Append records in order while they fit under ``max_bytes`` (no fsync); return how many.

        Opens the spool if needed.  One ``write`` for all of them.
        """
        self.open()
        pending = self.pending_bytes
        room = self.max_bytes - pending
        pieces: list[bytes] = []
        size = 0
        for record in records:
            piece = _encode(record)
            if size + len(piece) > room and (pieces or pending):
                break
            pieces.append(piece)
            size += len(piece)
        if not pieces:
            return 0
        data = b"".join(pieces)
        fd = self._writable()
        before = self._sizes[self._wseq]
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise SpoolError(f"spool {self._path(self._wseq)}: cannot append: {exc}") from exc
        self._sizes[self._wseq] = before + len(data)
        self._dirty = True
        return len(pieces)

    def _writable(self) -> int:
        if self._wfd is not None and self._sizes.get(self._wseq, 0) >= self.file_max:
            self._close_writer(sync=True)
        if self._wfd is None:
            if self._sizes:
                last = next(reversed(self._sizes))
                # Never append to a segment found at open(): a new one keeps old and new runs apart.
                self._wseq = last + 1
            else:
                self._wseq = max(self._wseq, self._head.seq) + 1
            try:
                self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
                self._wfd = os.open(self._path(self._wseq),
                                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
                self._fsync_directory()
            except OSError as exc:
                raise SpoolError(f"spool {self._path(self._wseq)}: cannot create: {exc}") from exc
            if not self._sizes:
                self._head = SpoolCursor(self._wseq, 0)
            self._sizes[self._wseq] = 0
        return self._wfd

    def sync(self) -> None:
        """fsync what was appended (blocking)."""
        fd = self.dup_for_sync()
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def dup_for_sync(self) -> int | None:
        """A duplicate of the active segment's descriptor if it has unsynced appends, else None.

        The caller fsyncs it (in a worker thread, say) and closes it; the
        duplicate stays valid if the segment is closed meanwhile.
        """
        if not self._dirty or self._wfd is None:
            return None
        self._dirty = False
        return os.dup(self._wfd)

    def _close_writer(self, *, sync: bool) -> None:
        fd, self._wfd = self._wfd, None
        if fd is None:
            return
        try:
            if sync and self._dirty:
                os.fsync(fd)
        except OSError as exc:
            log.warning("spool %s: fsync failed: %s", self._path(self._wseq), exc)
        finally:
            os.close(fd)
            self._dirty = False

    # ----------------------------------------------------------------------------- reading

    def read(self, max_records: int, max_bytes: int = 8 * 1024 * 1024) -> tuple[list[SpoolRecord], SpoolCursor]:
        """Up to ``max_records`` records from the head, and the cursor to ``consume`` them with.

        Stops early past ``max_bytes`` of data (but returns at least one record).
        A segment damaged in the middle (a disk error) is skipped from the damage
        on, with an error logged: what follows cannot be framed.
        """
        self.open()
        records: list[SpoolRecord] = []
        total = 0
        seq, offset = self._head.seq, self._head.offset
        for segment in [s for s in self._sizes if s >= seq]:
            if segment != seq:
                seq, offset = segment, 0
            size = self._sizes[segment]
            while offset < size:
                if len(records) >= max_records or (records and total >= max_bytes):
                    return records, SpoolCursor(seq, offset)
                chunk = self._pread(seq, min(size - offset, max(_READ_CHUNK, max_bytes - total)), offset)
                at = 0
                while len(records) < max_records and not (records and total >= max_bytes):
                    parsed = _parse(chunk, at)
                    if parsed is None:
                        break
                    record, at = parsed
                    records.append(record)
                    total += len(record.data)
                if at == 0:
                    # No whole record in the chunk: one longer than the chunk, or damage.
                    whole = self._read_long(seq, offset, size, chunk)
                    if whole is None:
                        log.error("spool %s: unreadable record at offset %d; skipping the rest of the segment",
                                  self._path(seq), offset)
                        offset = size
                        break
                    records.append(whole[0])
                    total += len(whole[0].data)
                    at = whole[1]
                offset += at
        return records, SpoolCursor(seq, offset)

    def _read_long(self, seq: int, offset: int, size: int, chunk: bytes) -> tuple[SpoolRecord, int] | None:
        if len(chunk) < _HEADER.size:
            return None
        need = _HEADER.size + _HEADER.unpack_from(chunk)[0]
        if need <= len(chunk) or offset + need > size:
            return None
        return _parse(self._pread(seq, need, offset), 0)

    def _pread(self, seq: int, length: int, offset: int) -> bytes:
        path = self._path(seq)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"spool {path}: cannot read: {exc}") from exc

    def consume(self, cursor: SpoolCursor) -> None:
        """Mark everything before ``cursor`` as published; delete the segments it finished."""
        for seq in [s for s in self._sizes if s < cursor.seq]:
            self._unlink(seq)
        self._head = cursor
        size = self._sizes.get(cursor.seq)
        if size is not None and cursor.offset >= size:
            if cursor.seq == self._wseq:
                self._close_writer(sync=False)
            self._unlink(cursor.seq)
            self._head = SpoolCursor(cursor.seq + 1, 0)

    def _unlink(self, seq: int) -> None:
        self._sizes.pop(seq, None)
        try:
            self._path(seq).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SpoolError(f"spool {self._path(seq)}: cannot delete: {exc}") from exc

    def close(self) -> None:
        """fsync and close the active segment (the files stay for the next run)."""
        self._close_writer(sync=True)

    # ------------------------------------------------------------------------------- paths

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}.spool"

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
