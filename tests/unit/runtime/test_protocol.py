"""Frames between the gateway and a sandbox: round trips, limits checked before reading, and
whatever a hostile peer sends is a ProtocolError, never a crash or a gigabyte buffered."""
from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from runtime import protocol


def _pair():
    a, b = socket.socketpair()
    return a, b


def test_a_frame_round_trips_header_and_untouched_payload():
    a, b = _pair()
    body = bytes(range(256)) * 100
    protocol.send_blocking(a, {"op": "invoke", "content_type": "application/x-npy"}, body)
    header, payload = protocol.recv_blocking(b)
    assert header == {"op": "invoke", "content_type": "application/x-npy"} and payload == body


def test_file_descriptors_travel_with_a_frame():
    a, b = _pair()
    r, w = socket.socketpair()
    protocol.send_with_fds(a, {"op": "assign"}, [r.fileno()], b"sample")
    header, payload, fds = protocol.recv_with_fds(b)
    assert header == {"op": "assign"} and payload == b"sample" and len(fds) == 1
    got = socket.socket(fileno=fds[0])
    w.sendall(b"through the passed fd")
    assert got.recv(64) == b"through the passed fd"


def test_a_closed_channel_and_a_cut_frame_are_protocol_errors():
    a, b = _pair()
    a.sendall(protocol.encode({"op": "result"}, b"12345")[:-2])
    a.close()
    with pytest.raises(protocol.ProtocolError, match="closed"):
        protocol.recv_blocking(b)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000])
def test_a_header_that_is_not_a_json_object_is_a_protocol_error(raw):
    a, b = _pair()
    a.sendall(struct.pack("!II", len(raw), 0) + raw)
    with pytest.raises(protocol.ProtocolError):
        protocol.recv_blocking(b)


async def test_an_announced_frame_over_the_peer_limits_is_refused_before_it_is_read():
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack("!II", protocol.PEER_HEADER + 1, 0))       # only the 8 header bytes
    with pytest.raises(protocol.FrameTooLarge):
        await protocol.recv_async(reader, protocol.PEER_HEADER, 0)
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack("!II", 2, 1 << 29))
    with pytest.raises(protocol.FrameTooLarge) as err:
        await protocol.recv_async(reader, protocol.PEER_HEADER, 6 << 20)
    assert err.value.payload_bytes == 1 << 29 and err.value.max_payload == 6 << 20


async def test_the_async_reader_reads_what_the_blocking_writer_sends():
    a, b = _pair()
    reader, _writer = await asyncio.open_connection(sock=b)
    protocol.send_blocking(a, {"op": "ready", "timings": {"load_ms": 1.5}}, b"")
    protocol.send_blocking(a, {"op": "result", "ok": True}, b"[1]")
    assert await protocol.recv_async(reader) == ({"op": "ready", "timings": {"load_ms": 1.5}}, b"")
    assert await protocol.recv_async(reader) == ({"op": "result", "ok": True}, b"[1]")
    _writer.close()
