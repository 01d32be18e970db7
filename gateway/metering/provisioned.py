"""Provisioned concurrency as billed wall time: the pool manager reports each change of a
variant's provisioned count, and the scaler's checkpoints cut the open intervals, so a crash
loses at most one checkpoint interval of provisioned time."""
from __future__ import annotations

from gateway.clock import Clock
from gateway.domain import ProvisionedRecord


class ProvisionedMeter:
    """Provisioned concurrency as wall-time records.

    The pool manager reports every change of a variant's provisioned count
    (``change``); ``checkpoint`` cuts the open intervals at ``now`` so that a
    crash loses at most one checkpoint interval of provisioned time.
    """

    def __init__(self, clock: Clock):
        self.clock = clock
        self._open: dict[tuple[str, str], tuple[float, int, int]] = {}   # key -> (wall start, count, mb)
        self._closed: list[ProvisionedRecord] = []

    def change(self, key: tuple[str, str], count: int, memory_mb: int) -> None:
        now = self.clock.wall()
        prev = self._open.pop(key, None)
        if prev is not None:
            self._closed.extend(self._record(key, prev, now))
        if count > 0:
            self._open[key] = (now, count, memory_mb)

    def checkpoint(self) -> list[ProvisionedRecord]:
        now = self.clock.wall()
        out, self._closed = self._closed, []
        for key, prev in list(self._open.items()):
            out.extend(self._record(key, prev, now))
            self._open[key] = (now, prev[1], prev[2])
        return out

    @staticmethod
    def _record(key, prev, now) -> list[ProvisionedRecord]:
        start, count, mb = prev
        ms = int(round((now - start) * 1000.0)) * count
        if ms <= 0:
            return []
        return [ProvisionedRecord(endpoint=key[0], variant=key[1], memory_mb=mb, start=start, end=now,
                                  sandboxes=count, billed_ms=ms)]
