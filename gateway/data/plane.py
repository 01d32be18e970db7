"""The data plane: the one place that turns a location an API was given (``s3://``, an S3
``https://`` URL, ``file://`` or a path) into bytes on this machine.

Local data is read only under the directories the operator allowed (``serve --model-root``),
never under the state dir, and a refused path gets the same answer whether it exists or not.
S3 objects are read through ``S3`` into the ``ModelCache``: once per distinct object, streamed
to disk.  Failures are worded for the API that asked ("Could not find model data at s3://…").
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from gateway.data import s3 as s3mod
from gateway.data.cache import CacheFull, ModelCache
from gateway.data.locations import Location, parse
from gateway.data.snapshot import Budget, snapshot
from gateway.errors import Invalid, Unavailable
from gateway.serving.bundles import MAX_ENTRIES, off_loop

CHANGED_RETRIES = 2          # an object replaced while it downloads is looked up again this often
MAX_PREFIX_OBJECTS = 20_000  # objects under an S3Prefix model at most (a bundle's entry limit)


def relative_key(prefix: Location, key: str, what: str) -> str:
    """An object's key below the prefix, as a relative path that stays inside the directory."""
    rel = key[len(prefix.key):]
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\0" in rel or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise Invalid(f"The {what} under {prefix.text} has an object whose key is not a path inside it: {key!r}")
    return rel


