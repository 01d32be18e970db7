"""One process sandbox of the process backend: a channel to its worker, the process (or the
replica a zygote forked), its cgroup and private directory, and how it died."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal

import psutil

from runtime.channel import ChannelSandbox
from runtime.process import cgroups
from runtime.sandbox import EXITED, OUT_OF_MEMORY, State, oom_message


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as {field: value} ({} if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    except OSError:
        return {}


def verified_replica_protections(pid: int, zygote_pid: int, claimed: list[str]) -> list[str]:
    """What a replica reports it applied, less what the kernel does not show: a replica is
    forked by a zygote that ran model code, so its own account is not proof.  "pidns" stands
    only if it is a PID namespace deeper than its zygote, "seccomp" only with a filter on."""
    mine, theirs = proc_status(pid), proc_status(zygote_pid)
    out = list(claimed)
    if len(mine.get("NSpid", "").split()) <= len(theirs.get("NSpid", "").split()) and "pidns" in out:
        out.remove("pidns")
    if mine.get("Seccomp", "0").strip() != "2" and "seccomp" in out:
        out.remove("seccomp")
    return out


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class ProcessSandbox(ChannelSandbox):
    def __init__(self, spec, listeners, proc, reader, writer, cgroup, tmp_dir, release_uid=None,
                 max_response_bytes: int = 6 << 20):
        super().__init__(spec, listeners, reader, writer, max_response_bytes)
        self.proc = proc
        self.cgroup: cgroups.Cgroup | None = cgroup
        self.tmp_dir = tmp_dir
        self._release_uid = release_uid   # the uid goes back to the pool once nothing runs as it
        self.on_first_success = None      # told the request of the first invocation that succeeds
        self.killed_by_watchdog = False
        self.oom_killed = False          # latched before the cgroup is removed
        self._ps = None
        self._monitor = asyncio.get_running_loop().create_task(self._watch_exit())

    async def invoke(self, request, timeout_s: float):
        result = await super().invoke(request, timeout_s)
        if result.ok and self.on_first_success is not None:
            tell, self.on_first_success = self.on_first_success, None
            tell(request)
        return result

    async def _watch_exit(self) -> None:
        await self.proc.wait()
        if self.state is State.IDLE:      # STARTING and BUSY: the start or invoke path reports the death
            await self.destroy(f"exited while idle ({self._exit_text()})")

    def _exit_text(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "still running"
        return f"killed by {_signal_name(code)}" if code < 0 else f"exit code {code}"

    def memory_bytes(self) -> int:
        if self.cgroup is not None:
            return self.cgroup.usage_bytes()
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
            return self._ps.memory_info().rss
        except psutil.Error:
            return 0

    def _out_of_memory_text(self) -> str:
        return oom_message(self.spec.memory_mb)

    async def _death_cause(self) -> tuple[str, str]:
        try:
            await asyncio.wait_for(self.proc.wait(), 2.0)
        except asyncio.TimeoutError:
            pass
        self._latch_oom()
        if self.oom_killed:
            return OUT_OF_MEMORY, self._out_of_memory_text()
        return EXITED, f"the model process exited during the invocation ({self._exit_text()})"

    def _latch_oom(self) -> None:
        if self.killed_by_watchdog or (self.cgroup is not None and self.cgroup.oom_kills() > 0):
            self.oom_killed = True

    async def destroy(self, reason: str = "destroyed") -> None:
        if not self._begin_destroy(reason):
            return
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.cgroup is not None:
            self.cgroup.kill_all()
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except asyncio.TimeoutError:
            pass
        if self.cgroup is not None:
            self._latch_oom()
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(shutil.rmtree, self.tmp_dir, True)
        if self._release_uid is not None:
            self._release_uid()
        self._mark_dead(reason)
