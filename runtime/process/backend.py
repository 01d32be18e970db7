"""The embedded default backend: one OS process per sandbox.

Protections, strongest available first (probed at start: ``runtime.process.probe``):
  * identity: a uid of its own per sandbox (per model zygote for the replicas it
    forks, which then get user + PID namespaces of their own), no groups, no
    capabilities, no_new_privs, not dumpable; a seccomp filter;
  * files: a default-deny mount namespace (``runtime.process.jail``): read-only system
    and Python directories, the bundle read-only at /opt/ml/model, a private
    /tmp sized at the tier, /proc showing only its own processes;
  * memory and processes: a per-sandbox cgroup (v2 or v1) capped at the tier,
    so the kernel OOM-kills a sandbox that allocates past it, with pids.max;
    where no cgroup can be made, RLIMIT_AS (tier + headroom for address space
    that is mapped but never touched) plus an RSS watchdog that kills at the tier;
  * network: a fresh network namespace (loopback only, down) where unshare works;
  * accelerators: hidden through the *_VISIBLE_DEVICES variables;
  * lifetime: PR_SET_PDEATHSIG, so sandboxes die with the gateway; destroy kills
    the whole cgroup.

The privileged steps happen where no model code has run: in the gateway
(cgroups of a model zygote's replicas), in a base zygote's stem or a fresh
worker before it loads anything (mount namespace, uid, filter).
"""
from __future__ import annotations

import asyncio
import json
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

from runtime import protocol
from runtime.bundle import MULTI_MODEL
from runtime.process import cgroups, isolation, jail
from runtime.process import protections as host_protections
from runtime.process.logpipe import LogPipe, log_stamp
from runtime.process.sandbox import ProcessSandbox, verified_replica_protections
from runtime.process.stems import replica_cgroup
from runtime.process.templates import make_template
from runtime.process.uids import UidPool, UidsExhausted, default_range
from runtime.process.zygote_handle import AdoptedProcess, ZygoteUnavailable, become_subreaper
from runtime.process.zygotes import ZygoteConfig, ZygoteSet
from runtime.sandbox import (
    EXITED,
    LOAD_FAILED,
    OUT_OF_MEMORY,
    SPAWN_FAILED,
    WARMUP_ENV,
    Backend,
    Listener,
    Sandbox,
    SandboxGroup,
    SandboxSpec,
    StartError,
    StartFacts,
    State,
    oom_message,
    thread_env,
)

