"""Bring your own container: images that follow SageMaker's inference container contract.

The container is started with ``serve`` and answers ``GET /ping`` and
``POST /invocations`` on port 8080, with artifacts in /opt/ml/model and the
SAGEMAKER_* environment.  It runs with ``network_mode: none`` like every
sandbox, so its port is reached on the loopback of its own network namespace:
a relay thread enters that namespace (``setns``, which is per thread on Linux)
and makes the HTTP calls from inside it.  No bridge, no published port, no
traffic to any other address.
"""
from __future__ import annotations

import asyncio
import ctypes
import http.client
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runtime.channel import DEFAULT_MAX_RESPONSE
from runtime.docker.container_life import ContainerLife
from runtime.docker.sandbox import LABEL, MODEL_DIR, cpu_quota, link_tree
from runtime.sandbox import (
    BAD_OUTPUT,
    DEAD_HANDLE,
    LOAD_FAILED,
    MODEL_RAISED,
    OUT_OF_MEMORY,
    SPAWN_FAILED,
    TIMEOUT,
    InvokeRequest,
    InvokeResult,
    Sandbox,
    SandboxSpec,
    StartError,
    StartFacts,
    State,
    oom_message,
    too_large_message,
)

CLONE_NEWNET = 0x40000000
TOO_LARGE = "x-slimserve-too-large"     # set by the relay, never by the container (headers are lowercased first)
SPOOLED = "x-slimserve-spooled"       # ... the size of an answer written to the response file
PORT = 8080
MAX_ERROR_BODY = 64 << 10               # of a non-2xx answer, only this much is read (the message is cut anyway)
SAGEMAKER_ENV = {"SAGEMAKER_BIND_TO_PORT": str(PORT), "SAGEMAKER_SAFE_PORT_RANGE": "8080-8080",
                 "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SM_MODEL_DIR": "/opt/ml/model"}
_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot enter the network namespace of pid {pid}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Relay:
    """One thread that lives in the container's network namespace and makes its HTTP calls."""

    def __init__(self, pid: int):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"slimserve-relay-{pid}",
                                       initializer=_enter_netns, initargs=(pid,))

    async def call(self, method: str, path: str, body: bytes | None, headers: dict, timeout_s: float,
                   max_bytes: int = 1 << 20, body_file: str | None = None, response_file: str | None = None):
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, _http, method, path, body, headers, timeout_s, max_bytes, body_file, response_file)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _http(method, path, body, headers, timeout_s, max_bytes: int = 1 << 20, body_file=None, response_file=None):
    """One call to the model server; an answer past ``max_bytes`` is cut off unread (``None``
    body, its announced or least size in the headers' place) so no container can make the
    gateway hold more than the cap.  ``body_file`` / ``response_file``: the body is streamed from,
    and the answer to, a file (asynchronous inference); the body returned is then ``b""``."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout_s)
    try:
        if body_file:
            with open(body_file, "rb") as fh:
                headers = dict(headers, **{"Content-Length": str(os.fstat(fh.fileno()).st_size)})
                conn.request(method, path, body=fh, headers=headers)
        else:
            conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        rh = {k.lower(): v for k, v in resp.getheaders()}
        announced = rh.get("content-length", "")
        if announced.isdigit() and int(announced) > max_bytes:
            return resp.status, dict(rh, **{TOO_LARGE: announced}), None
        if response_file and 200 <= resp.status < 300:
            size = 0
            with open(response_file, "wb") as out:
                while chunk := resp.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        return resp.status, dict(rh, **{TOO_LARGE: str(size)}), None
                    out.write(chunk)
            return resp.status, dict(rh, **{SPOOLED: str(size)}), b""
        if not 200 <= resp.status < 300:       # an error's text: what a message needs, whatever the cap
            max_bytes = min(max_bytes, MAX_ERROR_BODY)
            return resp.status, rh, resp.read(max_bytes)
        data = resp.read(max_bytes + 1)
        if len(data) > max_bytes:
            return resp.status, dict(rh, **{TOO_LARGE: str(len(data))}), None
        return resp.status, rh, data
    finally:
        conn.close()


async def wait_ready(relay: Relay, timeout_s: float, alive) -> None:
    """Poll GET /ping until the model server answers 200 (the contract's health check)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not await alive():
            raise RuntimeError(f"the container exited before it answered /ping ({last})")
        try:
            status, _, _ = await relay.call("GET", "/ping", None, {}, 2.0)
            if status == 200:
                return
            last = f"/ping answered {status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the container did not answer /ping with 200 within {timeout_s:g} s ({last})")


