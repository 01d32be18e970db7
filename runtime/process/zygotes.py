"""The gateway's side of zygotes: start and supervise them, ask them for sandboxes.

* ``ZygoteHandle`` and ``AdoptedProcess`` (``runtime.process.zygote_handle``) -- one
  zygote's control channel, and the processes the gateway adopts;
* ``ZygoteSet`` -- the base zygote (libraries preloaded, restarted when it
  dies) and per-model zygotes (a bundle already loaded), keyed by bundle and
  memory tier, made in the background for bundles that have traffic and closed
  when idle or beyond their count and memory limits (``zygote_limits``).

Every failure here is ``ZygoteUnavailable``; the backend then takes the fresh
path, so a zygote problem costs a caller time, never an error.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import psutil

from runtime import protocol
from runtime.process.logpipe import LogPipe
from runtime.process.zygote import GAVE_UP
from runtime.process.zygote_handle import ZygoteHandle, ZygoteUnavailable
from runtime.process.zygote_limits import ModelZygote, admit, choose_closures

log = logging.getLogger("slimserve.zygotes")



@dataclass
class ZygoteConfig:
    enabled: bool = True
    stems: int = 2                        # processes each zygote keeps forked ahead of demand
    preload: tuple[str, ...] = ()         # modules imported by the base zygote
    start_timeout_s: float = 120.0
    log_path: str = "zygotes.log"
    cgroups: dict = field(default_factory=dict)   # CgroupSupport.to_args(): where stems make their cgroups
    pids_max: int = 0                     # processes + threads per sandbox
    seccomp: bool = False                 # build the sandboxes' seccomp filters ahead (confined hosts)
    restart_backoff_s: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30)
    env: dict = field(default_factory=dict)
    max_models: int = 16                  # model zygotes kept at most (least recently used closed first) ...
    models_memory_mb: int = 2048          # ... and their memory at most
    model_idle_s: float = 1800.0          # a model zygote not forked from this long is closed


class ZygoteSet:
    def __init__(self, config: ZygoteConfig, python: str = sys.executable):
        self.config = config
        self.python = python
        self.base: ZygoteHandle | None = None
        self.templates: dict[tuple[str, int], ZygoteHandle] = {}
        self._creating: dict[tuple[str, int], asyncio.Task] = {}
        self._supervisor: asyncio.Task | None = None
        self._closing = False
        self._sweeper: asyncio.Task | None = None
        # key -> when its zygote alone broke the memory limit, or gave up (its stems kept dying)
        self._shunned: dict[tuple[str, int], float] = {}
        self._cold_starts: dict[tuple[str, int], tuple[float, float]] = {}  # key -> (decaying count, when)
        self.restarts = 0
        self.models_closed = 0

    # --- base zygote ------------------------------------------------------------
    async def open(self) -> None:
        if self.config.enabled:
            loop = asyncio.get_running_loop()
            self._supervisor = loop.create_task(self._supervise())
            self._sweeper = loop.create_task(self._sweep())

    async def _spawn_base(self) -> ZygoteHandle:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [self.python, "-m", "runtime.process.zygote", "--fd", str(theirs.fileno()),
                "--gateway-pid", str(os.getpid()), "--stems", str(self.config.stems),
                "--preload", ",".join(self.config.preload),
                "--cgroups", json.dumps(self.config.cgroups), "--pids-max", str(self.config.pids_max)]
        if self.config.seccomp:
            argv.append("--seccomp")
        logs = LogPipe(self.config.log_path)      # rotated like the sandboxes' logs, at a bounded rate
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logs.write_fd, stderr=logs.write_fd,
                env=self.config.env, pass_fds=(theirs.fileno(),), start_new_session=True)
        except BaseException:
            logs.close()
            raise
        finally:
            theirs.close()
        logs.handed_over()
        ours.setblocking(False)
        try:
            hello = await asyncio.wait_for(protocol.recv_sock_async(ours), self.config.start_timeout_s)
        except (protocol.ProtocolError, asyncio.TimeoutError) as exc:
            proc.kill()
            await proc.wait()
            ours.close()
            raise ZygoteUnavailable(f"base zygote did not start: {exc!r}") from None
        handle = ZygoteHandle("base", proc, ours, hello)
        if hello.get("threads", 1) != 1:
            handle.broken = True
            log.warning("base zygote has %s threads after preloading; it will not be used", hello["threads"])
        log.info("base zygote pid %s ready in %.0f ms, preloaded %s", proc.pid, hello.get("preload_ms", 0),
                 ",".join(hello.get("preloaded", [])))
        return handle

    async def _supervise(self) -> None:
        """Keep a base zygote running; replace one that dies, backing off on repeated failure."""
        failures = 0
        while not self._closing:
            try:
                self.base = await self._spawn_base()
                failures = 0
                await self.base.proc.wait()
                if not self._closing:
                    log.warning("base zygote exited (%s); replacing it", self.base.proc.returncode)
                    self.restarts += 1
            except ZygoteUnavailable as exc:
                log.warning("%s", exc)
                failures += 1
            except asyncio.CancelledError:
                return
            backoff = self.config.restart_backoff_s
            await asyncio.sleep(backoff[min(failures, len(backoff) - 1)] if failures else 0)

    # --- model zygotes ----------------------------------------------------------------
    def template(self, key: tuple[str, int]) -> ZygoteHandle | None:
        t = self.templates.get(key)
        if t is not None and not t.alive:
            self.templates.pop(key, None)
            if t.proc.returncode == GAVE_UP:          # its stems kept dying: not again so soon
                log.warning("model zygote for %s gave up (its stems kept dying); not remade for %.0f s",
                            key[0], self.config.model_idle_s)
                self._shunned[key] = time.monotonic()
            asyncio.get_running_loop().create_task(t.close())
            return None
        return t

    def note_cold_start(self, key: tuple[str, int]) -> None:
        """A sandbox of ``key`` is starting (any path): the evidence ``admit`` weighs, kept as
        a count that halves every ``model_idle_s`` (one number per bundle, however busy)."""
        if not self.config.enabled:
            return
        now = time.monotonic()
        self._cold_starts[key] = (self._recent_cold_starts(key, now) + 1.0, now)

    def _recent_cold_starts(self, key: tuple[str, int], now: float) -> float:
        count, at = self._cold_starts.get(key, (0.0, now))
        return count * 0.5 ** ((now - at) / self.config.model_idle_s)

    def want_template(self, key: tuple[str, int], make) -> None:
        """Make a model zygote for ``key`` in the background, unless one exists or is coming,
        or the set is full of bundles started at least as often lately."""
        c = self.config
        if not c.enabled or c.max_models <= 0 or c.models_memory_mb <= 0:
            return
        if key in self._creating or self.template(key) is not None:
            return
        now = time.monotonic()
        if now - self._shunned.get(key, float("-inf")) < c.model_idle_s:
            return                                  # it did not fit last time: not again so soon
        # Full when one more would break a limit (its size guessed as the others' average).
        sizes = [t.memory_mb for t in self.templates.values()]
        expected = sum(sizes) / len(sizes) if sizes else 0
        full = (len(self.templates) + len(self._creating) >= c.max_models
                or sum(sizes) + expected * (len(self._creating) + 1) > c.models_memory_mb)
        # Its victim: the least recently used not forking and not already claimed by a zygote
        # being made (each creation under way displaces one of them).
        idle = sorted((t.last_used, k) for k, t in self.templates.items() if not t.busy)
        victim = idle[len(self._creating)][1] if len(idle) > len(self._creating) else None
        if not admit(self._recent_cold_starts(key, now), full,
                     None if victim is None else self._recent_cold_starts(victim, now)):
            return
        task = asyncio.get_running_loop().create_task(self._make_template(key, make))
        self._creating[key] = task
        task.add_done_callback(lambda _t: self._creating.pop(key, None))

    async def _make_template(self, key, make) -> None:
        try:
            handle = await make()
        except ZygoteUnavailable as exc:
            log.info("no model zygote for %s: %s", key[0], exc)
            return
        if self._closing or key in self.templates:
            await handle.close()
            return
        handle.memory_mb = self._own_memory_mb(handle) or 1
        if handle.memory_mb > self.config.models_memory_mb:
            log.info("model zygote for %s holds %d MB, more than all model zygotes may (%d MB): closed, "
                     "not remade for %.0f s", key[0], handle.memory_mb, self.config.models_memory_mb,
                     self.config.model_idle_s)
            self._shunned[key] = time.monotonic()
            self.models_closed += 1
            await handle.close()
            return
        self.templates[key] = handle
        await self.enforce_limits()

    def _own_memory_mb(self, handle: ZygoteHandle) -> int | None:
        """What a model zygote holds beyond the base zygote it was forked from: its resident
        size less the base's (the libraries both share), at least 1 MB; None while either
        cannot be read (the base restarting).  The copies its stems make when they warm up
        are not counted."""
        try:
            rss = psutil.Process(handle.proc.pid).memory_info().rss
            if self.base is None or not self.base.alive:
                return None
            base = psutil.Process(self.base.proc.pid).memory_info().rss
        except psutil.Error:
            return None
        return max(1, (rss - base) >> 20)

    async def enforce_limits(self, measure: bool = False) -> None:
        """Close the model zygotes that are idle too long or beyond the count and memory limits.
        One asked for a fork right now counts as just used, and is left for a later sweep if
        the limits still choose it: it is never closed mid-fork."""
        now = time.monotonic()
        if measure:
            for t in self.templates.values():
                t.memory_mb = self._own_memory_mb(t) or t.memory_mb
            self._shunned = {k: at for k, at in self._shunned.items() if now - at < self.config.model_idle_s}
            self._cold_starts = {k: v for k, v in self._cold_starts.items()
                                 if self._recent_cold_starts(k, now) >= 0.01 or k in self.templates}
        models = [ModelZygote(k, now if t.busy else t.last_used, t.memory_mb) for k, t in self.templates.items()]
        c = self.config
        for key in choose_closures(models, now, c.max_models, c.models_memory_mb, c.model_idle_s):
            handle = self.templates.get(key)
            if handle is None or handle.busy:       # closed meanwhile, or forking: not now
                continue
            del self.templates[key]
            log.info("closing model zygote for %s (idle %.0f s, %d MB)", key[0],
                     time.monotonic() - handle.last_used, handle.memory_mb)
            self.models_closed += 1
            await handle.close()

    async def _sweep(self) -> None:
        interval = min(60.0, max(0.5, self.config.model_idle_s / 4))
        while not self._closing:
            await asyncio.sleep(interval)
            try:
                await self.enforce_limits(measure=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the sweep must outlive one failed close
                log.exception("model zygote sweep failed")

    async def drop(self, bundle_dir: str) -> None:
        for key in [k for k in self.templates if k[0] == bundle_dir]:
            await self.templates.pop(key).close()
        for key in [k for k in self._creating if k[0] == bundle_dir]:
            self._creating[key].cancel()

    def pids(self) -> set[int]:
        out = {t.proc.pid for t in self.templates.values()}
        if self.base is not None:
            out.add(self.base.proc.pid)
        return out

    async def close(self) -> None:
        self._closing = True
        for task in list(self._creating.values()):
            task.cancel()
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for t in list(self.templates.values()):
            await t.close()
        self.templates.clear()
        if self.base is not None:
            await self.base.close()

    def snapshot(self) -> dict:
        now = time.monotonic()
        return {
            "enabled": self.config.enabled,
            "base": None if self.base is None else {
                "pid": self.base.proc.pid, "alive": self.base.alive, "forks": self.base.forks,
                "preloaded": self.base.info.get("preloaded", []), "restarts": self.restarts},
            "models": [{"bundle": k[0], "memory_mb": k[1], "pid": t.proc.pid, "alive": t.alive, "forks": t.forks,
                        "own_memory_mb": t.memory_mb, "idle_s": round(now - t.last_used, 1)}
                       for k, t in self.templates.items()],
            "model_limits": {"max_models": self.config.max_models, "memory_mb": self.config.models_memory_mb,
                             "idle_s": self.config.model_idle_s, "closed": self.models_closed},
        }
