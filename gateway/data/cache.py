"""The model cache: each distinct S3 object (its ETag and size) downloaded once into the state
dir, kept under a size limit, least recently used first out.

Entries are files named by a digest of (ETag, size), so the same bytes under two keys are
one entry and a replaced object (a new ETag) is a new one.  A download goes to a temporary
file and is renamed into place when complete, so an entry is never half there, whatever
kills the gateway.  An entry in use (pinned) is never evicted; an entry's last use is its
file's mtime, so the order survives a restart.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


class CacheFull(Exception):
    """No room for an object: larger than the cache, or the rest is in use, or the disk is full."""


@dataclass
class Entry:
    digest: str
    size: int
    last_used: float
    pins: int = 0


@dataclass
class CacheStats:
    hits: int = 0
    downloads: int = 0
    downloaded_bytes: int = 0
    evictions: int = 0


def evictions(entries: list[Entry], used: int, need: int, capacity: int) -> list[str] | None:
    """Which entries to drop, least recently used first, so that ``need`` more bytes fit in
    ``capacity``; None when they cannot (too big, or what would have to go is pinned)."""
    if need > capacity:
        return None
    out, free = [], capacity - used
    for e in sorted(entries, key=lambda e: e.last_used):
        if free >= need:
            break
        if e.pins == 0:
            out.append(e.digest)
            free += e.size
    return out if free >= need else None


def digest_of(etag: str, size: int) -> str:
    return hashlib.sha256(f"{etag}\0{size}".encode()).hexdigest()


class ModelCache:
    def __init__(self, root: Path, capacity_bytes: int, reserve_free_bytes: int = 256 << 20):
        self.root = Path(root)
        self.capacity = int(capacity_bytes)
        self.reserve_free = reserve_free_bytes        # left free on the disk whatever the capacity says
        self.entries: dict[str, Entry] = {}
        self.stats = CacheStats()
        self._fetching: dict[str, asyncio.Future] = {}

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def used(self) -> int:
        return sum(e.size for e in self.entries.values())

    async def open(self) -> None:
        await asyncio.to_thread(self._scan)

    def _scan(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / "partial", ignore_errors=True)      # downloads a crash interrupted
        shutil.rmtree(self.root / "trees", ignore_errors=True)        # prefix directories it left
        (self.root / "partial").mkdir(exist_ok=True)
        for path in self.objects.iterdir():
            st = path.lstat()
            if path.is_file() and not path.is_symlink():
                self.entries[path.name] = Entry(path.name, st.st_size, st.st_mtime)
            else:
                path.unlink(missing_ok=True) if not path.is_dir() else shutil.rmtree(path, True)

    def path(self, digest: str) -> Path:
        return self.objects / digest

    async def acquire(self, etag: str, size: int, fetch) -> Entry:
        """The entry of the object (``etag``, ``size``), pinned until ``release``: downloaded first
        by ``fetch(path)`` (blocking; run in a thread) unless it is here.  Concurrent callers of
        one object share one download."""
        return await self._ensure(digest_of(etag, size), size, fetch)

    def release(self, entry: Entry) -> None:
        entry.pins -= 1
        entry.last_used = time.time()

    async def _ensure(self, digest: str, size: int, fetch) -> Entry:
        """The entry, pinned (before any await, so no eviction can take it between finding and
        pinning); an entry still downloading is waited for, never taken for a hit."""
        while True:
            pending = self._fetching.get(digest)
            if pending is not None:
                await asyncio.shield(pending)        # someone else's download; then look again
                continue
            entry = self.entries.get(digest)
            if entry is None:
                break
            entry.pins += 1
            entry.last_used = time.time()
            if await asyncio.to_thread(_touch, self.path(digest)):
                self.stats.hits += 1
                return entry
            entry.pins -= 1                          # its file went away (by hand): download it again
            if self.entries.get(digest) is entry and entry.pins == 0:
                del self.entries[digest]
        done = self._fetching[digest] = asyncio.get_running_loop().create_future()
        try:
            drop = self._choose_room(size)
            entry = self.entries[digest] = Entry(digest, size, time.time(), pins=1)   # pinned while it arrives
            try:
                for gone in drop:
                    await asyncio.to_thread(self.path(gone).unlink, True)
                free = await asyncio.to_thread(lambda: shutil.disk_usage(self.objects).free)
                if free - size < self.reserve_free:
                    raise CacheFull(f"the disk of {self.root} has {free / (1 << 20):.0f} MB free, too little for "
                                    f"an object of {size / (1 << 20):.1f} MB")
                await asyncio.to_thread(self._download, digest, size, fetch)
            except BaseException:
                del self.entries[digest]
                raise
            self.stats.downloads += 1              # returned pinned: the caller's pin
            self.stats.downloaded_bytes += size
            return entry
        finally:
            del self._fetching[digest]
            done.set_result(None)

    def _choose_room(self, size: int) -> list[str]:
        """Drop (from the index, at once) what must go for ``size`` more bytes; their files are
        removed by the caller.  Synchronous, so two downloads never count the same free space."""
        drop = evictions(list(self.entries.values()), self.used, size, self.capacity)
        if drop is None:
            if size > self.capacity:
                raise CacheFull(f"the object is {size / (1 << 20):.1f} MB, larger than the whole model cache "
                                f"({self.capacity / (1 << 20):.0f} MB; serve --model-cache-mb)")
            raise CacheFull(f"the model cache ({self.capacity / (1 << 20):.0f} MB) is held by models being "
                            "installed right now; try again when they are done, or raise serve --model-cache-mb")
        for digest in drop:
            del self.entries[digest]
            self.stats.evictions += 1
        return drop

    def _download(self, digest: str, size: int, fetch) -> None:
        partial = self.root / "partial" / f"{digest}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            fetch(partial)
            got = partial.stat().st_size
            if got != size:
                raise OSError(f"downloaded {got} bytes of {size}")
            os.replace(partial, self.path(digest))
        finally:
            partial.unlink(missing_ok=True)

    def scratch(self) -> Path:
        """A fresh path for a private tree beside the entries (same file system, so entries can be
        linked in); the caller removes it, and a start removes what a crash left."""
        return self.root / "trees" / f"{os.getpid()}.{time.monotonic_ns()}"

    def assemble(self, files: list[tuple[str, str]], tree: Path) -> None:
        """Make ``tree`` (a ``scratch`` path) hold each (relative path, digest) as a hard link to
        its entry (the entries must be pinned).  Blocking."""
        tree.mkdir(parents=True)
        for rel, digest in files:
            target = tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(self.path(digest), target)

    def snapshot(self) -> dict:
        return {"capacity_bytes": self.capacity, "used_bytes": self.used, "objects": len(self.entries),
                "hits": self.stats.hits, "downloads": self.stats.downloads,
                "downloaded_bytes": self.stats.downloaded_bytes, "evictions": self.stats.evictions}


def _touch(path: Path) -> bool:
    """Mark the entry used (its mtime is its place in the LRU order); False if it is gone."""
    try:
        os.utime(path, follow_symlinks=False)
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False
