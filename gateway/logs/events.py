"""Log files as CloudWatch Logs events: one event per line.

A line the gateway wrote starts with its time (``2026-12-01T19:25:03.123Z ...``); a line a
sandbox printed has none and takes the time of the last stamped line before it (or, before
any, the first one after it; in a file with no stamp at all, the file's modification time).
Events are numbered by line, so a reader's position (a line index in its token) stays valid
while the file grows.  Pure, but for ``read_lines``.
"""
from __future__ import annotations

import calendar
import os
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.process.logpipe import log_stamp

STAMP = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,3}))?Z? ")
MAX_FILE_BYTES = 32 << 20            # a log file and its rotated predecessor are 16 MB each at most
MAX_EVENT_BYTES = 256 * 1024         # CloudWatch's own limit on one event's message


stamp = log_stamp                    # the prefix of a line the gateway writes into a log file


@dataclass(frozen=True)
class Event:
    index: int          # line number in the stream (0-based): a stable position
    timestamp: int      # ms since the epoch
    message: str


def read_lines(paths: list[Path]) -> tuple[list[bytes], float]:
    """The lines of the given files in order (a rotated ``.1`` first), read from the end when
    larger than ``MAX_FILE_BYTES``; and the newest modification time."""
    lines: list[bytes] = []
    mtime = 0.0
    for path in paths:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                mtime = max(mtime, st.st_mtime)
                if st.st_size > MAX_FILE_BYTES:
                    fh.seek(st.st_size - MAX_FILE_BYTES)
                    fh.readline()                   # start at a whole line
                data = fh.read(MAX_FILE_BYTES)
        except FileNotFoundError:
            continue
        lines.extend(data.splitlines())
    return lines, mtime


def _stamp_ms(line: bytes) -> int | None:
    m = STAMP.match(line)
    if m is None:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s)))
    return secs * 1000 + (int(frac.ljust(3, b"0")) if frac else 0)


def events(lines: list[bytes], mtime: float) -> list[Event]:
    stamps = [_stamp_ms(line) for line in lines]
    fallback = next((s for s in stamps if s is not None), int(mtime * 1000))
    out, last = [], fallback
    for i, (line, ms) in enumerate(zip(lines, stamps, strict=True)):
        if ms is not None:
            last = ms
            line = line[STAMP.match(line).end():]
        out.append(Event(i, last, line[:MAX_EVENT_BYTES].decode("utf-8", errors="replace")))
    return out


def matches(message: str, pattern: str | None) -> bool:
    """CloudWatch's filter patterns for unstructured lines: every term must appear (a quoted
    term as one phrase); ``?term`` terms: at least one of them; ``-term``: must not appear.
    An empty pattern matches every event."""
    if not pattern or not pattern.strip():
        return True
    terms = re.findall(r'[?-]?"[^"]*"|\S+', pattern)
    any_of, ok = [], True
    for t in terms:
        kind = t[0] if t[0] in "?-" else ""
        word = t[1:] if kind else t
        if len(word) >= 2 and word[0] == word[-1] == '"':
            word = word[1:-1]
        if kind == "?":
            any_of.append(word)
        elif kind == "-":
            ok = ok and word not in message
        else:
            ok = ok and word in message
    return ok and (not any_of or any(w in message for w in any_of))
