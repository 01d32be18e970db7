"""Model zygotes: a bundle with traffic gets a process that has loaded it and forks its
sandboxes, so later cold starts skip the load.  The base zygote forks it; an unprivileged one
announces its stems, which the gateway checks and caps (``runtime.process.stems``)."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
from pathlib import Path

from runtime import protocol
from runtime.process import cgroups
from runtime.process.logpipe import LogPipe
from runtime.process.stems import prepare_stem
from runtime.process.zygote_handle import AdoptedProcess, ZygoteHandle, ZygoteUnavailable
from runtime.sandbox import SandboxSpec, StartError

log = logging.getLogger("slimserve.process")


async def make_template(backend, spec: SandboxSpec) -> ZygoteHandle:
    """Ask ``backend``'s base zygote for a process that loads ``spec``'s bundle and becomes its zygote."""
    base = backend.zygotes.base
    if base is None or not base.alive:
        raise ZygoteUnavailable("no base zygote")
    zid = f"zy-{spec.sandbox_id[3:]}"
    tmp_dir = Path(backend.config.work_dir) / zid
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        uid = backend.lease_uid()
    except StartError as exc:
        raise ZygoteUnavailable(exc.message) from None

    def release() -> None:
        backend.uids.release(uid)
        shutil.rmtree(tmp_dir, ignore_errors=True)

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    events, their_events = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cgroup = None
    setup = dict(backend.setup_for(spec, None, tmp_dir, uid, role="zygote"), role="zygote")
    sample = b""
    if spec.sample is not None:   # stems pre-run it, so copy-on-write faults happen before a request waits
        sample = spec.sample.body
        setup["warmup"] = {"content_type": spec.sample.content_type, "accept": spec.sample.accept}
    logs = LogPipe(spec.log_path)        # the model zygote prints into its endpoint's log, through a pipe
    proc = None
    try:
        logs.write(f"--- model zygote {zid} starting ({spec.memory_mb} MB) ---\n".encode())
        fds = [theirs.fileno(), logs.write_fd] + ([their_events.fileno()] if uid is not None else [])
        reply = await base.assign(setup, fds, payload=sample)
        logs.handed_over()
        proc = AdoptedProcess(reply["pid"])
        if reply.get("cgroup"):
            cgroup = cgroups.Cgroup.adopt(backend.cgroup_support, reply["cgroup"], spec.memory_mb << 20)
        ours.setblocking(False)
        hello = await asyncio.wait_for(protocol.recv_sock_async(ours), backend.config.start_timeout_s)
    except BaseException as exc:          # whatever went wrong, nothing of it is left running or held
        logs.close()
        ours.close()
        events.close()
        if proc is not None and proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if cgroup is not None:
            await asyncio.shield(asyncio.to_thread(cgroup.remove))
        await asyncio.shield(asyncio.to_thread(release))
        if isinstance(exc, (ZygoteUnavailable, protocol.ProtocolError, asyncio.TimeoutError, OSError)):
            raise ZygoteUnavailable(f"model zygote for {spec.bundle_dir} did not start: {exc!r}") from None
        raise
    finally:
        theirs.close()
        their_events.close()
    handle = ZygoteHandle(f"model:{Path(spec.bundle_dir).name}", proc, ours, hello, uid=uid, on_close=release)
    handle.cgroup = cgroup
    if uid is not None:                   # unprivileged: the gateway caps its stems, ahead of demand
        handle.watch_stems(events, lambda pid: prepare_stem(backend.cgroup_support, backend.config.pids_max, handle,
                                                    spec.memory_mb, pid, strict=False, vcpus=spec.vcpus),
                           limit=backend.zygotes.config.stems + 2)
    else:
        events.close()
    if hello.get("op") != "ready" or hello.get("threads", 1) != 1:
        await handle.close()
        raise ZygoteUnavailable(f"model zygote for {spec.bundle_dir} is not usable: {hello}")
    log.info("model zygote pid %s for %s ready (load %.1f ms)", proc.pid, spec.bundle_dir,
             hello.get("timings", {}).get("load_ms", 0.0))
    return handle
