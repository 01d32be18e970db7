"""The embedded default backend: one OS process per sandbox.

Protections, strongest available first:
  * memory: a per-sandbox cgroup (v2 or v1) capped at the tier, so the kernel
    OOM-kills a sandbox that allocates past it; where no cgroup can be made,
    RLIMIT_AS (tier + headroom for address space that is mapped but never
    touched) plus an RSS watchdog that kills at the tier;
  * network: a fresh network namespace (loopback only, down) where unshare works;
  * accelerators: hidden through the *_VISIBLE_DEVICES variables;
  * files: a private temp dir (TMPDIR and cwd), removed with the sandbox;
  * lifetime: PR_SET_PDEATHSIG, so sandboxes die with the gateway.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from . import cgroups, isolation, protocol
from .channel import ChannelSandbox
from .zygotes import AdoptedProcess, ZygoteConfig, ZygoteHandle, ZygoteSet, ZygoteUnavailable, become_subreaper
from .sandbox import (
    EXITED, LOAD_FAILED, OUT_OF_MEMORY, SPAWN_FAILED, Backend, Listener, Sandbox, SandboxSpec, StartError, State,
    oom_message,
)

log = logging.getLogger("slimserve.process")
PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
RLIMIT_HEADROOM_BYTES = 1 << 30


@dataclass(frozen=True)
class ProcessBackendConfig:
    work_dir: str                     # per-sandbox temp dirs are made under it
    cgroup_mode: str = "auto"         # auto | v2 | v1 | none
    network_isolation: bool = True
    start_timeout_s: float = 120.0    # spawn + bundle load
    watchdog_interval_s: float = 0.2  # RSS checks where no cgroup caps memory
    python: str = sys.executable
    instance: str = "default"         # names this gateway's cgroup subtree
    zygotes: ZygoteConfig | None = None   # None: every sandbox is a fresh interpreter


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class ProcessSandbox(ChannelSandbox):
    def __init__(self, spec, listeners, proc, reader, writer, cgroup, tmp_dir):
        super().__init__(spec, listeners, reader, writer)
        self.proc = proc
        self.cgroup: cgroups.Cgroup | None = cgroup
        self.tmp_dir = tmp_dir
        self.killed_by_watchdog = False
        self.oom_killed = False          # latched before the cgroup is removed
        self._ps = None
        self._monitor = asyncio.get_running_loop().create_task(self._watch_exit())

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
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self._mark_dead(reason)


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, config: ProcessBackendConfig, listeners: list[Listener] | None = None):
        self.config = config
        self.listeners = list(listeners or []) + [self._on_event]
        self.cgroup_support = cgroups.detect(config.cgroup_mode, config.instance)
        self._sandboxes: dict[str, ProcessSandbox] = {}
        self._background: list[asyncio.Task] = []
        self.subreaper = False
        zcfg = config.zygotes or ZygoteConfig(enabled=False)
        cg = self.cgroup_support
        self.zygotes = ZygoteSet(replace(zcfg, env=self._base_env(), cgroup_base=str(cg.base or ""),
                                         cgroup_version=cg.version or ""), config.python)

    async def open(self) -> None:
        cgroups.sweep_orphans(self.cgroup_support)
        loop = asyncio.get_running_loop()
        if self.cgroup_support.base is None:
            self._background.append(loop.create_task(self._rss_watchdog()))
        if self.zygotes.config.enabled:
            self.subreaper = become_subreaper()
            if self.subreaper:
                self._background.append(loop.create_task(self._reap_strays()))
                await self.zygotes.open()
            else:
                log.warning("cannot become a child subreaper; zygotes are off")

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for sb in list(self._sandboxes.values()):
            await sb.destroy("backend closed")
        await self.zygotes.close()
        cgroups.remove_base(self.cgroup_support)

    def protections(self) -> dict:
        cg = self.cgroup_support
        return {
            "memory": {
                "mechanism": f"cgroup {cg.version}" if cg.version else "rlimit_as+rss_watchdog",
                "enforced_by_kernel": cg.version is not None,
                "detail": cg.reason,
            },
            "network": {"mechanism": "netns" if self.config.network_isolation else "none",
                        "detail": "checked per sandbox; see describe"},
            "gpu": {"mechanism": "hidden (CUDA/HIP/ROCR_VISIBLE_DEVICES empty)"},
            "tmp": {"mechanism": "private temp dir per sandbox"},
        }

    def _base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLIMSERVE_"))}
        env.update(isolation.SANDBOX_ENV)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_ROOT, env.get("PYTHONPATH", "")) if p)
        return env

    # --- starting a sandbox ----------------------------------------------------
    async def start(self, spec: SandboxSpec) -> ProcessSandbox:
        """Fork from a model zygote, else from the base zygote, else start a fresh
        interpreter.  A zygote that fails costs this caller time, never an error."""
        if spec.image:
            raise StartError(LOAD_FAILED, f"image {spec.image} brings its own model server: serve it with "
                                          "--backend docker")
        key = (spec.bundle_dir, spec.memory_mb)
        if not spec.check_only:
            self.zygotes.note_cold_start(key)
        for zygote, path in ((self.zygotes.template(key), "model-zygote"), (self.zygotes.base, "zygote")):
            if zygote is None or not zygote.alive:
                continue
            try:
                sb = await self._start(spec, path, zygote)
            except ZygoteUnavailable as exc:
                log.warning("%s; trying the next path for %s", exc, spec.sandbox_id)
                continue
            except StartError as exc:
                if exc.kind != EXITED:       # the bundle itself failed: another path would fail the same way
                    raise
                log.warning("forked sandbox %s died while starting (%s); trying the next path",
                            spec.sandbox_id, exc.message)
                continue
            if path == "zygote":
                self._want_template(spec)
            return sb
        sb = await self._start(spec, "fresh", None)
        self._want_template(spec)
        return sb

    def _want_template(self, spec: SandboxSpec) -> None:
        """A bundle with traffic gets a model zygote, so later cold starts skip loading it."""
        if not spec.check_only and self.zygotes.base is not None and self.zygotes.base.alive:
            self.zygotes.want_template((spec.bundle_dir, spec.memory_mb), lambda: self._make_template(spec))

    async def release_bundle(self, bundle_dir: str) -> None:
        await self.zygotes.drop(bundle_dir)

    def _setup(self, spec: SandboxSpec, cgroup, tmp_dir: Path) -> dict:
        limit = spec.memory_mb << 20
        has_cgroup = self.cgroup_support.base is not None
        return {
            "bundle": spec.bundle_dir, "kind": spec.bundle_kind, "memory_limit_bytes": limit,
            "cgroup_procs": cgroup.procs_file if cgroup is not None else "",
            "rlimit_bytes": 0 if has_cgroup else limit + RLIMIT_HEADROOM_BYTES,
            "no_network": self.config.network_isolation or spec.network_isolation,
            "tmp_dir": str(tmp_dir), "env": dict(spec.env, TMPDIR=str(tmp_dir)),
        }

    async def _start(self, spec: SandboxSpec, path: str, zygote) -> ProcessSandbox:
        t0 = time.perf_counter()
        tmp_dir = Path(self.config.work_dir) / spec.sandbox_id
        tmp_dir.mkdir(parents=True, exist_ok=True)
        cgroup = None
        if self.cgroup_support.base is not None and zygote is None:   # a zygote's stem brings its own
            cgroup = cgroups.Cgroup(self.cgroup_support, spec.sandbox_id, spec.memory_mb << 20)
        setup = self._setup(spec, cgroup, tmp_dir)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fork_info = {}
        try:
            with open(spec.log_path, "ab", buffering=0) as logf:
                logf.write(f"--- sandbox {spec.sandbox_id} starting ({spec.memory_mb} MB, {path}) ---\n".encode())
                if zygote is None:
                    proc = await self._spawn_fresh(setup, child_sock, logf)
                else:
                    fork_info = await zygote.assign(dict(setup, role="sandbox"), [child_sock.fileno(), logf.fileno()])
                    proc = AdoptedProcess(fork_info["pid"])
                    if fork_info.get("cgroup"):
                        cgroup = cgroups.Cgroup.adopt(self.cgroup_support, fork_info["cgroup"], spec.memory_mb << 20)
        except BaseException:
            parent_sock.close()
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        sb = ProcessSandbox(spec, self.listeners, proc, reader, writer, cgroup, tmp_dir)
        self._sandboxes[sb.id] = sb
        hello = await self._handshake(sb)
        timings = dict(hello.get("timings", {}))
        if fork_info:
            timings["fork_ms"] = fork_info.get("fork_ms", 0.0)
        sb.info.update(pid=hello.get("pid"), protections=hello.get("protections", {}), path=path,
                       start_ms=(time.perf_counter() - t0) * 1000.0, timings=timings,
                       load_ms=timings.get("load_ms"), stem=fork_info.get("stem"))
        sb._move(State.IDLE)
        return sb

    async def _spawn_fresh(self, setup: dict, child_sock: socket.socket, logf):
        argv = [self.config.python, "-m", "runtime.worker", "--fd", str(child_sock.fileno()),
                "--bundle", setup["bundle"], "--kind", setup["kind"]]
        if setup["cgroup_procs"]:
            argv += ["--cgroup-procs", setup["cgroup_procs"]]
        if setup["rlimit_bytes"]:
            argv += ["--rlimit-bytes", str(setup["rlimit_bytes"])]
        if setup["no_network"]:
            argv.append("--no-network")
        env = dict(self.zygotes.config.env, **setup["env"])
        try:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                cwd=setup["tmp_dir"], pass_fds=(child_sock.fileno(),), start_new_session=True,
            )
        except OSError as exc:
            raise StartError(SPAWN_FAILED, f"cannot start a sandbox process: {exc}") from None

    async def _handshake(self, sb: ProcessSandbox) -> dict:
        """Wait for the sandbox to report its bundle loaded; a failure destroys it."""
        spec = sb.spec
        try:
            hello, _ = await asyncio.wait_for(protocol.recv_async(sb._reader), self.config.start_timeout_s)
        except asyncio.TimeoutError:
            await sb.destroy("start timed out")
            raise StartError(LOAD_FAILED,
                             f"the model did not finish loading within {self.config.start_timeout_s:g} s") from None
        except (protocol.ProtocolError, ConnectionError):
            kind, message = await sb._death_cause()
            await sb.destroy(message)
            if kind == OUT_OF_MEMORY:
                raise StartError(OUT_OF_MEMORY, oom_message(spec.memory_mb, while_loading=True)) from None
            raise StartError(EXITED, f"the sandbox exited while loading the model ({sb._exit_text()});"
                                     f" see the endpoint's logs") from None
        if hello.get("op") != "ready":
            await sb.destroy(hello.get("message", "load failed"))
            kind = hello.get("kind", LOAD_FAILED)
            if kind == OUT_OF_MEMORY:
                raise StartError(OUT_OF_MEMORY, oom_message(spec.memory_mb, while_loading=True))
            raise StartError(kind, f"the model failed to load: {hello.get('message', 'unknown error')}")
        return hello

    async def _make_template(self, spec: SandboxSpec) -> ZygoteHandle:
        """Ask the base zygote for a process that loads ``spec``'s bundle and becomes its zygote."""
        base = self.zygotes.base
        if base is None or not base.alive:
            raise ZygoteUnavailable("no base zygote")
        zid = f"zy-{spec.sandbox_id[3:]}"
        tmp_dir = Path(self.config.work_dir) / zid
        tmp_dir.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cgroup = None
        setup = dict(self._setup(spec, None, tmp_dir), role="zygote")
        sample = b""
        if spec.sample is not None:   # stems pre-run it, so copy-on-write faults happen before a request waits
            sample = spec.sample.body
            setup["warmup"] = {"content_type": spec.sample.content_type, "accept": spec.sample.accept}
        try:
            with open(self.zygotes.config.log_path, "ab", buffering=0) as logf:
                reply = await base.assign(setup, [theirs.fileno(), logf.fileno()], payload=sample)
            proc = AdoptedProcess(reply["pid"])
            if reply.get("cgroup"):
                cgroup = cgroups.Cgroup.adopt(self.cgroup_support, reply["cgroup"], spec.memory_mb << 20)
            ours.setblocking(False)
            hello = await asyncio.wait_for(protocol.recv_sock_async(ours), self.config.start_timeout_s)
        except (ZygoteUnavailable, protocol.ProtocolError, asyncio.TimeoutError, OSError) as exc:
            ours.close()
            if cgroup is not None:
                cgroup.kill_all()
                cgroup.remove()
            raise ZygoteUnavailable(f"model zygote for {spec.bundle_dir} did not start: {exc!r}") from None
        finally:
            theirs.close()
        handle = ZygoteHandle(f"model:{Path(spec.bundle_dir).name}", proc, ours, hello)
        handle.cgroup = cgroup
        if hello.get("op") != "ready" or hello.get("threads", 1) != 1:
            await handle.close()
            raise ZygoteUnavailable(f"model zygote for {spec.bundle_dir} is not usable: {hello}")
        log.info("model zygote pid %s for %s ready (load %.1f ms)", proc.pid, spec.bundle_dir,
                 hello.get("timings", {}).get("load_ms", 0.0))
        return handle

    # --- background ----------------------------------------------------------------
    def _on_event(self, event: str, sb: Sandbox) -> None:
        if event == "destroyed":
            self._sandboxes.pop(sb.id, None)

    async def _rss_watchdog(self) -> None:
        """Where no cgroup caps memory, kill a sandbox whose RSS passes its tier."""
        while True:
            await asyncio.sleep(self.config.watchdog_interval_s)
            for sb in list(self._sandboxes.values()):
                if sb.alive and sb.memory_bytes() > sb.spec.memory_mb << 20:
                    sb.killed_by_watchdog = True
                    try:
                        os.killpg(sb.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    async def _reap_strays(self) -> None:
        """As child subreaper the gateway inherits orphans (stems of a dead zygote, or
        what a sandbox left behind); reap the exited ones that nobody else waits for."""
        me = psutil.Process()
        while True:
            await asyncio.sleep(5.0)
            known = {sb.proc.pid for sb in self._sandboxes.values()} | self.zygotes.pids()
            for child in me.children():
                try:
                    if child.pid not in known and child.status() == psutil.STATUS_ZOMBIE:
                        os.waitpid(child.pid, os.WNOHANG)
                except (psutil.Error, ChildProcessError):
                    pass
            cgroups.remove_empty(self.cgroup_support, "stem-")