log = logging.getLogger("slimserve.process")
PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
RLIMIT_HEADROOM_BYTES = 1 << 30
MAX_SAMPLE_BYTES = 64 << 10           # a larger request is not kept to warm up stems with
PASSED_ENV = ("LANG", "LANGUAGE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
PASSED_ENV_PREFIXES = ("LC_",)


@dataclass(frozen=True)
class ProcessBackendConfig:
    work_dir: str                     # per-sandbox temp dirs are made under it
    cgroup_mode: str = "auto"         # auto | v2 | v1 | none
    network_isolation: bool = True
    start_timeout_s: float = 120.0    # spawn + bundle load
    watchdog_interval_s: float = 0.2  # RSS checks where no cgroup caps memory
    python: str = sys.executable
    instance: str = "default"         # names this gateway's cgroup subtree and its uid range
    zygotes: ZygoteConfig | None = None   # None: every sandbox is a fresh interpreter
    pids_max: int = 1024              # processes + threads per sandbox (cgroup pids.max)
    uid_range: tuple[int, int] | None = None   # (first, count) of sandbox uids; None: from the instance
    extra_binds: tuple[str, ...] = ()  # host paths every sandbox also sees, read-only
    max_response_bytes: int = 6 << 20  # the largest synchronous answer a sandbox may send


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, config: ProcessBackendConfig, listeners: list[Listener] | None = None):
        self.config = config
        self.listeners = list(listeners or []) + [self._on_event]
        self.cgroup_support = cgroups.detect(config.cgroup_mode, config.instance)
        self._sandboxes: dict[str, ProcessSandbox] = {}
        self._groups: dict[str, cgroups.Cgroup] = {}        # open groups' shared cgroups, by group name
        self._background: list[asyncio.Task] = []
        self.subreaper = False
        self.uids = UidPool(*(config.uid_range or default_range(config.instance)))
        self.confinement: dict = {}           # what runtime.process.probe found this host allows
        self.binds = jail.default_binds(config.extra_binds)
        zcfg = config.zygotes or ZygoteConfig(enabled=False)
        self.zygotes = ZygoteSet(replace(zcfg, env=self._base_env(), cgroups=self.cgroup_support.to_args(),
                                         pids_max=config.pids_max), config.python)

    @property
    def confined(self) -> bool:
        return host_protections.confined(self.confinement)

    async def probe(self) -> None:
        """Keep what confinement this host allows (``protections.probe``); warn about what it does not."""
        self.confinement = await host_protections.probe(
            self.config.python, Path(self.config.work_dir) / ".probe", self.uids.first + self.uids.count - 1,
            self.zygotes.config.env)
        host_protections.warn_missing(self.confinement)
        self.zygotes.config.seccomp = self.confined

    async def open(self) -> None:
        await self.probe()
        await asyncio.to_thread(cgroups.sweep_orphans, self.cgroup_support)
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
        # Stems of the zygotes just closed may still be on their way out: kill what is left in this
        # gateway's cgroups, then remove them.
        await asyncio.to_thread(cgroups.sweep_orphans, self.cgroup_support)
        cgroups.remove_base(self.cgroup_support)

    def protections(self) -> dict:
        return host_protections.table(self.cgroup_support, self.confinement, self.uids,
                                      self.config.network_isolation, self.config.pids_max)

    def _base_env(self) -> dict:
        """A sandbox's environment starts empty: none of the gateway's variables (credentials,
        tokens, URLs) reach model code, only locale and CPU-library settings the host needs."""
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith(PASSED_ENV_PREFIXES)}
        env.update(isolation.SANDBOX_ENV)
        env.update(PATH=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), HOME="/tmp", PYTHONPATH=PROJECT_ROOT)
        return env

    # --- starting a sandbox ----------------------------------------------------
    async def start(self, spec: SandboxSpec) -> ProcessSandbox:
        """Fork from a model zygote, else from the base zygote, else start a fresh
        interpreter.  A zygote that fails costs this caller time, never an error."""
        if spec.image:
            raise StartError(LOAD_FAILED, f"image {spec.image} brings its own model server: serve it with "
                                          "--backend docker")
        if spec.group is not None:          # inside a shared cap: a base-zygote stem moves into the group's
            base = self.zygotes.base         # cgroup; a model zygote's replicas cannot (they are unprivileged)
            if base is not None and base.alive and base.uid is None and spec.group.name in self._groups:
                try:
                    return await self._start(spec, "zygote", base)
                except ZygoteUnavailable as exc:
                    log.warning("%s; starting %s fresh", exc, spec.sandbox_id)
                except StartError as exc:
                    if exc.kind != EXITED:
                        raise
            return await self._start(spec, "fresh", None)
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
            return sb
        return await self._start(spec, "fresh", None)

    def _want_template(self, spec: SandboxSpec, request) -> None:
        """A bundle with traffic gets a model zygote, so later cold starts skip loading it: once
        one of its sandboxes has answered a request, which its stems then replay to warm up (only a
        request that succeeded, so a request that kills its sandbox is never replayed; none with
        SLIMSERVE_WARMUP=0, for models whose calls have side effects)."""
        if spec.check_only or spec.group is not None or self.zygotes.base is None or not self.zygotes.base.alive:
            return
        warm = (spec.env.get(WARMUP_ENV, "1") != "0" and not request.body_file and not request.response_file
                and len(request.body) <= MAX_SAMPLE_BYTES)
        spec = replace(spec, sample=request if warm else None)
        self.zygotes.want_template((spec.bundle_dir, spec.memory_mb), lambda: make_template(self, spec))

    def snapshot(self) -> dict:
        return self.zygotes.snapshot()

    async def open_group(self, group: SandboxGroup) -> bool:
        """A parent cgroup capped at the group's memory, vCPUs and (pids_max x members) processes;
        its sandboxes' own cgroups go inside it.  Without cgroups the caller splits the caps."""
        if self.cgroup_support.base is None:
            return False
        if group.name not in self._groups:
            self._groups[group.name] = await asyncio.to_thread(
                cgroups.Cgroup, self.cgroup_support, cgroups.group_name(group.name), group.memory_mb << 20,
                self.config.pids_max * max(1, group.members), vcpus=group.vcpus, parent=True)
        return True

    async def close_group(self, group: SandboxGroup) -> None:
        cg = self._groups.pop(group.name, None)
        if cg is not None:
            await asyncio.to_thread(cg.remove)

    async def release_bundle(self, bundle_dir: str) -> None:
        await self.zygotes.drop(bundle_dir)

    def setup_for(self, spec: SandboxSpec, cgroup, tmp_dir: Path, uid: int | None = None,
               role: str = "sandbox") -> dict:
        limit = spec.memory_mb << 20
        has_cgroup = self.cgroup_support.base is not None
        setup = {
            "bundle": spec.bundle_dir, "kind": spec.bundle_kind, "memory_limit_bytes": limit,
            "cgroup_procs": cgroup.procs_files if cgroup is not None else [],
            "rlimit_bytes": 0 if has_cgroup else limit + RLIMIT_HEADROOM_BYTES,
            "no_network": self.config.network_isolation or spec.network_isolation,
            "tmp_dir": str(tmp_dir), "env": dict(spec.env, TMPDIR=str(tmp_dir)), "vcpus": spec.vcpus,
        }
        if role != "zygote":                 # a model zygote stays single-threaded: it forks
            setup["env"].update(thread_env(spec.vcpus, spec.env))
        if uid is not None:
            replicas = bool(self.confinement.get("replicas", {}).get("ok"))
            setup["confine"] = {
                "uid": uid, "gid": uid, "root": str(tmp_dir), "tmp_bytes": limit // 2, "hide_pids": True,
                "binds": [[p, p] for p in self.binds] + [[spec.bundle_dir, jail.MODEL_DIR]],
                "seccomp": "zygote" if role == "zygote" and replicas else "sandbox",
            }
            setup["replica_userns"] = replicas
        if self.confined:                 # a replica is confined already, by its model zygote
            setup["env"]["TMPDIR"] = "/tmp"
        return setup

    def lease_uid(self) -> int | None:
        if not self.confined:
            return None
        try:
            return self.uids.acquire()
        except UidsExhausted as exc:
            raise StartError(SPAWN_FAILED, f"cannot start a sandbox: {exc}") from None

    async def _start(self, spec: SandboxSpec, path: str, zygote) -> ProcessSandbox:
        t0 = time.perf_counter()
        tmp_dir = Path(self.config.work_dir) / spec.sandbox_id
        tmp_dir.mkdir(parents=True, exist_ok=True)
        replica = zygote is not None and zygote.uid is not None     # from an unprivileged model zygote
        if replica:
            uid = zygote.uid
            self.uids.retain(uid)
        else:
            uid = self.lease_uid()
        release = None if uid is None else (lambda: self.uids.release(uid))
        if replica:
            uid = None              # confined already: nothing for the stem to apply
        cgroup = None
        gateway_ms = {}
        # A fresh worker joins its cgroup before loading anything; a replica cannot (it is
        # unprivileged), so the gateway moves it in (ahead of demand, see stems.prepare_stem);
        # a base zygote's stem brings its own.
        if self.cgroup_support.base is not None and zygote is None:
            t1 = time.perf_counter()
            name = spec.sandbox_id
            if spec.group is not None:
                if spec.group.name not in self._groups:
                    raise StartError(SPAWN_FAILED, f"sandbox group {spec.group.name} is not open")
                name = f"{self._groups[spec.group.name].name}/{spec.sandbox_id}"
            cgroup = await asyncio.to_thread(cgroups.Cgroup, self.cgroup_support, name,
                                             spec.memory_mb << 20, self.config.pids_max, vcpus=spec.vcpus)
            gateway_ms["cgroup_make_ms"] = (time.perf_counter() - t1) * 1000.0
        setup = self.setup_for(spec, cgroup, tmp_dir, uid)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fork_info = {}
        logs = LogPipe(spec.log_path)
        try:
            logs.write(f"{log_stamp()} --- sandbox {spec.sandbox_id} starting ({spec.memory_mb} MB, {path}) ---\n"
                       .encode())
            if zygote is None:
                proc = await self._spawn_fresh(setup, child_sock, parent_sock, logs.write_fd)
                logs.handed_over()
            else:
                extra = {"cgroup_parent": self._groups[spec.group.name].name} \
                    if spec.group is not None and not replica else {}
                fork_info = await zygote.assign(dict(setup, role="sandbox", cgroup_by_gateway=replica, **extra),
                                                [child_sock.fileno(), logs.write_fd])
                logs.handed_over()
                if replica:
                    t1 = time.perf_counter()
                    cgroup = await replica_cgroup(self.cgroup_support, self.config.pids_max, zygote,
                                                  fork_info["pid"], spec.memory_mb, spec.vcpus)
                    gateway_ms["cgroup_join_ms"] = (time.perf_counter() - t1) * 1000.0
                proc = AdoptedProcess(fork_info["pid"])
                if fork_info.get("cgroup") and not replica:      # named by a trusted (root) stem only
                    name = fork_info["cgroup"]
                    if extra:                                    # it moved itself into its group's cgroup
                        name = f"{extra['cgroup_parent']}/{name}"
                    cgroup = cgroups.Cgroup.adopt(self.cgroup_support, name, spec.memory_mb << 20)
        except BaseException:
            logs.close()
            parent_sock.close()
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            await asyncio.to_thread(shutil.rmtree, tmp_dir, True)
            if release is not None:
                release()
            raise
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        sb = ProcessSandbox(spec, self.listeners, proc, reader, writer, cgroup, tmp_dir, release,
                            self.config.max_response_bytes)
        if path != "model-zygote" and spec.bundle_kind != MULTI_MODEL:   # its first success makes the bundle
            # a model zygote (a multi-model sandbox's models come and go: there is no one model to keep)
            sb.on_first_success = lambda request: self._want_template(spec, request)
        self._sandboxes[sb.id] = sb
        hello = await self._handshake(sb)
        timings = dict(hello.get("timings", {}), **gateway_ms)
        if fork_info:
            timings["fork_ms"] = fork_info.get("fork_ms", 0.0)
        protections = hello.get("protections", {})
        if replica and isinstance(protections, dict):
            protections["applied"] = verified_replica_protections(proc.pid, zygote.proc.pid,
                                                                   list(protections.get("applied") or []))
        sb.facts = StartFacts(pid=proc.pid, protections=protections, path=path,
                              start_ms=(time.perf_counter() - t0) * 1000.0, timings=timings,
                              load_ms=timings.get("load_ms"), stem=fork_info.get("stem"))
        sb._move(State.IDLE)
        return sb

    async def _spawn_fresh(self, setup: dict, child_sock: socket.socket, parent_sock: socket.socket, log_fd: int):
        """A new interpreter, started root with the gateway's base environment only: the model's
        variables (PYTHONPATH, LD_PRELOAD, … are the model's to choose) follow on the channel and
        are set after the worker has confined itself, as on the zygote paths."""
        argv = [self.config.python, "-s", "-m", "runtime.worker", "--fd", str(child_sock.fileno()),
                "--bundle", setup["bundle"], "--kind", setup["kind"]]
        for procs in setup["cgroup_procs"]:
            argv += ["--cgroup-procs", procs]
        if setup["rlimit_bytes"]:
            argv += ["--rlimit-bytes", str(setup["rlimit_bytes"])]
        if setup["no_network"]:
            argv.append("--no-network")
        if setup.get("confine"):
            argv += ["--confine", json.dumps(setup["confine"])]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, env=self.zygotes.config.env,
                cwd=setup["tmp_dir"], pass_fds=(child_sock.fileno(),), start_new_session=True,
            )
        except OSError as exc:
            raise StartError(SPAWN_FAILED, f"cannot start a sandbox process: {exc}") from None
        parent_sock.sendall(protocol.encode({"op": "env", "env": setup["env"]}))
        return proc

    async def _handshake(self, sb: ProcessSandbox) -> dict:
        """Wait for the sandbox to report its bundle loaded; a failure destroys it."""
        spec = sb.spec
        try:
            hello, _ = await asyncio.wait_for(protocol.recv_async(sb._reader, protocol.PEER_HEADER, 0),
                                              self.config.start_timeout_s)
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
        except BaseException:                 # cancelled, or anything else: never leave it running untracked
            await asyncio.shield(sb.destroy("start abandoned"))
            raise
        if hello.get("op") != "ready":
            await sb.destroy(hello.get("message", "load failed"))
            kind = hello.get("kind", LOAD_FAILED)
            if kind == OUT_OF_MEMORY:
                raise StartError(OUT_OF_MEMORY, oom_message(spec.memory_mb, while_loading=True))
            raise StartError(kind, f"the model failed to load: {hello.get('message', 'unknown error')}")
        return hello

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
