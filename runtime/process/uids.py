"""The uids sandboxes run as: one per sandbox (and per model zygote), from a range of
this gateway's own, handed out round robin so that a uid is reused as late as possible.
A model zygote's replicas run as its uid: each holds a reference, and the uid is free
again only when the zygote and every replica are gone."""
from __future__ import annotations

import zlib

RANGE_SIZE = 1024
FIRST = 200_000


def default_range(instance: str) -> tuple[int, int]:
    """``(first, count)`` for the gateway named ``instance``: two gateways on one host (each
    with its own state dir) draw from different ranges, so their sandboxes never share a uid."""
    slot = zlib.crc32(instance.encode()) % 16384
    return FIRST + slot * RANGE_SIZE, RANGE_SIZE


class UidsExhausted(Exception):
    pass


class UidPool:
    def __init__(self, first: int, count: int):
        if first <= 0 or count <= 0:
            raise ValueError(f"bad sandbox uid range {first}+{count}")
        self.first = first
        self.count = count
        self._next = 0
        self._refs: dict[int, int] = {}

    def acquire(self) -> int:
        for _ in range(self.count):
            uid = self.first + self._next
            self._next = (self._next + 1) % self.count
            if uid not in self._refs:
                self._refs[uid] = 1
                return uid
        raise UidsExhausted(f"all {self.count} sandbox uids from {self.first} are in use")

    def retain(self, uid: int) -> None:
        """One more process family runs as ``uid`` (a replica of the zygote that holds it)."""
        self._refs[uid] = self._refs.get(uid, 0) + 1

    def release(self, uid: int | None) -> None:
        n = self._refs.get(uid, 0) - 1
        if n > 0:
            self._refs[uid] = n
        else:
            self._refs.pop(uid, None)

    @property
    def in_use(self) -> int:
        return len(self._refs)
