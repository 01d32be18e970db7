"""A transform job's compute: ``InstanceCount`` instances, each a group of MaxConcurrentTransforms
worker sandboxes that share one cap of the instance type's memory and vCPUs.

They are made for the job and destroyed after it, never kept warm and never lent to an
endpoint.  Each instance reserves its memory against the host budget (evicting other
endpoints' idle sandboxes, as a cold start would) before its sandboxes start; a job that
does not fit waits.  ``acquire``/``release`` lease the sandboxes out as a variant's pool does,
so ``serving.invoker`` runs a job's requests as it runs an endpoint's; a sandbox that dies
(timeout, out of memory, crash) is replaced.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass

from gateway.pools.pool import Lease
from runtime.sandbox import THREAD_ENV, Sandbox, SandboxGroup, SandboxSpec, StartError

log = logging.getLogger("slimserve.batch")
WAIT_POLL_S = 2.0


@dataclass(frozen=True)
class Bundle:
    """The model a job runs, installed for it."""
    dir: str
    kind: str
    env: dict
    image: str | None = None
    network_isolation: bool = False


class Compute:
    def __init__(self, job: str, backend, manager, instance_type: str, instances: int, per_instance: int,
                 memory_mb: int, vcpus: float, bundle: Bundle, log_path: str, env: dict):
        self.job = job
        self.backend, self.manager = backend, manager
        self.instance_type, self.instances, self.per_instance = instance_type, instances, per_instance
        self.memory_mb, self.vcpus = memory_mb, vcpus
        self.bundle, self.log_path = bundle, log_path
        self.env = dict(bundle.env, **env)
        # Each worker's thread pools get its share of the instance's vCPUs (the model's own
        # Environment may say otherwise): MaxConcurrentTransforms workers of a 2-vCPU instance
        # that each spun up two BLAS threads would fight over the same cores.
        share = str(max(1, int(vcpus // max(1, per_instance))))
        for name in THREAD_ENV:
            self.env.setdefault(name, share)
        self.env.setdefault("SM_NUM_CPUS", str(int(vcpus)))
        tag = hashlib.sha1(job.encode()).hexdigest()[:10]
        self.groups = [SandboxGroup(f"tj-{tag}-{i}", memory_mb, vcpus, per_instance) for i in range(instances)]
        self._keys = [f"transform:{job}:{i}" for i in range(instances)]
        self._shared: dict[str, bool] = {}
        self._idle: list[Sandbox] = []
        self._live: dict[str, tuple[Sandbox, int]] = {}       # sandbox id -> (sandbox, instance)
        self._starting = 0
        self._changed = asyncio.Condition()
        self._reserved: list[str] = []
        self.failure: StartError | None = None
        self.started_at: float | None = None                  # wall time the instances were up (billed from)
        self.closed = False

    # --- bring-up ---------------------------------------------------------------------------
    async def start(self, on_wait=lambda message: None) -> None:
        """Reserve every instance's memory (waiting while the host has no room), then start all
        sandboxes; raises StartError if none of an instance's sandboxes can load the model."""
        while not await self._reserve_all():
            on_wait(f"waiting for host memory: {self.instances} x {self.instance_type} need {self.memory_mb} MB "
                    f"each and the budget has {self.manager.budget.free_mb} MB free of "
                    f"{self.manager.budget.capacity_mb} MB")
            await asyncio.sleep(WAIT_POLL_S)
        on_wait("")
        self.started_at = time.time()
        for group in self.groups:
            self._shared[group.name] = await self.backend.open_group(group)
        results = await asyncio.gather(*(self._start_one(i) for i in range(self.instances)
                                         for _ in range(self.per_instance)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if len(failures) == len(results):
            first = failures[0]
            raise first if isinstance(first, StartError) else StartError("load_failed", str(first))

    async def _reserve_all(self) -> bool:
        """Every instance's memory, or none: a job holding part of the budget while it waits for
        the rest could deadlock with another doing the same, and would block endpoints meanwhile."""
        for key in self._keys:
            if not await self.manager.make_room(f"transform:{self.job}", key, self.memory_mb):
                for held in self._reserved:
                    self.manager.budget.release(held)
                self._reserved.clear()
                return False
            self._reserved.append(key)
        return True

    def _spec(self, instance: int) -> SandboxSpec:
        group = self.groups[instance]
        shared = self._shared.get(group.name, False)
        # Without a shared cap, each sandbox gets its share of the instance instead.
        mb = self.memory_mb if shared else max(128, self.memory_mb // self.per_instance)
        vcpus = self.vcpus if shared else self.vcpus / self.per_instance
        return SandboxSpec(sandbox_id=f"sb-{group.name}-{uuid.uuid4().hex[:6]}", endpoint=f"transform-job/{self.job}",
                           variant=f"instance-{instance}", memory_mb=mb, bundle_dir=self.bundle.dir,
                           bundle_kind=self.bundle.kind, log_path=self.log_path, env=dict(self.env),
                           network_isolation=self.bundle.network_isolation, image=self.bundle.image,
                           vcpus=vcpus, group=group if shared else None)

    async def _start_one(self, instance: int) -> None:
        self._starting += 1
        try:
            sb = await self.backend.start(self._spec(instance))
        except StartError as exc:
            self.failure = exc
            raise
        finally:
            self._starting -= 1
            async with self._changed:
                self._changed.notify_all()
        if self.closed:
            await sb.destroy("transform job ended")
            return
        self._live[sb.id] = (sb, instance)
        async with self._changed:
            self._idle.append(sb)
            self._changed.notify_all()

    # --- leasing (as a pool does) -------------------------------------------------------------
    async def acquire(self, sample=None, target: str | None = None) -> Lease:
        async with self._changed:
            while True:
                if self._idle:
                    return Lease(self._idle.pop(), self, cold=False)
                if not self._live and not self._starting:
                    raise self.failure or StartError("load_failed", "no sandbox of the job could be started")
                await self._changed.wait()

    async def release(self, lease: Lease) -> None:
        sb = lease.sandbox
        if sb.alive and not self.closed:
            async with self._changed:
                self._idle.append(sb)
                self._changed.notify_all()
            return
        _, instance = self._live.pop(sb.id, (None, 0))
        if not self.closed:                  # it died under a request: a fresh one takes its place
            asyncio.get_running_loop().create_task(self._replace(instance))

    async def _replace(self, instance: int) -> None:
        try:
            await self._start_one(instance)
        except StartError as exc:
            log.warning("transform job %s: a replacement sandbox did not start: %s", self.job, exc.message)

    @property
    def sandboxes(self) -> int:
        return len(self._live)

    # --- tear-down ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Destroy every sandbox, remove the groups, give the memory back.  Idempotent."""
        self.closed = True
        live = [sb for sb, _ in self._live.values()]
        self._live.clear()
        self._idle.clear()
        await asyncio.gather(*(sb.destroy("transform job ended") for sb in live), return_exceptions=True)
        for group in self.groups:
            if self._shared.pop(group.name, False):
                await self.backend.close_group(group)
        for key in self._reserved:
            self.manager.budget.release(key)
        self._reserved.clear()