class DataPlane:
    def __init__(self, roots: tuple = (), state_dir=None, s3: s3mod.S3 | None = None,
                 cache: ModelCache | None = None):
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self.state_dir = Path(os.path.realpath(state_dir)) if state_dir is not None else None
        self.s3 = s3
        self.cache = cache

    def locate(self, text, what: str = "ModelDataUrl") -> Location:
        """The location ``text`` names, refused now if it is not one this gateway may read (the
        existence of S3 objects is checked when they are read)."""
        loc = parse(text, self.s3.endpoint_url if self.s3 else None, what)
        if loc.scheme == "file":
            try:
                real = Path(os.path.realpath(loc.path))
                found = self.allowed(real) and real.exists()
            except (OSError, ValueError):                          # a name too long, a loop of links
                found = False
            if not found:                                          # one answer, so nothing learns what exists
                raise Invalid(f"Could not find model data at {text}. Local model data is read only under a "
                              "--model-root the gateway was started with.")
            return Location("file", text, path=real)             # what was checked is what is read
        if self.s3 is None:
            raise Invalid(f"Could not find model data at {text}: this gateway has no S3 access.")
        return loc

    def allowed(self, real: Path) -> bool:
        if self.state_dir is not None and (real == self.state_dir or self.state_dir in real.parents):
            return False
        return any(real == root or root in real.parents for root in self.roots)

    @contextlib.asynccontextmanager
    async def local(self, loc: Location, what: str = "model data", max_bytes: int | None = None,
                    etag: str | None = None, prefix: bool = False):
        """The location's bytes as a local path for the ``with`` block: a local file or directory
        as it is, an S3 object as its (pinned) cache entry, downloaded first when it is not there.
        ``max_bytes``: an object (or a prefix's objects together) larger than this is refused before
        it is downloaded; ``etag``: the object must still be this version; ``prefix``: ``loc`` is an
        S3 prefix whose objects become a directory (their keys below it, its paths)."""
        if loc.scheme == "file":
            async with self._snapshot(loc, max_bytes) as path:
                yield path
            return
        if loc.is_prefix != prefix:
            need = "a prefix ending in /" if prefix else "an object (a model.tar.gz), not a prefix"
            raise Invalid(f"Could not find {what} at {loc.text}: name {need}.")
        if prefix:
            async with self._directory(loc, what, max_bytes) as path:
                yield path
            return
        entry = await self._fetch(loc, what, max_bytes, etag)
        try:                                     # under its own name (a container may look for it)
            name = loc.key.rsplit("/", 1)[-1]
            name = name if name not in ("", ".", "..") and "\\" not in name else "model-data"
            async with self._scratch() as tree:
                await asyncio.to_thread(self.cache.assemble, [(name, entry.digest)], tree)
                yield tree / name
        finally:
            self.cache.release(entry)

    @contextlib.asynccontextmanager
    async def _scratch(self):
        """A private tree under the cache for the ``with`` block, removed after it."""
        tree = self.cache.scratch()
        try:
            yield tree
        finally:
            await asyncio.to_thread(shutil.rmtree, tree, True)

    @contextlib.asynccontextmanager
    async def _snapshot(self, loc: Location, max_bytes: int | None):
        """Local data as a private copy taken without following links (``snapshot``): what was
        checked under the model root is what is read, whoever else can write there."""
        root = next(r for r in self.roots if loc.path == r or r in loc.path.parents)
        async with self._scratch() as dest:
            yield await off_loop(snapshot, root, loc.path, dest, Budget(max_bytes, MAX_ENTRIES))

    @contextlib.asynccontextmanager
    async def _directory(self, loc: Location, what: str, max_bytes: int | None):
        """Every object under the prefix, each through the cache, linked into a directory of the
        cache's (same file system: links, not copies) named by their keys below the prefix."""
        objects = await self._call(self.s3.list, loc, what=what, max_keys=MAX_PREFIX_OBJECTS)
        files = [(relative_key(loc, o.key, what), o) for o in objects if not o.key.endswith("/")]
        if not files:
            raise Invalid(f"Could not find {what} at {loc.text}: no objects under the prefix.")
        total = sum(o.size for _, o in files)
        if max_bytes is not None and total > max_bytes:
            raise Invalid(f"The {what} under {loc.text} is {total / (1 << 20):.1f} MB, more than the "
                          f"{max_bytes / (1 << 20):.0f} MB a model may be.")
        entries = []
        try:
            for _, o in files:
                entries.append(await self._fetch(Location("s3", o.url, bucket=o.bucket, key=o.key), what, None,
                                                 o.etag))
            async with self._scratch() as tree:
                await asyncio.to_thread(self.cache.assemble, [(rel, e.digest) for (rel, _), e in
                                                              zip(files, entries, strict=True)], tree)
                yield tree
        finally:
            for e in entries:
                self.cache.release(e)

    async def _fetch(self, loc: Location, what: str, max_bytes: int | None, etag: str | None = None):
        for attempt in range(CHANGED_RETRIES + 1):
            info = await self._call(self.s3.stat, loc, what=what)
            if etag is not None and info.etag != etag.strip('"'):
                raise Invalid(f"The {what} at {loc.text} has ETag {info.etag}, not {etag.strip(chr(34))} as the "
                              "model says: it was replaced.")
            if max_bytes is not None and info.size > max_bytes:
                raise Invalid(f"The {what} at {loc.text} is {info.size / (1 << 20):.1f} MB, more than the "
                              f"{max_bytes / (1 << 20):.0f} MB a model may be.")
            try:
                return await self.cache.acquire(info.etag, info.size, lambda path, i=info: self.s3.download(i, path))
            except s3mod.Changed:
                if attempt == CHANGED_RETRIES:
                    raise Unavailable(f"The {what} at {loc.text} kept changing while it was downloaded; "
                                      "try again.") from None
            except s3mod.S3Error as exc:
                raise self._worded(exc, loc, what) from None
            except CacheFull as exc:
                raise Invalid(f"Could not download {what} at {loc.text}: {exc}") from None

    async def stat(self, loc: Location, what: str = "model data") -> s3mod.ObjectInfo:
        """An S3 object's ETag and size; Invalid (worded for ``what``) when it is not there."""
        return await self._call(self.s3.stat, loc, what=what)

    async def objects(self, loc: Location, what: str = "model data") -> list[s3mod.ObjectInfo]:
        """The objects under an S3 prefix (at most a bundle's entry limit)."""
        return await self._call(self.s3.list, loc, what=what, max_keys=MAX_PREFIX_OBJECTS)

    async def _call(self, fn, loc: Location, what: str, **kw):
        try:
            return await asyncio.to_thread(fn, loc, **kw)
        except s3mod.S3Error as exc:
            raise self._worded(exc, loc, what) from None

    @staticmethod
    def _worded(exc: s3mod.S3Error, loc: Location, what: str):
        if isinstance(exc, s3mod.Missing):
            return Invalid(f"Could not find {what} at {loc.text}: {exc.reason}.")
        if isinstance(exc, s3mod.Denied):
            return Invalid(f"Could not access {what} at {loc.text}: {exc.reason}.")
        if isinstance(exc, (s3mod.Unreachable, s3mod.Changed)):
            return Unavailable(f"Could not read {what} at {loc.text}: {exc.reason}.")
        return Invalid(f"Could not read {what} at {loc.text}: {exc.reason}.")

    def snapshot(self) -> dict:
        return {"s3_endpoint": (self.s3.endpoint_url or "AWS S3") if self.s3 else None,
                "model_cache": self.cache.snapshot() if self.cache else None}
