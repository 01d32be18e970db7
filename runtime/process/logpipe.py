"""What a sandbox prints, copied by the gateway from a pipe into its endpoint's log file.

Model code holds only the write end of a pipe, never a descriptor of a host file: with one it
could truncate the log, read back what other sandboxes wrote there, or ``fallocate`` gigabytes
past any rotation.  The gateway reads at most ``rate_bytes_s`` from each pipe (bursts up to one
second's worth); a model that prints faster fills its pipe and waits in its own write calls,
on its own time.  The file moves to ``.1`` past ``rotate_bytes`` (one old file kept).
"""
from __future__ import annotations

import asyncio
import os
import time

ROTATE_BYTES = 16 << 20
RATE_BYTES_S = 4 << 20
CHUNK = 1 << 16


def log_stamp(now: float | None = None) -> str:
    """The time at the start of a line the gateway writes into a log (the Logs API reads it back
    as the event's timestamp): ``2026-12-01T19:25:03.123Z``."""
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class LogPipe:
    def __init__(self, path: str, rotate_bytes: int = ROTATE_BYTES, rate_bytes_s: int = RATE_BYTES_S):
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.rate_bytes_s = rate_bytes_s
        self._loop = asyncio.get_running_loop()
        self._r, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._r, False)
        self._file = open(path, "ab", buffering=0)
        self._window_start = self._loop.time()
        self._window_bytes = 0
        self._paused: asyncio.TimerHandle | None = None
        self._loop.add_reader(self._r, self._drain)

    def write(self, data: bytes) -> None:
        """A line of the gateway's own (which sandbox starts, why it died)."""
        if self._file is not None:
            self._file.write(data)
            self._rotate_if_big()

    def handed_over(self) -> None:
        """The write end now belongs to the sandbox (passed or inherited): close ours, so the
        pipe ends when the sandbox and everything it started have exited."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _drain(self) -> None:
        try:
            data = os.read(self._r, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.write(data)
        now = self._loop.time()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += len(data)
        if self._window_bytes >= self.rate_bytes_s:          # over its rate: read no more this second
            self._loop.remove_reader(self._r)
            self._paused = self._loop.call_later(max(0.0, 1.0 - (now - self._window_start)), self._resume)

    def _resume(self) -> None:
        self._paused = None
        self._window_start, self._window_bytes = self._loop.time(), 0
        if self._r >= 0:
            self._loop.add_reader(self._r, self._drain)

    def _rotate_if_big(self) -> None:
        try:
            if self._file.tell() > self.rotate_bytes:
                self._file.close()
                os.replace(self.path, self.path + ".1")
                self._file = open(self.path, "ab", buffering=0)
        except OSError:
            pass

    def close(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._r >= 0:
            self._loop.remove_reader(self._r)
            os.close(self._r)
            self._r = -1
        self.handed_over()
        if self._file is not None:
            self._file.close()
            self._file = None
