"""The docker backend: each sandbox is a container, started through the Docker Engine API.

Every container: memory limit = the tier with swap equal to it (no swap), CPU
shares proportional to memory, a pids limit, a read-only root filesystem with a
tmpfs /tmp, a non-root user, all capabilities dropped, no-new-privileges, no
devices, ``network_mode: none``.  The bundle is bind-mounted read-only at
/opt/ml/model (SageMaker's layout) and the gateway talks to the worker over a
Unix socket in a per-container bind-mounted run directory.  Containers carry
``slimserve.*`` labels; at start the gateway removes the ones a previous run of
the same state directory left.

Cold starts: *stem* containers are created, started (the worker has imported
numpy, scikit-learn, ... and waits on its socket) and paused ahead of demand.
A cold start hard-links the bundle into the stem's model directory, sets the
tier's memory and CPU shares, unpauses it and hands it the assignment:
milliseconds instead of the 0.5-1 s of a create + start.  Deaths and OOM kills
come from the engine's event stream; a dockerd restart is survived (the
stream reconnects and lost stems are replaced).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from runtime import protocol
from runtime.docker.byoc import start_container_server
from runtime.docker.image import SANDBOX_UID
from runtime.docker.sandbox import LABEL, MODEL_DIR, DockerSandbox, Stem, cpu_quota, link_tree
from runtime.process.zygote import DEFAULT_PRELOAD
from runtime.sandbox import (
    LOAD_FAILED,
    OUT_OF_MEMORY,
    SPAWN_FAILED,
    Backend,
    Listener,
    Sandbox,
    SandboxSpec,
    StartError,
    StartFacts,
    State,
    oom_message,
    thread_env,
)

log = logging.getLogger("slimserve.docker")
SOCKET = "/run/slimserve/worker.sock"


@dataclass(frozen=True)
class DockerBackendConfig:
    work_dir: str                       # per-container model and run directories are made under it
    image: str = "slimserve-runtime:latest"
    instance: str = "default"
    stems: int = 2                      # paused containers kept ready
    cpu_shares_per_gb: int = 1024       # CPU weight grows with the memory tier
    pids_limit: int = 512
    tmp_mb: int = 512                   # tmpfs /tmp size
    start_timeout_s: float = 120.0
    python: str = ""                    # the interpreter inside the image (from the image's env)
    byoc_user: str | None = None        # run bring-your-own containers as this uid[:gid] instead of the image's USER
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    max_response_bytes: int = 6 << 20   # the largest synchronous answer a sandbox may send


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, config: DockerBackendConfig, listeners: list[Listener] | None = None, client=None):
        self.config = config
        self.listeners = list(listeners or [])
        self._client = client
        self._stems: list[Stem] = []
        self._filling: asyncio.Task | None = None
        self._events_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._by_container: dict[str, DockerSandbox] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.python = config.python

    # --- engine plumbing ---------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=60)
        return self._client

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._check_engine)
        await asyncio.to_thread(self.remove_orphans)
        Path(self.config.work_dir).mkdir(parents=True, exist_ok=True)
        self._events_thread = threading.Thread(target=self._watch_events, name="slimserve-docker-events", daemon=True)
        self._events_thread.start()
        self._filling = self._loop.create_task(self._keep_stems())

    def _check_engine(self) -> None:
        import docker.errors

        try:
            self.client.ping()
            image = self.client.images.get(self.config.image)
        except docker.errors.ImageNotFound:
            raise RuntimeError(f"docker image {self.config.image} not found: run `slimserve image build`") from None
        except docker.errors.DockerException as exc:
            raise RuntimeError(f"cannot reach the Docker engine: {exc}") from None
        env = dict(e.split("=", 1) for e in image.attrs.get("Config", {}).get("Env", []) if "=" in e)
        self.python = self.python or env.get("SLIMSERVE_PYTHON", "python3")

    def remove_orphans(self) -> int:
        """Containers a previous run of this gateway left behind."""
        gone = 0
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.config.instance}"}):
            try:
                c.remove(force=True)
                gone += 1
            except Exception as exc:  # noqa: BLE001 - one stuck container must not stop the start
                log.warning("could not remove orphan container %s: %s", c.short_id, exc)
        shutil.rmtree(Path(self.config.work_dir), ignore_errors=True)
        if gone:
            log.info("removed %d orphan containers", gone)
        return gone

    def _watch_events(self) -> None:
        """Deaths and OOM kills of our containers, from the engine; reconnects after a dockerd restart."""
        while not self._closing.is_set():
            try:
                stream = self.client.events(decode=True, filters={"label": f"{LABEL}={self.config.instance}",
                                                                   "type": "container"})
                for ev in stream:
                    if self._closing.is_set():
                        return
                    action, cid = ev.get("Action") or ev.get("status"), ev.get("id")
                    if action in ("die", "oom") and self._loop is not None:
                        self._loop.call_soon_threadsafe(self._on_event, cid, action)
            except Exception as exc:  # noqa: BLE001 - the engine went away: wait, then listen again
                if self._closing.is_set():
                    return
                log.warning("docker event stream lost (%s); reconnecting", exc)
                self._closing.wait(1.0)

    def _on_event(self, cid: str, action: str) -> None:
        sb = self._by_container.get(cid)
        if sb is not None:
            sb.on_engine_event(action)
        elif action == "die":
            self._stems = [s for s in self._stems if s.container.id != cid]

    def cgroup_memory(self, cid: str) -> int:
        for path in (f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes",
                     f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current",
                     f"/sys/fs/cgroup/docker/{cid}/memory.current"):
            try:
                with open(path) as fh:
                    return int(fh.read())
            except OSError:
                continue
        return 0

    async def container_state(self, container) -> dict:
        try:
            await asyncio.to_thread(container.reload)
            return container.attrs.get("State", {})
        except Exception:  # noqa: BLE001 - removed already
            return {}

    async def remove(self, container, root: Path) -> None:
        self._by_container.pop(container.id, None)
        try:
            await asyncio.to_thread(container.remove, force=True)
        except Exception as exc:  # noqa: BLE001 - gone already, or the engine is away (orphan sweep later)
            log.debug("remove %s: %s", container.short_id, exc)
        await asyncio.to_thread(shutil.rmtree, root, True)

    # --- stems ------------------------------------------------------------------------------------
    def _create_container(self, root: Path, name: str, memory_mb: int, vcpus: float = 0.0):
        cfg = self.config
        (root / "model").mkdir(parents=True, exist_ok=True)
        run = root / "run"
        run.mkdir(parents=True, exist_ok=True)
        os.chown(run, SANDBOX_UID, SANDBOX_UID)
        return self.client.containers.run(
            cfg.image, [self.python, "-m", "runtime.worker", "--listen", SOCKET, "--preload", ",".join(cfg.preload)],
            name=name, detach=True, user=f"{SANDBOX_UID}:{SANDBOX_UID}", network_mode="none",
            mem_limit=f"{memory_mb}m", memswap_limit=f"{memory_mb}m",
            cpu_shares=max(2, cfg.cpu_shares_per_gb * memory_mb // 1024), pids_limit=cfg.pids_limit,
            **cpu_quota(vcpus), read_only=True, tmpfs={"/tmp": f"size={cfg.tmp_mb}m,mode=1777"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            volumes={str(root / "model"): {"bind": MODEL_DIR, "mode": "ro"},
                     str(run): {"bind": "/run/slimserve", "mode": "rw"}},
            labels={LABEL: cfg.instance, "slimserve.role": "sandbox"},
            environment={"SM_MODEL_DIR": MODEL_DIR},
        )

    async def _new_stem(self, memory_mb: int = 1024, vcpus: float = 0.0) -> Stem:
        """A container ready for a model: a paused stem's (no quota: it gets its tier's when handed
        one), or a sandbox's started fresh, with its tier's CPU quota from the start."""
        t0 = time.perf_counter()
        sid = uuid.uuid4().hex[:12]
        root = Path(self.config.work_dir) / f"c-{sid}"
        container = await asyncio.to_thread(self._create_container, root, f"slimserve-{self.config.instance}-{sid}",
                                            memory_mb, vcpus)
        try:
            return await self._handshake(container, root, t0)
        except BaseException as exc:
            await self.remove(container, root)
            if isinstance(exc, (StartError, asyncio.CancelledError)) or not isinstance(exc, Exception):
                raise
            raise StartError(SPAWN_FAILED, f"a sandbox container did not come up: {exc}") from None

    async def _handshake(self, container, root: Path, t0: float) -> Stem:
        sock = root / "run" / "worker.sock"
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(sock))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise StartError(SPAWN_FAILED, "a sandbox container did not come up in time") from None
                state = await self.container_state(container)
                if state and not state.get("Running", True):
                    logs = (await asyncio.to_thread(container.logs, tail=20)).decode(errors="replace")
                    raise StartError(SPAWN_FAILED,
                                     f"the sandbox container exited at start: {logs.strip()[-500:]}") from None
                await asyncio.sleep(0.02)
        header, _ = await asyncio.wait_for(protocol.recv_async(reader, protocol.PEER_HEADER, 0),
                                           self.config.start_timeout_s)
        if header.get("op") != "stem":
            raise StartError(SPAWN_FAILED, f"unexpected first message from a sandbox container: {header}")
        return Stem(container, root, reader, writer, (time.perf_counter() - t0) * 1000.0)

    async def _keep_stems(self) -> None:
        backoff = 0.5
        while True:
            try:
                while len(self._stems) < self.config.stems:
                    stem = await self._new_stem()
                    try:
                        await asyncio.to_thread(stem.container.pause)
                    except BaseException:
                        await self.remove(stem.container, stem.root)
                        raise
                    self._stems.append(stem)
                backoff = 0.5
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - dockerd away: retry with backoff, serve on the slow path
                log.warning("could not prepare a stem container: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    # --- the Backend interface -----------------------------------------------------------------
    def can_run_image(self, image: str) -> bool:
        """Whether ``image`` is a local image that brings its own model server (not slimserve's runtime)."""
        import docker.errors

        try:
            found = self.client.images.get(image)
            runtime = self.client.images.get(self.config.image)
        except docker.errors.DockerException:
            return False
        return found.id != runtime.id

    async def start(self, spec: SandboxSpec) -> Sandbox:
        if spec.image:
            return await start_container_server(self, spec)
        t0 = time.perf_counter()
        stem, path = None, "stem"
        while self._stems:
            candidate = self._stems.pop()
            state = await self.container_state(candidate.container)
            if state.get("Paused"):
                stem = candidate
                break
            await self.remove(candidate.container, candidate.root)
        if stem is None:
            path = "fresh"
            stem = await self._new_stem(spec.memory_mb, spec.vcpus)   # removes its container if it fails
        sb = None
        try:                                                     # from here on a failure removes the container
            if path == "stem":
                await asyncio.to_thread(self._prepare_paused, stem, spec)
            t_ready = time.perf_counter()
            await asyncio.to_thread(link_tree, Path(spec.bundle_dir), stem.root / "model")
            sb = DockerSandbox(spec, self.listeners, self, stem)
            self._by_container[stem.container.id] = sb
            reply = await self._assign(sb, stem, spec)
        except BaseException as exc:
            if sb is not None:
                await sb.destroy("start failed")
            else:
                await self.remove(stem.container, stem.root)
            if isinstance(exc, (StartError, asyncio.CancelledError)) or not isinstance(exc, Exception):
                raise
            raise StartError(SPAWN_FAILED, f"the Docker engine could not start a sandbox: {exc}") from None
        sb.facts = StartFacts(pid=reply.get("pid"), container=stem.container.short_id, path=path,
                              start_ms=round((time.perf_counter() - t0) * 1000.0, 3),
                              timings=dict(reply.get("timings", {}), prepare_ms=(t_ready - t0) * 1000.0),
                              protections=self.protections_applied())
        sb._move(State.IDLE)
        return sb

    async def _assign(self, sb: "DockerSandbox", stem: Stem, spec: SandboxSpec) -> dict:
        """Hand the stem its model; its ``ready`` reply, or a StartError saying why not."""
        setup = {"op": "assign", "bundle": MODEL_DIR, "kind": spec.bundle_kind,
                 "env": dict(spec.env, TMPDIR="/tmp", **thread_env(spec.vcpus, spec.env))}
        try:
            stem.writer.write(protocol.encode(setup))
            await stem.writer.drain()
            reply, _ = await asyncio.wait_for(protocol.recv_async(stem.reader, protocol.PEER_HEADER, 0),
                                              self.config.start_timeout_s)
        except (asyncio.TimeoutError, protocol.ProtocolError, ConnectionError, OSError) as exc:
            kind, _ = await sb._death_cause()
            if kind == OUT_OF_MEMORY:
                raise StartError(OUT_OF_MEMORY, oom_message(spec.memory_mb, while_loading=True)) from None
            raise StartError(LOAD_FAILED, f"the model's container stopped while loading it ({exc or kind})") from None
        if reply.get("op") != "ready":
            kind = OUT_OF_MEMORY if reply.get("kind") == OUT_OF_MEMORY else LOAD_FAILED
            raise StartError(kind, oom_message(spec.memory_mb, True) if kind == OUT_OF_MEMORY else
                             f"the model failed to load: {reply.get('message', '')}")
        return reply

    def _prepare_paused(self, stem: Stem, spec: SandboxSpec) -> None:
        """Give a paused stem its tier (memory = swap, CPU shares and quota) and wake it."""
        mb = spec.memory_mb
        stem.container.update(mem_limit=f"{mb}m", memswap_limit=f"{mb}m",
                              cpu_shares=max(2, self.config.cpu_shares_per_gb * mb // 1024), **cpu_quota(spec.vcpus))
        stem.container.unpause()

    def protections_applied(self) -> dict:
        return {"applied": ["container", "memory+swap limit", "network none", "read-only root", "no capabilities",
                            f"user {SANDBOX_UID}", "pids limit"], "missing": {}}

    def protections(self) -> dict:
        byoc = f"uid {self.config.byoc_user} (--byoc-user)" if self.config.byoc_user else "the image's own USER"
        return {
            "memory_cap": {"ok": True, "mechanism": "docker", "detail": "memory limit = tier, swap limit = tier"},
            "sandbox_uid": {"ok": True, "mechanism": "user", "detail": f"uid {SANDBOX_UID}, no supplementary groups,"
                            f" cap_drop ALL, no-new-privileges; bring-your-own containers: {byoc}, same drops"},
            "filesystem_view": {"ok": True, "mechanism": "read-only root",
                                "detail": "the image read-only; the bundle read-only at /opt/ml/model; only the "
                                          "sandbox's own socket directory at /run/slimserve; no Docker socket, no "
                                          "state dir"},
            "private_tmp": {"ok": True, "mechanism": "tmpfs",
                            "detail": f"tmpfs /tmp of {self.config.tmp_mb} MB, counted against the tier's memory"},
            "pids_limit": {"ok": True, "mechanism": f"pids_limit {self.config.pids_limit}", "detail": "per container"},
            "cpu_quota": {"ok": True, "mechanism": "cpu_quota", "detail": "each container's CPU time per 100 ms "
                          "follows its memory tier (docker update on a stem)"},
            "process_isolation": {"ok": True, "mechanism": "PID namespace", "detail": "one per container"},
            "seccomp": {"ok": True, "mechanism": "docker default profile",
                        "detail": "the engine's default seccomp filter"},
            "network_isolation": {"ok": True, "mechanism": "network_mode none", "detail": "no interface but loopback"},
            "gpu_hidden": {"ok": True, "mechanism": "no devices", "detail": "no device is passed to containers"},
            "dies_with_gateway": {"ok": True, "mechanism": "labels",
                                  "detail": "a restart removes this gateway's containers left by a kill -9"},
        }

    async def close(self) -> None:
        self._closing.set()
        if self._filling is not None:
            self._filling.cancel()
            try:
                await self._filling
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for stem in self._stems:
            await self.remove(stem.container, stem.root)
        self._stems.clear()
        for sb in list(self._by_container.values()):
            await sb.destroy("gateway stopping")
        try:                                   # a stem that was being created when we were cancelled
            await asyncio.to_thread(self.remove_orphans)
        except Exception as exc:  # noqa: BLE001 - the engine is away: the next start sweeps
            log.warning("could not sweep containers at stop: %s", exc)