class ContainerServerSandbox(ContainerLife, Sandbox):
    """A sandbox whose model server speaks HTTP inside its container."""

    def __init__(self, spec, listeners, backend, container, root, relay: Relay):
        super().__init__(spec, listeners)
        self._init_container(backend, container, root)
        self.relay = relay

    async def invoke(self, request: InvokeRequest, timeout_s: float) -> InvokeResult:
        if self.state is not State.IDLE:
            return InvokeResult(False, error_kind=DEAD_HANDLE, message=f"sandbox {self.id} is {self.state.value}")
        self._move(State.BUSY)
        headers = {"Content-Type": request.content_type or "application/octet-stream"}
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
        limit = request.max_response or DEFAULT_MAX_RESPONSE
        t0 = time.perf_counter()
        try:
            status, rh, body = await asyncio.wait_for(
                self.relay.call("POST", "/invocations", request.body, headers, timeout_s, limit,
                                request.body_file, request.response_file), timeout_s + 1)
        except (asyncio.TimeoutError, TimeoutError):
            await self.destroy("invocation timed out")
            return InvokeResult(False, error_kind=TIMEOUT, model_ms=(time.perf_counter() - t0) * 1000.0,
                                original_status=0, message=f"the model did not answer within {timeout_s:g} s; "
                                                           "its container was stopped and will be replaced")
        except (OSError, http.client.HTTPException):     # the server broke off or died mid-answer
            elapsed = (time.perf_counter() - t0) * 1000.0
            kind, message = await self.container_death()
            await self.destroy("died during an invocation")
            return InvokeResult(False, error_kind=kind, model_ms=elapsed, original_status=500, message=message)
        model_ms = (time.perf_counter() - t0) * 1000.0
        self._move(State.IDLE)
        if body is None:                   # over the cap: refused, and the server stays up for the next call
            return InvokeResult(False, error_kind=BAD_OUTPUT, model_ms=model_ms, original_status=500,
                                message=too_large_message(int(rh[TOO_LARGE]), limit))
        if 200 <= status < 300:
            return InvokeResult(True, body=body, content_type=rh.get("content-type"), model_ms=model_ms,
                                custom_attributes=rh.get("x-amzn-sagemaker-custom-attributes"),
                                size=int(rh[SPOOLED]) if SPOOLED in rh else None)
        return InvokeResult(False, error_kind=MODEL_RAISED, model_ms=model_ms, original_status=status,
                            message=body.decode("utf-8", errors="replace")[:2048])

    async def destroy(self, reason: str = "destroyed") -> None:
        if self.state is State.DEAD:
            return
        self.death_reason = reason
        self.relay.close()
        await self.backend.remove(self.container, self.root)
        self._mark_dead(reason)


async def start_container_server(backend, spec: SandboxSpec) -> Sandbox:
    """A SageMaker-contract image: ``serve``, /ping and /invocations on 8080, reached through a
    relay in its own network namespace."""
    t0 = time.perf_counter()
    sid = uuid.uuid4().hex[:12]
    root = Path(backend.config.work_dir) / f"c-{sid}"
    cfg, mb = backend.config, spec.memory_mb
    container = None
    try:
        (root / "model").mkdir(parents=True, exist_ok=True)
        if spec.bundle_dir:
            await asyncio.to_thread(link_tree, Path(spec.bundle_dir), root / "model")
        container = await asyncio.to_thread(
            backend.client.containers.run, spec.image, ["serve"], name=f"slimserve-{cfg.instance}-{sid}",
            detach=True, network_mode="none", mem_limit=f"{mb}m", memswap_limit=f"{mb}m",
            **({"user": cfg.byoc_user} if cfg.byoc_user else {}),
            cpu_shares=max(2, cfg.cpu_shares_per_gb * mb // 1024), pids_limit=cfg.pids_limit, **cpu_quota(spec.vcpus),
            tmpfs={"/tmp": f"size={cfg.tmp_mb}m,mode=1777"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            volumes={str(root / "model"): {"bind": MODEL_DIR, "mode": "ro"}},
            labels={LABEL: cfg.instance, "slimserve.role": "container-server"},
            environment=dict(SAGEMAKER_ENV, **spec.env))
        await asyncio.to_thread(container.reload)
        pid = container.attrs["State"]["Pid"]
    except BaseException as exc:
        if container is not None:
            await backend.remove(container, root)
        else:
            await asyncio.to_thread(shutil.rmtree, root, True)
        if not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError):
            raise
        raise StartError(SPAWN_FAILED, f"the Docker engine could not start image {spec.image}: {exc}") from None
    relay = Relay(pid)
    sb = ContainerServerSandbox(spec, backend.listeners, backend, container, root, relay)
    backend._by_container[container.id] = sb

    async def alive() -> bool:
        return not sb.exited.done()
    try:
        await wait_ready(relay, cfg.start_timeout_s, alive)
    except BaseException as exc:
        if not isinstance(exc, (RuntimeError, TimeoutError, OSError, http.client.HTTPException)):
            await sb.destroy("start cancelled")
            raise
        state = await backend.container_state(container)
        logs = ""
        try:
            logs = (await asyncio.to_thread(container.logs, tail=20)).decode(errors="replace").strip()[-800:]
        except Exception:  # noqa: BLE001 - removed already
            pass
        oom = sb.oom_killed or state.get("OOMKilled")
        await sb.destroy("did not become ready")
        if oom:
            raise StartError(OUT_OF_MEMORY, oom_message(mb, while_loading=True)) from None
        raise StartError(LOAD_FAILED, f"{exc}; container log: {logs}" if logs else str(exc)) from None
    sb.facts = StartFacts(pid=pid, container=container.short_id, path="container",
                          start_ms=round((time.perf_counter() - t0) * 1000.0, 3),
                          protections={"applied": ["container", "memory+swap limit", "network none (relay)",
                                                   "no capabilities", "pids limit"], "missing": {}})
    sb._move(State.IDLE)
    return sb
