"""The built-in backend's in-memory index: cosine nearest neighbour per partition, expiry, removal, the row cap,
and the float32 wire form."""

from __future__ import annotations

import numpy as np
import pytest

from nexus.gateway.cache.vectors import Vector, VectorIndex, VectorTable, from_bytes, to_bytes, unit


def vec(*values: float) -> Vector:
    v = unit(values)
    assert v is not None
    return v


def test_unit_and_bytes() -> None:
    v = vec(3, 4)
    assert v.dtype == np.float32 and np.allclose(v, [0.6, 0.8])
    assert np.array_equal(from_bytes(to_bytes(v)), v)
    assert to_bytes(v) == np.array([0.6, 0.8], dtype="<f4").tobytes()
    for bad in ((), (0.0, 0.0), (1.0, float("nan")), (float("inf"), 1.0)):
        assert unit(bad) is None
    with pytest.raises(ValueError):
        from_bytes(b"abc")


def test_best_is_the_most_similar_unexpired_row() -> None:
    t = VectorTable(3)
    assert t.best(vec(1, 0, 0), 0.0) is None
    t.put("a", vec(1, 0, 0), 100.0)
    t.put("b", vec(1, 1, 0), 100.0)
    t.put("c", vec(0, 0, 1), 50.0)
    key, sim = t.best(vec(0.9, 1, 0), 10.0) or ("", 0.0)
    assert key == "b" and sim == pytest.approx(float(vec(0.9, 1, 0) @ vec(1, 1, 0)), abs=1e-6)
    assert t.best(vec(0, 0, 1), 10.0) == ("c", pytest.approx(1.0))
    assert t.best(vec(0, 0, 1), 60.0)[0] != "c"  # type: ignore[index]  # c expired
    assert t.best(vec(1, 0), 10.0) is None  # other dimensions
    with pytest.raises(ValueError):
        t.put("d", vec(1, 0), 100.0)


def test_replace_remove_grow_and_purge() -> None:
    t = VectorTable(2)
    for i in range(40):  # past the initial capacity
        t.put(f"k{i}", vec(1, i), 100.0 if i % 2 else 5.0)
    assert len(t) == 40
    t.put("k3", vec(-1, 0), 100.0)  # replaced in place
    assert len(t) == 40 and t.best(vec(-1, 0), 0.0) == ("k3", pytest.approx(1.0))
    assert t.remove("k3") and not t.remove("k3") and "k3" not in t
    assert t.purge(10.0) == 20 and len(t) == 19
    assert all(t.best(vec(1, i), 10.0)[0] == f"k{i}" for i in range(1, 40, 2) if i != 3)  # type: ignore[index]


def test_index_partitions_and_cap() -> None:
    idx = VectorIndex(max_entries=3)
    assert idx.put("p1", "a", vec(1, 0), 100.0)
    assert idx.put("p2", "b", vec(1, 0), 100.0)
    assert idx.best("p1", vec(1, 0), 0.0) == ("a", pytest.approx(1.0))
    assert idx.best("p3", vec(1, 0), 0.0) is None  # another partition never matches
    assert idx.put("p1", "c", vec(0, 1), 100.0)
    assert not idx.put("p1", "d", vec(0, 1), 100.0) and len(idx) == 3  # full
    assert idx.put("p1", "a", vec(0, 1), 100.0)  # replacing is always allowed
    assert not idx.put("p1", "e", vec(1, 0, 0), 100.0)  # wrong length for the partition
    assert idx.remove("p2", "b") and len(idx) == 2 and list(idx.partitions()) == ["p1"]
    assert idx.purge(200.0) == 2 and len(idx) == 0
