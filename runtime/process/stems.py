"""Stems of an unprivileged model zygote, which has run model code: every pid it names is
checked to be one of its own, and capped in a cgroup of the tier by the gateway, ahead of
demand where it can be."""
from __future__ import annotations

import asyncio
import os

from runtime.process import cgroups
from runtime.process.sandbox import proc_status
from runtime.process.zygote_handle import ZygoteHandle, ZygoteUnavailable


def check_stem(zygote: ZygoteHandle, pid) -> None:
    """A pid that a model zygote names must be one of its own stems: a process of its uid, in
    its cgroup.  The zygote has run model code, so what it says is checked, not believed."""
    members = zygote.cgroup.pids() if zygote.cgroup is not None else None
    if (not isinstance(pid, int) or isinstance(pid, bool) or pid == zygote.proc.pid
            or proc_status(pid).get("Uid", "").split()[:1] != [str(zygote.uid)]
            or (members is not None and pid not in members)):
        raise ZygoteUnavailable(f"zygote {zygote.name} named pid {pid!r}, which is not one of its stems")

async def prepare_stem(support, pids_max: int, zygote: ZygoteHandle, memory_mb: int, pid: int,
                       strict: bool = True, vcpus: float = 0.0):
    """Ahead of demand: a cgroup at the tier for a stem the zygote just forked, and the stem
    moved into it (a move can stall for an RCU grace period, ~10 ms here: not on a request).
    ``strict`` (on an assignment): a pid that is not the zygote's stem marks the zygote broken.
    An announcement is only a hint: its stem may already have been assigned and moved."""
    def make():
        check_stem(zygote, pid)
        name = f"stem-r{pid}-{os.urandom(3).hex()}"       # never an existing cgroup, whatever pid it reuses
        cg = cgroups.Cgroup(support, name, memory_mb << 20, pids_max, exclusive=True, vcpus=vcpus)
        try:
            cg.add(pid)
        except OSError:
            cg.remove()
            raise
        return cg
    try:
        return await asyncio.to_thread(make)
    except ZygoteUnavailable:
        if strict:
            zygote.broken = True              # a zygote that lies is closed and replaced
        raise

async def replica_cgroup(support, pids_max: int, zygote: ZygoteHandle, pid, memory_mb: int, vcpus: float = 0.0):
    """The cgroup of the replica that took an assignment: the one made ahead for it, or one
    made and joined now.  None where there are no cgroups (the pid is still checked)."""
    fut = zygote.take_prepared(pid) if isinstance(pid, int) else None
    if fut is not None:
        try:
            cg = await fut
            if pid in await asyncio.to_thread(cg.pids):       # still that stem, not a reused pid
                return cg
            await asyncio.to_thread(cg.remove)
        except (ZygoteUnavailable, OSError, asyncio.CancelledError):
            pass
    if support.base is None:
        try:
            check_stem(zygote, pid)
        except ZygoteUnavailable:
            zygote.broken = True
            raise
        return None
    try:
        return await prepare_stem(support, pids_max, zygote, memory_mb, pid, vcpus=vcpus)
    except OSError as exc:
        raise ZygoteUnavailable(f"cannot cap zygote {zygote.name}'s stem {pid}: {exc}") from None
