"""The gateway's background loops under one supervisor.

Each loop is started by name and runs until the supervisor stops; a loop that ends on its
own (a bug: loops catch and log their own errors) is logged, not silently gone.  ``stop``
cancels every loop and awaits it, so nothing of them runs once the gateway is closing.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("slimserve.lifecycle")


class Supervisor:
    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task] = {}

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task:
        if name in self.tasks:
            raise ValueError(f"a background loop named {name} is running already")
        task = asyncio.get_running_loop().create_task(self._guard(name, loop), name=f"slimserve-{name}")
        self.tasks[name] = task
        return task

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a loop that dies is reported; the gateway keeps serving
            log.exception("background loop %s died", name)
            return
        log.error("background loop %s ended on its own", name)

    async def stop(self) -> None:
        tasks, self.tasks = list(self.tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
