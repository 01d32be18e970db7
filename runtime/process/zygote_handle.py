"""One zygote as the gateway holds it, and the processes the gateway adopts.

* ``AdoptedProcess`` -- a process the gateway did not spawn but is the parent
  of (a zygote's stem, reparented to the gateway as child subreaper): exit is
  watched through a pidfd and the status reaped with ``waitpid``.
* ``ZygoteHandle`` -- one zygote's control channel: ``assign`` hands it a
  sandbox's setup and file descriptors and returns the pid that took them; an
  unprivileged model zygote's stem announcements are watched and prepared for.

Every failure here is ``ZygoteUnavailable``.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import time

from runtime import protocol

log = logging.getLogger("slimserve.zygotes")

PR_SET_CHILD_SUBREAPER = 36


class ZygoteUnavailable(Exception):
    pass


def become_subreaper() -> bool:
    """Adopt orphaned descendants (zygote stems) so they can be watched and reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


class AdoptedProcess:
    """The asyncio.subprocess.Process surface (pid, returncode, wait) for an adopted child."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = None
            self._reap()
            return
        self._loop.add_reader(self._fd, self._on_exit)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None
        self._reap()

    def _reap(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:       # not ours to reap (no subreaper): the status is lost
            self.returncode = 255
        self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        return self.returncode


class ZygoteHandle:
    def __init__(self, name: str, proc, control: socket.socket, info: dict, uid: int | None = None,
                 on_close=None):
        self.name = name
        self.proc = proc
        self.control = control
        self.info = info
        self.uid = uid                       # a confined model zygote's (unprivileged) uid; None: root
        self._on_close = on_close            # gives back the uid and the mount point, once nothing runs
        self.cgroup = None                   # a model zygote's own cgroup
        self.prepared: dict[int, asyncio.Future] = {}   # stem pid -> its cgroup, made and joined ahead
        self._events: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.broken = False
        self.forks = 0
        self.last_used = time.monotonic()    # made, or last forked from
        self.memory_mb = 0                   # a model zygote's estimated own memory

    @property
    def alive(self) -> bool:
        return not self.broken and self.proc.returncode is None

    @property
    def busy(self) -> bool:
        """A fork is being asked for (and the control channel is in use)."""
        return self._lock.locked()

    async def assign(self, setup: dict, fds: list[int], timeout_s: float = 10.0, payload: bytes = b"") -> dict:
        async with self._lock:
            self.last_used = time.monotonic()
            if not self.alive:
                raise ZygoteUnavailable(f"zygote {self.name} is not running")
            try:
                protocol.send_with_fds(self.control, dict(setup, op="assign"), fds, payload)
                reply = await asyncio.wait_for(protocol.recv_sock_async(self.control), timeout_s)
            except (OSError, protocol.ProtocolError, asyncio.TimeoutError) as exc:
                self.broken = True
                raise ZygoteUnavailable(f"zygote {self.name} failed: {exc!r}") from None
            except BaseException:             # cancelled mid-frame: the channel is out of step for good
                self.broken = True
                raise
        if not reply.get("ok"):
            raise ZygoteUnavailable(f"zygote {self.name} refused: {reply.get('message')}")
        self.forks += 1
        return reply

    def watch_stems(self, sock: socket.socket, prepare, limit: int) -> None:
        """Read the stem pids a model zygote announces on ``sock`` and start ``prepare(pid)`` (the
        stem's cgroup, made and joined ahead of demand) for at most ``limit`` of them at once.
        The zygote has run model code: anything but a well-formed announcement ends the watch."""
        async def run() -> None:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            try:
                while True:
                    header, _ = await protocol.recv_async(reader, 4096, 0)
                    pid = header.get("pid")
                    if header.get("op") != "stem" or not isinstance(pid, int) or isinstance(pid, bool):
                        return
                    await self._prune_prepared()
                    if len(self.prepared) < limit and pid not in self.prepared:
                        self.prepared[pid] = asyncio.ensure_future(prepare(pid))
            except (protocol.ProtocolError, ConnectionError, OSError):
                return
            except Exception:  # noqa: BLE001 - whatever a model zygote sends ends the watch, not the gateway
                log.exception("stem announcements of %s stopped", self.name)
                return
            finally:
                writer.close()

        self._events = asyncio.get_running_loop().create_task(run())

    async def _prune_prepared(self) -> None:
        """Forget stems prepared ahead that failed, or died before any sandbox took them."""
        for pid, fut in list(self.prepared.items()):
            if not fut.done():
                continue
            if fut.cancelled() or fut.exception() is not None:
                del self.prepared[pid]
            elif not await asyncio.to_thread(fut.result().pids):
                del self.prepared[pid]
                await asyncio.to_thread(fut.result().remove)

    def take_prepared(self, pid: int) -> "asyncio.Future | None":
        return self.prepared.pop(pid, None)

    async def close(self) -> None:
        """Kill the zygote, then close its channel.  In that order: an ``assign`` waiting on
        the channel sees end-of-file at once and leaves, and only then is the socket closed,
        so no reader of the event loop is left on a file number the next socket will reuse."""
        self.broken = True
        if self.proc.returncode is None:
            try:
                os.kill(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            await self.proc.wait()
        async with self._lock:
            try:
                self.control.close()
            except OSError:
                pass
        if self._events is not None:
            self._events.cancel()
        for fut in self.prepared.values():          # stems never given a sandbox: their cgroups go too
            fut.cancel()
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                await asyncio.to_thread(fut.result().remove)
        self.prepared.clear()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await asyncio.to_thread(on_close)
