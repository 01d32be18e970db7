"""The listening socket, guarded: a cap on open connections and a deadline for each
connection's first request head, in front of aiohttp's request handler.

aiohttp bounds header sizes and (``keepalive_timeout``) the idle time between requests,
but gives no deadline for the head of a connection's first request: a client that opens
connections and sends a byte now and then (slow-loris) would hold each one for good.
Here each connection must finish its request head within ``header_timeout_s`` of opening,
and past ``max_connections`` a new connection is answered 503 and closed at once, so the
gateway neither stalls nor runs out of file descriptors.  Only public aiohttp API is used:
the runner's protocol factory, wrapped.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger("slimserve.http")

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_SLOW = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class ConnectionLimits:
    max_connections: int = 1000
    header_timeout_s: float = 20.0


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's handler behind a cap and a first-head deadline."""

    def __init__(self, listener: "GuardedListener"):
        self.listener = listener
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""
        self.started = False                   # a byte of the first head other than CR/LF has come
        self.last_data = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        lst = self.listener
        now = asyncio.get_running_loop().time()
        self.last_data = now
        if len(lst.open) >= lst.limits.max_connections and not lst.shed_idle(now):
            transport.write(_BUSY)
            transport.close()
            return
        lst.open.add(self)
        self.inner = lst.factory()
        self.inner.connection_made(transport)
        self.timer = asyncio.get_running_loop().call_later(lst.limits.header_timeout_s, self._too_slow)

    def _too_slow(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_SLOW)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        self.last_data = asyncio.get_running_loop().time()
        if self.timer is not None:              # the first head ends at its first empty line
            if not self.started:                # (CR/LF before a request line do not start it)
                data_start = data.lstrip(b"\r\n")
                self.started = bool(data_start)
                seen = data_start
            else:
                seen = self.tail + data
            if self.started and b"\r\n\r\n" in seen:
                self.timer.cancel()
                self.timer = None
            self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.listener.open.discard(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GuardedListener:
    """Listens on (host, port) and hands each admitted connection to ``factory()`` (the
    aiohttp runner's ``server``)."""

    def __init__(self, factory, limits: ConnectionLimits):
        self.factory, self.limits = factory, limits
        self.open: set[_Guarded] = set()
        self.server: asyncio.AbstractServer | None = None

    def shed_idle(self, now: float, idle_s: float = 1.0) -> bool:
        """At the cap: close the connection that has been quiet longest (past its first head,
        nothing received for ``idle_s``), to admit a new one; False if none qualifies.  Holding
        the cap then takes traffic on every connection, which is load, not a lock-out."""
        quiet = [g for g in self.open if g.timer is None and now - g.last_data >= idle_s
                 and not getattr(g.inner, "_request_in_progress", True)]     # never one that is answering
        if not quiet:
            return False
        victim = min(quiet, key=lambda g: g.last_data)
        self.open.discard(victim)
        if victim.transport is not None:
            victim.transport.close()
        return True

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Guarded(self), host, port, reuse_address=True,
                                               backlog=min(4096, max(128, self.limits.max_connections)))
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop accepting; connections already open are the runner's to finish (so this does not
        wait for them, as ``wait_closed`` would on Python 3.12+)."""
        if self.server is not None:
            self.server.close()
            self.server = None
