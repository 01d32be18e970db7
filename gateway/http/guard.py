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

    def connection_made(self, transport) -> None:
        self.transport = transport
        lst = self.listener
        if len(lst.open) >= lst.limits.max_connections:
            lst.refused += 1
            transport.write(_BUSY)
            transport.close()
            return
        lst.open.add(self)
        self.inner = lst.factory()
        self.inner.connection_made(transport)
        self.timer = asyncio.get_running_loop().call_later(lst.limits.header_timeout_s, self._too_slow)

    def _too_slow(self) -> None:
        self.timer = None
        self.listener.timed_out += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_SLOW)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.timer is not None:              # the first head ends at its first empty line
            seen = self.tail + data
            if b"\r\n\r\n" in seen:
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
        self.refused = self.timed_out = 0
        self.server: asyncio.AbstractServer | None = None

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
