"""The embedded default backend: one OS process per sandbox.

Protections, strongest available first (probed at start: ``runtime.process.jail.probe``):
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
from runtime.channel import ChannelSandbox
from runtime.process import cgroups, isolation, jail
from runtime.process.logpipe import LogPipe
from runtime.process.uids import UidPool, UidsExhausted, default_range
from runtime.process.zygotes import (
    AdoptedProcess,
    ZygoteConfig,
    ZygoteHandle,
    ZygoteSet,
    ZygoteUnavailable,
    become_subreaper,
)
from runtime.sandbox import (
    EXITED,
    LOAD_FAILED,
    OUT_OF_MEMORY,
    SPAWN_FAILED,
    WARMUP_ENV,
    Backend,
    Listener,
    Sandbox,
    SandboxSpec,
    StartError,
    StartFacts,
    State,
    oom_message,
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


def _status(pid: int) -> dict[str, str]:
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
    mine, theirs = _status(pid), _status(zygote_pid)
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


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, config: ProcessBackendConfig, listeners: list[Listener] | None = None):
        self.config = config
        self.listeners = list(listeners or []) + [self._on_event]
        self.cgroup_support = cgroups.detect(config.cgroup_mode, config.instance)
        self._sandboxes: dict[str, ProcessSandbox] = {}
        self._background: list[asyncio.Task] = []
        self.subreaper = False
        self.uids = UidPool(*(config.uid_range or default_range(config.instance)))
        self.confinement: dict = {}           # what runtime.process.jail.probe found this host allows
        self.binds = jail.default_binds(config.extra_binds)
        zcfg = config.zygotes or ZygoteConfig(enabled=False)
        self.zygotes = ZygoteSet(replace(zcfg, env=self._base_env(), cgroups=self.cgroup_support.to_args(),
                                         pids_max=config.pids_max), config.python)

    @property
    def confined(self) -> bool:
        """Sandboxes get the view, a uid of their own and the filter (the probe found all three)."""
        return all(self.confinement.get(k, {}).get("ok") for k in ("view", "uid", "seccomp"))

    async def probe(self) -> None:
        """Try each confinement in throwaway children (``runtime.process.jail`` as a program) and
        keep what this host allows; warn loudly about what it does not."""
        scratch = Path(self.config.work_dir) / ".probe"
        proc = await asyncio.create_subprocess_exec(
            self.config.python, "-m", "runtime.process.jail", str(scratch), str(self.uids.first + self.uids.count - 1),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.zygotes.config.env)
        out, err = await proc.communicate()
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        try:
            self.confinement = json.loads(out)
        except ValueError:
            why = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            self.confinement = {k: {"ok": False, "detail": f"the probe failed: {why}"}
                                for k in ("network", "view", "uid", "seccomp", "replicas")}
        missing = {k: v["detail"] for k, v in self.confinement.items() if not v["ok"]}
        if not self.confined:
            log.warning("SANDBOXES ARE NOT CONFINED on this host: model code can read and write what the gateway "
                        "can. %s", "; ".join(f"{k}: {v}" for k, v in missing.items()))
        elif "replicas" in missing:
            log.warning("sandboxes forked from one model zygote share its uid, PID namespace and /tmp: %s",
                        missing["replicas"])
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
        """Each protection, whether this host gives it, and in one line what it is or why not
        (from the probe at start: nothing here guesses from versions)."""
        cg, c = self.cgroup_support, self.confinement

        def probed(key: str, what: str) -> dict:
            got = c.get(key, {"ok": False, "detail": "not probed yet"})
            return {"ok": got["ok"], "detail": what if got["ok"] else f"MISSING: {got['detail']}"}

        last = self.uids.first + self.uids.count - 1
        memory = {"ok": cg.version is not None,
                  "mechanism": f"cgroup {cg.version}" if cg.version else "rlimit_as+rss_watchdog",
                  "detail": f"kernel-enforced cap per sandbox under {cg.base}" if cg.version else
                  f"no writable memory cgroup ({cg.reason}); falling back to RLIMIT_AS and an RSS watchdog"}
        pids_ok = cg.pids_base is not None
        if self.config.network_isolation:
            network = dict(probed("network", "each sandbox gets its own network namespace with no interfaces up:"
                                             " no host network, no loopback services, no abstract Unix sockets"),
                           mechanism="netns")
        else:
            network = {"ok": False, "mechanism": "host network (--allow-network)",
                       "detail": "sandboxes share the host's network namespace: they reach every address the host "
                                 "does, its loopback services and its abstract Unix sockets (those live in the "
                                 "network namespace, not the filesystem)"}
        view_ok = bool(c.get("view", {}).get("ok"))
        return {
            "memory_cap": memory,
            "sandbox_uid": dict(probed("uid", f"a uid of its own per sandbox ({self.uids.first}-{last}), never 0;"
                                              " no groups, no capabilities, no_new_privs, not dumpable"),
                                mechanism="setresuid"),
            "filesystem_view": dict(probed("view", "default-deny mount namespace: read-only system and Python "
                                                   "directories, the bundle read-only at /opt/ml/model; no state "
                                                   "dir, /run, /var, home directories or host sockets"),
                                    mechanism="mount namespace + pivot_root"),
            "private_tmp": {"ok": view_ok, "mechanism": "tmpfs" if view_ok else "directory",
                            "detail": "/tmp and /dev/shm are tmpfs of half the tier each; what is written there counts "
                                      "against its memory" if view_ok else
                                      "MISSING: a private directory as TMPDIR, on the host's disk, uncapped"},
            "pids_limit": {"ok": pids_ok, "mechanism": f"pids.max {self.config.pids_max}" if pids_ok else "none",
                           "detail": cg.pids_reason if pids_ok else f"MISSING: {cg.pids_reason or cg.reason}"},
            "process_isolation": dict(probed("view", "/proc shows a sandbox only its own processes ("
                                                     + (jail.proc_options() or "hidepid unavailable before Linux 5.8")
                                                     + "); other uids cannot be signalled or traced"),
                                      mechanism="hidepid + uid"),
            "replica_isolation": dict(probed("replicas", "sandboxes forked from one model zygote share its uid; "
                                                         "each is PID 1 of user, PID, mount and IPC namespaces of its"
                                                         " own, with its own /tmp"),
                                      mechanism="user + PID namespace"),
            "seccomp": dict(probed("seccomp", f"{len(jail.DENIED)} syscalls refused: mount, ptrace, kernel modules,"
                                              " keyrings, bpf, new namespaces (model zygotes may still make user "
                                              "namespaces for their replicas) …"), mechanism="libseccomp filter"),
            "network_isolation": network,
            "gpu_hidden": {"ok": True, "mechanism": "hidden",
                           "detail": "CUDA/HIP/ROCR_VISIBLE_DEVICES empty; no device nodes in the view but null, "
                                     "zero, full, random, urandom"},
            "dies_with_gateway": {"ok": True, "mechanism": "pdeathsig + cgroup",
                                  "detail": "sandboxes die with the gateway; a restart kills what a kill -9 left in "
                                            "this gateway's own cgroups, never another gateway's"},
        }

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
        if spec.check_only or self.zygotes.base is None or not self.zygotes.base.alive:
            return
        warm = spec.env.get(WARMUP_ENV, "1") != "0" and len(request.body) <= MAX_SAMPLE_BYTES
        spec = replace(spec, sample=request if warm else None)
        self.zygotes.want_template((spec.bundle_dir, spec.memory_mb), lambda: self._make_template(spec))

    async def release_bundle(self, bundle_dir: str) -> None:
        await self.zygotes.drop(bundle_dir)

    def _setup(self, spec: SandboxSpec, cgroup, tmp_dir: Path, uid: int | None = None,
               role: str = "sandbox") -> dict:
        limit = spec.memory_mb << 20
        has_cgroup = self.cgroup_support.base is not None
        setup = {
            "bundle": spec.bundle_dir, "kind": spec.bundle_kind, "memory_limit_bytes": limit,
            "cgroup_procs": cgroup.procs_files if cgroup is not None else [],
            "rlimit_bytes": 0 if has_cgroup else limit + RLIMIT_HEADROOM_BYTES,
            "no_network": self.config.network_isolation or spec.network_isolation,
            "tmp_dir": str(tmp_dir), "env": dict(spec.env, TMPDIR=str(tmp_dir)),
        }
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

    def _lease_uid(self) -> int | None:
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
            uid = self._lease_uid()
        release = None if uid is None else (lambda: self.uids.release(uid))
        if replica:
            uid = None              # confined already: nothing for the stem to apply
        cgroup = None
        gateway_ms = {}
        # A fresh worker joins its cgroup before loading anything; a replica cannot (it is
        # unprivileged), so the gateway moves it in (ahead of demand, see _prepare_stem);
        # a base zygote's stem brings its own.
        if self.cgroup_support.base is not None and zygote is None:
            t1 = time.perf_counter()
            cgroup = await asyncio.to_thread(cgroups.Cgroup, self.cgroup_support, spec.sandbox_id,
                                             spec.memory_mb << 20, self.config.pids_max)
            gateway_ms["cgroup_make_ms"] = (time.perf_counter() - t1) * 1000.0
        setup = self._setup(spec, cgroup, tmp_dir, uid)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fork_info = {}
        logs = LogPipe(spec.log_path)
        try:
            logs.write(f"--- sandbox {spec.sandbox_id} starting ({spec.memory_mb} MB, {path}) ---\n".encode())
            if zygote is None:
                proc = await self._spawn_fresh(setup, child_sock, parent_sock, logs.write_fd)
                logs.handed_over()
            else:
                fork_info = await zygote.assign(dict(setup, role="sandbox", cgroup_by_gateway=replica),
                                                [child_sock.fileno(), logs.write_fd])
                logs.handed_over()
                if replica:
                    t1 = time.perf_counter()
                    cgroup = await self._replica_cgroup(zygote, fork_info["pid"], spec)
                    gateway_ms["cgroup_join_ms"] = (time.perf_counter() - t1) * 1000.0
                proc = AdoptedProcess(fork_info["pid"])
                if fork_info.get("cgroup") and not replica:      # named by a trusted (root) stem only
                    cgroup = cgroups.Cgroup.adopt(self.cgroup_support, fork_info["cgroup"], spec.memory_mb << 20)
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
        if path != "model-zygote":            # its first success makes the bundle a model zygote
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

    def _check_stem(self, zygote: ZygoteHandle, pid) -> None:
        """A pid that a model zygote names must be one of its own stems: a process of its uid, in
        its cgroup.  The zygote has run model code, so what it says is checked, not believed."""
        members = zygote.cgroup.pids() if zygote.cgroup is not None else None
        if (not isinstance(pid, int) or isinstance(pid, bool) or pid == zygote.proc.pid
                or _status(pid).get("Uid", "").split()[:1] != [str(zygote.uid)]
                or (members is not None and pid not in members)):
            raise ZygoteUnavailable(f"zygote {zygote.name} named pid {pid!r}, which is not one of its stems")

    async def _prepare_stem(self, zygote: ZygoteHandle, memory_mb: int, pid: int, strict: bool = True):
        """Ahead of demand: a cgroup at the tier for a stem the zygote just forked, and the stem
        moved into it (a move can stall for an RCU grace period, ~10 ms here: not on a request).
        ``strict`` (on an assignment): a pid that is not the zygote's stem marks the zygote broken.
        An announcement is only a hint: its stem may already have been assigned and moved."""
        def make():
            self._check_stem(zygote, pid)
            name = f"stem-r{pid}-{os.urandom(3).hex()}"       # never an existing cgroup, whatever pid it reuses
            cg = cgroups.Cgroup(self.cgroup_support, name, memory_mb << 20, self.config.pids_max, exclusive=True)
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

    async def _replica_cgroup(self, zygote: ZygoteHandle, pid, spec: SandboxSpec):
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
        if self.cgroup_support.base is None:
            try:
                self._check_stem(zygote, pid)
            except ZygoteUnavailable:
                zygote.broken = True
                raise
            return None
        try:
            return await self._prepare_stem(zygote, spec.memory_mb, pid)
        except OSError as exc:
            raise ZygoteUnavailable(f"cannot cap zygote {zygote.name}'s stem {pid}: {exc}") from None

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

    async def _make_template(self, spec: SandboxSpec) -> ZygoteHandle:
        """Ask the base zygote for a process that loads ``spec``'s bundle and becomes its zygote."""
        base = self.zygotes.base
        if base is None or not base.alive:
            raise ZygoteUnavailable("no base zygote")
        zid = f"zy-{spec.sandbox_id[3:]}"
        tmp_dir = Path(self.config.work_dir) / zid
        tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            uid = self._lease_uid()
        except StartError as exc:
            raise ZygoteUnavailable(exc.message) from None

        def release() -> None:
            self.uids.release(uid)
            shutil.rmtree(tmp_dir, ignore_errors=True)

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        events, their_events = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cgroup = None
        setup = dict(self._setup(spec, None, tmp_dir, uid, role="zygote"), role="zygote")
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
                cgroup = cgroups.Cgroup.adopt(self.cgroup_support, reply["cgroup"], spec.memory_mb << 20)
            ours.setblocking(False)
            hello = await asyncio.wait_for(protocol.recv_sock_async(ours), self.config.start_timeout_s)
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
            handle.watch_stems(events, lambda pid: self._prepare_stem(handle, spec.memory_mb, pid, strict=False),
                               limit=self.zygotes.config.stems + 2)
        else:
            events.close()
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
