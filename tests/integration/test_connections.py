"""Connections a client holds open without finishing: heads that never end (slow-loris),
bodies that trickle, idle keep-alives, and more connections than the cap.  None of them stalls
the gateway or holds a connection for good."""
from __future__ import annotations

import socket
import time

import pytest

from tests import models
from tests.helpers import running_gateway, wait_until

HEAD = b"POST /endpoints/echo/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def gw():
    with running_gateway("--header-timeout", "2", "--body-timeout", "2", "--idle-timeout", "4",
                         "--max-connections", "600") as g:
        g.client().deploy("echo", models.echo, memory_mb=1024)
        yield g


def _connect(gw) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)


def _closed_with(s: socket.socket, timeout: float = 10.0) -> bytes:
    """What the server sent before closing (b'' if it just closed)."""
    s.settimeout(timeout)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except (ConnectionResetError, TimeoutError, socket.timeout):
        pass
    return got


def test_five_hundred_slow_loris_connections_neither_stall_nor_outlive_the_header_deadline(gw):
    loris = []
    for _ in range(500):
        s = _connect(gw)
        s.sendall(HEAD)                                    # a head that never ends
        loris.append(s)
    assert gw.client().invoke("echo", 7) == {"echo": 7}    # the gateway serves on meanwhile ...
    assert sum(_still_open(s) for s in loris) > 400        # ... while (nearly) all 500 are still held
    answers = [_closed_with(s) for s in loris]             # each is closed at its deadline, told 408
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
    for s in loris:
        s.close()
    assert gw.client().invoke("echo", 8) == {"echo": 8}


def test_past_the_cap_a_new_connection_is_told_503_and_closed(gw):
    held = []
    try:
        for _ in range(600):
            s = _connect(gw)
            s.sendall(HEAD)
            held.append(s)
        time.sleep(0.3)
        extra = _connect(gw)
        assert _closed_with(extra, 5).startswith(b"HTTP/1.1 503")
        extra.close()
    finally:
        for s in held:
            s.close()
    assert wait_until(lambda: _ok(gw), timeout=10)          # the cap frees as they go


def _ok(gw) -> bool:
    try:
        return gw.client().invoke("echo", 1) == {"echo": 1}
    except Exception:  # noqa: BLE001 - still over the cap a moment
        return False


def _signed_head(gw, body: bytes) -> bytes:
    from gateway.sagemaker import sigv4
    from gateway.sagemaker.credentials import AccessKey

    url = f"{gw.url}/endpoints/echo/invocations"
    hdrs = sigv4.sign_url("POST", url, body, AccessKey("test", "test"), "us-east-1",
                          {"Content-Type": "application/json"})
    lines = [f"{k}: {v}" for k, v in hdrs.items() if k.lower() != "host"]
    return ("POST /endpoints/echo/invocations HTTP/1.1\r\nHost: " + url.split("/")[2] + "\r\n"
            + "".join(line + "\r\n" for line in lines) + f"Content-Length: {len(body)}\r\n\r\n").encode()


def test_a_trickled_body_is_refused_at_its_deadline(gw):
    s = _connect(gw)
    body = b"[1" + b" " * 97 + b"]"
    s.sendall(_signed_head(gw, body) + body[:2])                      # signed; 2 of 100 bytes, then nothing
    answer = _closed_with(s, 15)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"RequestTimeout" in answer and b"did not arrive within 2 s" in answer


def test_an_idle_keep_alive_connection_is_closed(gw):
    s = _connect(gw)
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    s.settimeout(5)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    assert _closed_with(s, 15) == b""                              # closed once idle for 4 s


def test_unsigned_bodies_are_refused_before_a_byte_of_them_is_read(gw):
    """The SigV4 checks that need no body come first: an unsigned or badly signed request is
    answered before its body is read, so stalled 6 MB uploads hold no gateway memory."""
    import psutil

    before = psutil.Process(gw.proc.pid).memory_info().rss
    held = []
    for _ in range(60):
        s = _connect(gw)
        s.sendall(b"POST /endpoints/echo/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 6291456\r\n\r\n" + b"x" * (5 << 20))
        held.append(s)
    answers = [_closed_with(s, 10)[:200] for s in held]
    assert all(a.startswith(b"HTTP/1.1 403") and b"MissingAuthenticationToken" in a for a in answers), answers[0]
    assert psutil.Process(gw.proc.pid).memory_info().rss - before < 100 << 20
    for s in held:
        s.close()


def test_at_the_cap_the_longest_idle_keep_alive_connection_makes_room():
    """Connections that sent a request and now only sit open cannot lock everyone else out."""
    with running_gateway("--max-connections", "20", "--idle-timeout", "60") as g:
        idle = []
        for _ in range(20):
            s = _connect(g)
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.settimeout(5)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            idle.append(s)
        time.sleep(1.5)
        fresh = _connect(g)
        fresh.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        fresh.settimeout(5)
        assert fresh.recv(4096).startswith(b"HTTP/1.1 200")
        assert sum(not _still_open(s) for s in idle) >= 1            # the quietest one was closed for it
        for s in idle + [fresh]:
            s.close()


def test_empty_lines_before_a_request_do_not_end_the_head_deadline(gw):
    s = _connect(gw)
    s.sendall(b"\r\n\r\n\r\n")                                   # not a head: the deadline still runs
    assert _closed_with(s, 10).startswith(b"HTTP/1.1 408")
