"""nexus.audit.spool: append-only segments, read back in order, consumed, repaired after a crash."""

from __future__ import annotations

import os
from pathlib import Path

from nexus.audit.spool import Spool, SpoolRecord


def records(n: int, size: int = 100, start: int = 0) -> list[SpoolRecord]:
    return [SpoolRecord("nexus.event.ai-traffic", f"id-{i}", bytes([i % 256]) * size) for i in range(start, start + n)]


def segments(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_records_come_back_in_order_across_segments_and_files_go_when_consumed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, file_max=64 * 1024)
    assert spool.empty and spool.pending_bytes == 0
    written = records(2000, 100)
    for i in range(0, 2000, 100):
        spool.append(written[i : i + 100])
    spool.sync()
    assert len(segments(tmp_path)) > 2
    got: list[SpoolRecord] = []
    while not spool.empty:
        batch, cursor = spool.read(300)
        assert 0 < len(batch) <= 300
        got += batch
        spool.consume(cursor)
    assert got == written
    assert segments(tmp_path) == []
    # Appends after draining start a new segment and are read alone.
    spool.append(records(3, start=5000))
    batch, cursor = spool.read(10)
    assert [r.msg_id for r in batch] == ["id-5000", "id-5001", "id-5002"]
    spool.consume(cursor)
    assert spool.empty and segments(tmp_path) == []


def test_unconsumed_records_survive_a_restart_and_new_ones_follow(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(records(10))
    _first, cursor = spool.read(4)
    spool.consume(cursor)
    spool.close()
    # A restart reads the segment again from its start: at least once, never lost.
    again = Spool(tmp_path)
    again.open()
    assert again.pending_bytes > 0
    again.append(records(2, start=10))
    got, cursor = again.read(100)
    assert [r.msg_id for r in got] == [f"id-{i}" for i in range(12)]
    again.consume(cursor)
    assert again.empty


def test_a_torn_last_record_is_cut_at_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(records(5))
    spool.close()
    (segment,) = segments(tmp_path)
    path = tmp_path / segment
    whole = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x10\x00garbage")  # a header promising 4 KiB, then the crash
    reopened = Spool(tmp_path)
    reopened.open()
    assert path.stat().st_size == whole
    got, _cursor = reopened.read(100)
    assert [r.msg_id for r in got] == [f"id-{i}" for i in range(5)]


def test_a_damaged_record_mid_segment_skips_the_rest_of_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, file_max=64 * 1024)
    spool.append(records(3))
    spool.close()
    (segment,) = segments(tmp_path)
    data = bytearray((tmp_path / segment).read_bytes())
    data[150] ^= 0xFF  # inside the second record: its CRC no longer matches
    (tmp_path / segment).write_bytes(bytes(data))
    spool = Spool(tmp_path)
    spool.open()  # the last segment is cut at the damage
    spool.append(records(1, start=9))
    got, cursor = spool.read(100)
    assert [r.msg_id for r in got] == ["id-0", "id-9"]
    spool.consume(cursor)
    assert spool.empty


def test_records_larger_than_a_read_chunk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    big = [SpoolRecord("s", "big", os.urandom(3 * 1024 * 1024)), SpoolRecord("s", "small", b"x")]
    spool.append(big)
    got, cursor = spool.read(10, max_bytes=1024)
    assert got == big[:1]  # max_bytes stops after the first, which is returned whole
    spool.consume(cursor)
    got, cursor = spool.read(10)
    assert got == big[1:]


def test_the_cap_refuses_what_does_not_fit_and_consuming_makes_room(tmp_path: Path) -> None:
    spool = Spool(tmp_path, file_max=64 * 1024, max_bytes=100 * 1024)
    written = records(300, 1000)  # ~1 KiB each: about 100 fit
    kept = spool.append(written)
    assert 90 <= kept < 100
    assert spool.disk_bytes <= 100 * 1024
    assert spool.append(records(1, 1000, start=1000)) == 0
    assert not spool.fits(1000)
    # Draining the first segment deletes it: room for more, appended behind what is left.
    got, cursor = spool.read(kept)
    spool.consume(cursor)
    assert got == written[:kept] and spool.empty and spool.disk_bytes == 0
    assert spool.append(written[kept:]) == kept
    got, _cursor = spool.read(1000)
    assert got == written[kept : 2 * kept]


def test_an_empty_spool_takes_one_record_larger_than_the_cap(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=64 * 1024)
    big = SpoolRecord("s", "big", os.urandom(200 * 1024))
    assert spool.fits(200 * 1024)
    assert spool.append([big, SpoolRecord("s", "small", b"x")]) == 1
    assert spool.append([SpoolRecord("s", "small", b"x")]) == 0
    got, cursor = spool.read(10)
    assert got == [big]
    spool.consume(cursor)
    assert spool.append([SpoolRecord("s", "small", b"x")]) == 1
