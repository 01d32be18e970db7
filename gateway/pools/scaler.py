"""The loop beside the request path: applies the policy's plans to every pool.

The pools ask the policy for a plan whenever a sandbox goes idle (when to let
it go, when to have one warm again).  Each ``tick`` reaps idle sandboxes whose
time is up (never below the provisioned floor), starts the pre-warms whose
window has opened, keeps the provisioned floor, and writes the wall time of
provisioned concurrency to the ledger.  ``run`` calls ``tick`` on the injected
clock; tests call ``tick`` directly after moving a fake clock.
"""
from __future__ import annotations

import logging

from gateway.clock import Clock
from gateway.metering.meter import Meter
from gateway.metering.provisioned import ProvisionedMeter
from gateway.pools.manager import PoolManager
from gateway.pools.policy import select_reaps

log = logging.getLogger("slimserve.scaler")


class Scaler:
    def __init__(self, manager: PoolManager, meter: Meter, clock: Clock,
                 interval_s: float, checkpoint_s: float, provisioned: ProvisionedMeter):
        self.manager = manager
        self.meter = meter
        self.clock = clock
        self.interval_s = interval_s
        self.checkpoint_s = checkpoint_s
        self.provisioned = provisioned
        self._last_checkpoint = clock.now()
        self.reaped = 0

    async def tick(self) -> None:
        now = self.clock.now()
        for pool in self.manager.pools():
            if pool.draining:
                continue
            # An instance variant holds exactly its instance count: an idle sandbox above it (the count
            # was lowered, or a request's own start raced the floor's) goes at once, keep-alive or not.
            until = float("inf") if pool.spec.instance_type else now
            ids = select_reaps(pool.idle_view(), pool.live_count, pool.spec.provisioned, until)
            if ids:
                self.reaped += await pool.reap(ids)
            if pool.zygote_due(now):   # the pool went cold: so does its model zygote, when the plan says
                pool.zygote_released = True
                await self.manager.backend.release_bundle(pool.spec.bundle_dir)
            pool.due_prewarms(now)
            pool.keep_floor()
        self.manager.book_zygotes(now)
        if now - self._last_checkpoint >= self.checkpoint_s:
            await self.checkpoint()

    async def checkpoint(self) -> None:
        now = self._last_checkpoint = self.clock.now()
        await self.meter.record_provisioned(self.provisioned.checkpoint())
        meter = self.manager.idle_meter
        if meter is not None:
            for pool in self.manager.pools():
                pool.cut_idle(now)
            await self.meter.record_idle(meter.take())

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - one bad tick must not stop reaping for good
                log.exception("scaler tick failed")
