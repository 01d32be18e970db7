"""A network namespace for the local S3 server, and the two ways the gateway reaches into it.

``serve --s3 local`` runs SeaweedFS in a network namespace of its own: its master, volume server,
filer and their gRPC ports listen on a loopback no other process of the host can reach (they
authenticate nothing, or not everything).  Only its S3 API leaves it, as a Unix socket in the
state dir (0700) that ``UnixForwarder`` serves on 127.0.0.1; the gateway's own checks of the
internal APIs run in a thread that has entered the namespace (``setns`` is per thread).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def isolated_child() -> None:
    """``preexec_fn``: a network namespace with its loopback up, and death with the gateway."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14s", b"lo", 0, bytes(14))
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, bytes(14)))
    die_with_parent()


def die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)




def in_namespace_of(pid: int, fn, *args):
    """``fn(*args)`` in a new thread that has entered ``pid``'s network namespace; its result."""
    out: dict = {}

    def run() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns into pid {pid}")
            finally:
                os.close(fd)
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    t = threading.Thread(target=run, name=f"slimserve-netns-{pid}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class UnixForwarder:
    """127.0.0.1:``port`` → the Unix socket ``path``: bytes copied both ways, untouched (so S3
    signatures, which cover the Host header, still verify)."""

    def __init__(self, path: str, port: int):
        self.path, self.port = path, port
        self.server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.path)
        except OSError:
            writer.close()
            self._conns.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass            # closing: asyncio's connection callback would log a cancelled handler as an error
        finally:
            for w in (writer, up_writer):
                w.close()
            self._conns.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(1 << 18):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()
