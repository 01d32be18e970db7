"""Wire format between the gateway and a sandbox worker.

One frame = 8-byte header (two big-endian uint32: JSON-header length, payload
length), then the JSON header, then the raw payload bytes.  The payload carries
request and response bodies untouched, so a 6 MB body is never re-encoded.

Messages (the ``op`` field of the header):
  worker -> gateway  ``ready``   {init_ms, protections}     once, after the bundle loaded
                     ``failed``  {kind, message}            instead of ``ready``
                     ``result``  {ok, model_ms, content_type, custom_attributes,
                                  error_kind, message, original_status}
                     ``loaded``  {id, ok, load_ms, error_kind, message, fatal}   answers load and unload
  gateway -> worker  ``invoke``  {content_type, accept, custom_attributes, model}
                     ``load``    {id, model, kind} + the model's bundle as an uncompressed tar
                     ``unload``  {id, model}          (``load``/``unload``: multi-model sandboxes only)
"""
from __future__ import annotations

import asyncio
import json
import socket
import struct

_HEAD = struct.Struct("!II")
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 1 << 30
# What the gateway accepts from a peer that runs model code (a sandbox, a model zygote): it is
# checked before anything is read, so a hostile peer cannot make the gateway buffer a gigabyte.
PEER_HEADER = 64 << 10


class ProtocolError(Exception):
    """The peer closed the channel or sent something that is not a frame."""


class FrameTooLarge(ProtocolError):
    """The peer announced a frame larger than this side accepts (nothing of it was read)."""

    def __init__(self, hlen: int, plen: int, max_payload: int):
        super().__init__(f"frame too large: header {hlen} B, payload {plen} B")
        self.payload_bytes, self.max_payload = plen, max_payload


def encode(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(len(head), len(payload)) + head + payload


def head(header: dict, payload_bytes: int) -> bytes:
    """A frame's length prefix and header, for a payload the caller sends after it (streamed)."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(len(raw), payload_bytes) + raw


def _check(hlen: int, plen: int, max_header: int = MAX_HEADER, max_payload: int = MAX_PAYLOAD) -> None:
    if hlen > max_header or plen > max_payload:
        raise FrameTooLarge(hlen, plen, max_payload)


def _header(raw: bytes) -> dict:
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):         # a peer's JSON may be anything, nested 30,000 deep too
        raise ProtocolError("the frame's header is not JSON this side can read") from None
    if not isinstance(header, dict):
        raise ProtocolError("the frame's header is not a JSON object")
    return header


BIG_PAYLOAD = 64 << 20     # payloads above this are handed over as the bytearray they were read into


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, read into one buffer allocated once; above ``BIG_PAYLOAD`` that buffer itself
    (a bytearray) is returned, so an asynchronous 1 GB body is held once, not twice."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 1 << 20))
        if not k:
            raise ProtocolError("channel closed")
        got += k
    return buf if n > BIG_PAYLOAD else bytes(buf)


def recv_blocking(sock: socket.socket) -> tuple[dict, bytes]:
    hlen, plen = _HEAD.unpack(_recv_exact(sock, _HEAD.size))
    _check(hlen, plen)
    header = _header(_recv_exact(sock, hlen))
    payload = _recv_exact(sock, plen) if plen else b""
    return header, payload


def send_blocking(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    if len(payload) > BIG_PAYLOAD:          # not copied into one frame buffer first
        sock.sendall(head(header, len(payload)))
        sock.sendall(payload)
    else:
        sock.sendall(encode(header, payload))


async def recv_async(reader: asyncio.StreamReader, max_header: int = MAX_HEADER,
                     max_payload: int = MAX_PAYLOAD) -> tuple[dict, bytes]:
    try:
        hlen, plen = _HEAD.unpack(await reader.readexactly(_HEAD.size))
        _check(hlen, plen, max_header, max_payload)
        header = _header(await reader.readexactly(hlen))
        payload = await reader.readexactly(plen) if plen else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("channel closed") from exc
    return header, payload


async def recv_async_to_file(reader: asyncio.StreamReader, path: str, max_header: int = MAX_HEADER,
                             max_payload: int = MAX_PAYLOAD) -> tuple[dict, int]:
    """One frame whose payload is written to ``path`` as it arrives (a read buffer at a time,
    written off the loop): its header, and the payload's size."""
    try:
        hlen, plen = _HEAD.unpack(await reader.readexactly(_HEAD.size))
        _check(hlen, plen, max_header, max_payload)
        header = _header(await reader.readexactly(hlen))
        with open(path, "wb") as out:
            left = plen
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                if not chunk:
                    raise ProtocolError("channel closed")
                left -= len(chunk)
                await asyncio.to_thread(out.write, chunk)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("channel closed") from exc
    return header, plen


def send_with_fds(sock: socket.socket, header: dict, fds: list[int], payload: bytes = b"") -> None:
    """A frame whose first bytes carry open file descriptors (SCM_RIGHTS)."""
    data = encode(header, payload)
    sent = socket.send_fds(sock, [data], list(fds))
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_with_fds(sock: socket.socket, maxfds: int = 8) -> tuple[dict, bytes, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, _HEAD.size, maxfds)
    if not head:
        raise ProtocolError("channel closed")
    if len(head) < _HEAD.size:
        head += _recv_exact(sock, _HEAD.size - len(head))
    hlen, plen = _HEAD.unpack(head)
    _check(hlen, plen)
    header = _header(_recv_exact(sock, hlen))
    payload = _recv_exact(sock, plen) if plen else b""
    return header, payload, list(fds)


async def recv_sock_async(sock: socket.socket, max_header: int = PEER_HEADER, max_payload: int = 0) -> dict:
    """One frame's header from a non-blocking socket, on the running loop (a zygote's reply: no
    payload is accepted)."""
    loop = asyncio.get_running_loop()

    async def exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await loop.sock_recv(sock, n - len(buf))
            if not chunk:
                raise ProtocolError("channel closed")
            buf += chunk
        return bytes(buf)

    hlen, plen = _HEAD.unpack(await exact(_HEAD.size))
    _check(hlen, plen, max_header, max_payload)
    header = _header(await exact(hlen))
    if plen:
        await exact(plen)
    return header
