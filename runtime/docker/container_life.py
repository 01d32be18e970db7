"""What every sandbox that is a container shares, whatever speaks inside it: memory read from
its cgroup, death and OOM kills heard from the engine's event stream, removal with its dirs."""
from __future__ import annotations

import asyncio

from runtime.sandbox import EXITED, OUT_OF_MEMORY, State, oom_message


class ContainerLife:
    """Mixed into a Sandbox subclass; call ``_init_container`` from its constructor."""

    def _init_container(self, backend, container, root) -> None:
        self.backend, self.container, self.root = backend, container, root
        self.oom_killed = False
        self.exited = asyncio.get_running_loop().create_future()

    def memory_bytes(self) -> int:
        return self.backend.cgroup_memory(self.container.id)

    def on_engine_event(self, action: str) -> None:
        if action == "oom":
            self.oom_killed = True
        elif action == "die" and not self.exited.done():
            self.exited.set_result(None)
            if self.state is State.IDLE:
                asyncio.get_running_loop().create_task(self.destroy("container exited while idle"))

    async def container_death(self) -> tuple[str, str]:
        """(error kind, message) once the container has died (or 5 s have passed)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), 5.0)
        except asyncio.TimeoutError:
            pass
        state = await self.backend.container_state(self.container)
        if self.oom_killed or state.get("OOMKilled"):
            self.oom_killed = True
            return OUT_OF_MEMORY, oom_message(self.spec.memory_mb)
        return EXITED, f"the model's container exited during the invocation (exit code {state.get('ExitCode')})"
