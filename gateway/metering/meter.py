"""Usage metering with group commit.

``record`` returns only after the record is committed, so the invocation
handler can hold its response until then: a response that left the gateway
always has its record on disk, whatever happens to the process afterwards.
Concurrent invocations share one transaction (and one fsync): while one batch
commits, the next one gathers.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from gateway.domain import ProvisionedRecord, UsageRecord
from gateway.store.base import Store


class Meter:
    def __init__(self, store: Store, listeners: list[Callable[[UsageRecord], None]] | None = None):
        self.store = store
        self.listeners = list(listeners or [])
        self._pending: list[tuple[UsageRecord, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._writer())

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def record(self, rec: UsageRecord) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("meter is not running")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((rec, fut))
        self._wake.set()
        await fut
        for listener in self.listeners:
            listener(rec)

    async def record_provisioned(self, records: list[ProvisionedRecord]) -> None:
        if records:
            await self.store.insert_provisioned(records)

    async def record_idle(self, deltas: dict) -> None:
        await self.store.add_idle(deltas)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await self.store.insert_usage([rec for rec, _ in batch])
                except Exception as exc:  # noqa: BLE001 - each waiter learns the commit failed
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
            if self._closing and not self._pending:
                return
