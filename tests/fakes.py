"""Small fakes for unit tests of pools, the scaler and admission."""
from __future__ import annotations

from runtime.sandbox import Backend, InvokeRequest, InvokeResult, Sandbox, SandboxSpec, State


class FakeSandbox(Sandbox):
    def __init__(self, spec, listeners):
        super().__init__(spec, listeners)
        self._move(State.IDLE)
        self.facts.path = "fake"

    async def invoke(self, request: InvokeRequest, timeout_s: float) -> InvokeResult:
        self._move(State.BUSY)
        self._move(State.IDLE)
        return InvokeResult(True, body=request.body, model_ms=1.0)

    async def destroy(self, reason: str = "destroyed") -> None:
        self._mark_dead(reason)

    def memory_bytes(self) -> int:
        return 0


class FakeBackend(Backend):
    name = "fake"

    def __init__(self):
        self.listeners = []
        self.started: list[FakeSandbox] = []

    async def start(self, spec: SandboxSpec) -> FakeSandbox:
        sb = FakeSandbox(spec, self.listeners)
        self.started.append(sb)
        return sb

    def protections(self) -> dict:
        return {}
