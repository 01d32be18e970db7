"""The gateway's start and stop: each step registers its stop, so a start that fails half-way
unwinds what it had started, and a stop leaves no process, loop or open store behind."""
from __future__ import annotations

import asyncio
import socket

import psutil
import pytest

from gateway.app import Gateway
from gateway.config import Settings
from tests.helpers import wait_until


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def _loops() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("slimserve-")]


async def test_a_start_that_fails_at_the_last_step_unwinds_everything_before_it(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    before = _children()
    gw = Gateway(Settings(state_dir=tmp_path / "state", port=taken.getsockname()[1], usage_retention_days=30))
    try:
        with pytest.raises(OSError):                  # the port is taken: the very last step fails
            await gw.start()
        # by then the store, the backend with its base zygote, the meter and the loops had started
        assert gw.store._conn is None
        assert _loops() == []
        assert await asyncio.to_thread(wait_until, lambda: _children() <= before, 15)
        assert gw.meter._task.done()
    finally:
        taken.close()


async def test_stop_unwinds_a_started_gateway(tmp_path):
    before = _children()
    gw = Gateway(Settings(state_dir=tmp_path / "state", port=0, usage_retention_days=30))
    await gw.start()
    assert sorted(_loops()) == ["slimserve-async-inference", "slimserve-autoscaling", "slimserve-notify",
                                "slimserve-retention", "slimserve-scaler"]
    assert _children() - before                       # the base zygote (and its stems) run
    await gw.stop()
    assert _loops() == [] and gw.store._conn is None
    assert await asyncio.to_thread(wait_until, lambda: _children() <= before, 15)
    await gw.stop()                                   # a second stop is harmless
