"""The asynchronous-inference queue: requests accepted (durably, before the 202), claimed under
leases by this node's workers, and ended exactly once as done, failed or expired.

Each node runs as ``<node>:<boot>``: the node id is stable across restarts of the same state
dir, the boot id is new each start.  A start re-queues at once what an earlier boot of the same
node held (that process is gone); another node's leases are left to run out.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from gateway.async_inference.requests import AsyncConfig, Submission, locations
from gateway.domain import QueuedRequest

LEASE_S = 30.0                # a claim lasts this long and is renewed every third of it while it runs
RETENTION_S = 86400.0         # finished requests are kept this long as the record of what happened


@dataclass
class Counters:
    """What the queue has done since start (the metrics read these)."""
    processed: dict[str, int] = field(default_factory=dict)      # endpoint -> succeeded
    failures: dict[str, int] = field(default_factory=dict)       # ... -> ended on the failure path
    expired: dict[str, int] = field(default_factory=dict)        # ... -> dropped at their TTL

    @staticmethod
    def bump(table: dict[str, int], endpoint: str) -> None:
        table[endpoint] = table.get(endpoint, 0) + 1


class AsyncQueue:
    def __init__(self, store, clock, node_id: str, lease_s: float = LEASE_S):
        self.store, self.clock = store, clock
        self.node_id = node_id
        self.owner = f"{node_id}:{uuid.uuid4().hex[:12]}"
        self.lease_s = lease_s
        self.counters = Counters()
        self._wake = asyncio.Event()
        self._submitted: set[str] = set()        # endpoints with a submit since the workers last looked

    async def recover(self) -> int:
        """Re-queue what an earlier run of this node had claimed; how many."""
        return await self.store.release_async_owner(f"{self.node_id}:", self.owner)

    async def submit(self, endpoint: str, config: AsyncConfig, sub: Submission, body: bytes) -> QueuedRequest:
        """Accept one request: on disk when this returns."""
        uid = str(uuid.uuid4())
        output, failure = locations(config, uid, sub)
        now = self.clock.wall()
        req = QueuedRequest(id=uid, endpoint=endpoint, inference_id=sub.inference_id or uid, received=now,
                            expires=now + sub.ttl_s, timeout_s=float(sub.timeout_s), output_location=output,
                            failure_location=failure, input_location=sub.input_location,
                            body=body if not sub.input_location else None, content_type=sub.content_type,
                            accept=sub.accept, custom_attributes=sub.custom_attributes)
        await self.store.enqueue_async(req)
        self._submitted.add(endpoint)
        self._wake.set()
        return req

    def take_submitted(self) -> set[str]:
        out, self._submitted = self._submitted, set()
        return out

    async def claim(self, endpoint: str, limit: int) -> list[QueuedRequest]:
        return await self.store.claim_async(endpoint, self.owner, self.clock.wall(), self.lease_s, limit)

    async def renew(self, ids: list[str]) -> set[str]:
        return await self.store.renew_async(ids, self.owner, self.clock.wall() + self.lease_s)

    async def done(self, req: QueuedRequest) -> bool:
        ended = await self.store.finish_async(req.id, self.owner, "done", self.clock.wall())
        if ended:
            self.counters.bump(self.counters.processed, req.endpoint)
        return ended

    async def failed(self, req: QueuedRequest, error: str, held: bool = True) -> bool:
        """``held``: this node holds its lease (else it is ended wherever it is: DeleteEndpoint)."""
        ended = await self.store.finish_async(req.id, self.owner if held else None, "failed", self.clock.wall(),
                                              error[:4096])
        if ended:
            self.counters.bump(self.counters.failures, req.endpoint)
        return ended

    async def later(self, req: QueuedRequest, delay_s: float, error: str, refund: bool = False) -> bool:
        return await self.store.retry_async(req.id, self.owner, self.clock.wall() + delay_s, error[:4096], refund)

    async def expire(self) -> list[QueuedRequest]:
        """End the queued requests whose time to live ran out: they are not run, only counted."""
        gone = []
        for req in await self.store.expired_async(self.clock.wall()):
            if await self.store.finish_async(req.id, None, "expired", self.clock.wall(),
                                             "RequestTTLSeconds ran out before the request started"):
                self.counters.bump(self.counters.expired, req.endpoint)
                gone.append(req)
        return gone

    async def open_requests(self, endpoint: str) -> list[QueuedRequest]:
        return await self.store.open_async(endpoint)

    async def backlog(self) -> dict[str, tuple[int, int, float | None]]:
        return await self.store.async_backlog()

    async def prune(self) -> int:
        return await self.store.prune_async(self.clock.wall() - RETENTION_S)

    def wake(self) -> None:
        self._wake.set()

    async def wait(self, timeout_s: float) -> None:
        """Until something may be claimable: a submit, a finished request, or ``timeout_s``."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()
