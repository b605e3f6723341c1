"""DependencyState: ``since`` moves only when ``ok`` flips, ``detail`` always follows the last report."""

from __future__ import annotations

import time

from nexus.runtime.dependency import DependencyState


def test_starts_down_and_tracks_changes_of_ok_only() -> None:
    before = time.monotonic()
    state = DependencyState("pg")
    assert (state.name, state.ok, state.detail) == ("pg", False, "not connected")
    assert before <= state.since <= time.monotonic()

    # A stamp no real transition can produce shows whether a call moved it.
    state.since = -1.0
    state.mark_down("connect failed: refused")
    assert (state.ok, state.detail, state.since) == (False, "connect failed: refused", -1.0)

    state.mark_up()
    assert state.ok and state.detail == "ok"
    assert state.since >= before

    state.since = -1.0
    state.mark_up("3 connections")
    assert (state.ok, state.detail, state.since) == (True, "3 connections", -1.0)

    state.mark_down("connect failed: timeout")
    assert not state.ok and state.detail == "connect failed: timeout"
    assert state.since >= before
