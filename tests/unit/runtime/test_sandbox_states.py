"""The sandbox state table: the only moves are starting -> idle <-> busy, and anything -> dead,
once; listeners hear every move."""
from __future__ import annotations

import pytest

from runtime.sandbox import SandboxSpec, StartFacts, State
from tests.fakes import FakeSandbox


def _sandbox(events):
    return FakeSandbox(SandboxSpec(sandbox_id="sb-1", endpoint="e", variant="v", memory_mb=1024, bundle_dir="",
                                   bundle_kind="pickle", log_path="/dev/null"),
                       [lambda event, sb: events.append(event)])


def test_the_legal_moves_and_what_listeners_hear():
    events = []
    sb = _sandbox(events)                   # the fake starts and becomes idle at once
    sb._move(State.BUSY)
    sb._move(State.IDLE)
    assert sb._mark_dead("reaped") is True
    assert sb._mark_dead("again") is False and sb.death_reason == "reaped"
    assert events == ["created", "idle", "busy", "idle", "destroyed"]
    assert not sb.alive


@pytest.mark.parametrize("path", [[State.STARTING], [State.BUSY, State.BUSY], [State.IDLE]])
def test_illegal_moves_are_refused(path):
    sb = _sandbox([])
    with pytest.raises(RuntimeError, match="illegal move"):
        for state in path:
            sb._move(state)


def test_a_dead_sandbox_cannot_come_back():
    sb = _sandbox([])
    sb._mark_dead("gone")
    for state in (State.IDLE, State.BUSY, State.STARTING):
        with pytest.raises(RuntimeError):
            sb._move(state)


def test_start_facts_keep_only_numeric_phases():
    facts = StartFacts(path="zygote", timings={"fork_ms": 1.5, "load_ms": 3, "evil": "x" * 10, "flag": True,
                                               7: 1.0, "nested": {"a": 1}})
    assert facts.timings == {"fork_ms": 1.5, "load_ms": 3.0}
