"""Where a multi-model endpoint's models come from: its prefix (``s3://bucket/prefix/`` or a
local directory under a ``--model-root``), a target path below it, and the version found there.

``ModelSource.version`` looks a target up (again after ``recheck_s``: a new ETag is a new
version, a vanished object is Invalid); ``Archives.prepared`` turns a version into what a
sandbox is sent -- the model checked and unpacked as a single-model bundle would be (the
endpoint's shared code added), packed as an uncompressed tar -- once per version, kept on
disk, least recently used out first.  Local data is read through the data plane's snapshot
(links are not followed) and must resolve inside the prefix.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.data.locations import Location
from gateway.data.plane import DataPlane, relative_key
from gateway.errors import Invalid
from gateway.multimodel import targets
from gateway.serving.bundles import MAX_ENTRIES, Limits, install, off_loop


@dataclass(frozen=True)
class Version:
    target: str          # the client's path, checked
    tag: str             # what identifies this version: an ETag, or a digest of a listing or a stat
    key: str             # the gateway's name for it, in sandboxes and on disk ("m" + hex)
    url: str             # where it was found
    directory: bool      # a model directory (a prefix of objects, or a local directory)


@dataclass(frozen=True)
class Archive:
    key: str
    kind: str            # runtime.bundle.PICKLE or SAGEMAKER
    data: bytes          # the bundle as an uncompressed tar
    download_ms: float   # what reading the model data took when it was prepared (0: prepared before)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def locate_prefix(plane: DataPlane, url: str) -> Location:
    """A multi-model endpoint's ModelDataUrl as the prefix it names (an S3 URL gains its trailing
    slash); Invalid unless this gateway may read it and, when local, it is a directory."""
    loc = plane.locate(url if url.endswith("/") or not url.startswith(("s3://", "http")) else url + "/",
                       what="ModelDataUrl")
    if loc.scheme == "file" and not loc.path.is_dir():
        raise Invalid(f"ModelDataUrl {url} of a multi-model endpoint must be a directory or an S3 prefix.")
    return loc


class ModelSource:
    def __init__(self, plane: DataPlane, prefix: str, clock, recheck_s: float, salt: str = ""):
        self.plane, self.clock, self.recheck_s = plane, clock, recheck_s
        self.salt = salt                      # what else makes a prepared model differ (the shared code)
        self.prefix = locate_prefix(plane, prefix)
        self._known: dict[str, tuple[Version, float]] = {}
        self._looking: dict[str, asyncio.Future] = {}

    @property
    def url(self) -> str:
        return self.prefix.url if self.prefix.scheme == "s3" else str(self.prefix.path)

    def known(self, target: str) -> Version | None:
        hit = self._known.get(target)
        return hit[0] if hit else None

    async def version(self, target: str) -> Version:
        """The target's current version (looked up at most every ``recheck_s``); Invalid naming
        the target when nothing is there (or it may not be read)."""
        hit = self._known.get(target)
        now = self.clock.now()
        if hit is not None and now - hit[1] < self.recheck_s:
            return hit[0]
        fut = self._looking.get(target)
        if fut is None:                       # one lookup for every request that asks at once
            fut = self._looking[target] = asyncio.ensure_future(self._look_up(target))
            fut.add_done_callback(lambda _f, t=target: self._looking.pop(t, None))
        try:
            version = await asyncio.shield(fut)
        except Invalid:
            self._known.pop(target, None)
            raise
        self._known[target] = (version, self.clock.now())
        if len(self._known) > 100_000:        # bounded: the oldest lookups go first
            for t in list(self._known)[:10_000]:
                del self._known[t]
        return version

    def _key(self, *tag: str) -> str:
        return "m" + _digest(self.url, self.salt, *tag)[:24]

    def _missing(self, target: str, detail: str = "") -> Invalid:
        return Invalid(f"Could not find target model {target} under {self.url}" + (f": {detail}" if detail else "")
                       + ". Name a .pkl, a model.tar.gz or a model directory below the endpoint's model prefix.")

    async def _look_up(self, target: str) -> Version:
        if self.prefix.scheme == "s3":
            return await self._look_up_s3(target)
        return await off_loop(self._look_up_local, target)

    async def _look_up_s3(self, target: str) -> Version:
        p = self.prefix
        if targets.is_file(target):
            loc = Location("s3", f"s3://{p.bucket}/{p.key}{target}", bucket=p.bucket, key=p.key + target)
            try:
                info = await self.plane.stat(loc, what="target model")
            except Invalid:
                raise self._missing(target) from None
            return Version(target, info.etag, self._key(target, info.etag), loc.url, False)
        loc = Location("s3", f"s3://{p.bucket}/{p.key}{target}/", bucket=p.bucket, key=p.key + target + "/")
        try:
            objects = [o for o in await self.plane.objects(loc, what="target model") if not o.key.endswith("/")]
        except Invalid as exc:
            raise self._missing(target, exc.message) from None
        if not objects:
            raise self._missing(target)
        listing = sorted((relative_key(loc, o.key, "target model"), o.etag) for o in objects)
        tag = _digest(*(f"{k}={e}" for k, e in listing))
        return Version(target, tag, self._key(target, tag), loc.url, True)

    def _look_up_local(self, target: str) -> Version:
        root = self.prefix.path
        path = root / target
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError):
            raise self._missing(target) from None
        if real == root or root not in real.parents or not self.plane.allowed(real) or not real.exists():
            raise self._missing(target)       # a link out of the prefix reads as nothing there
        st = real.stat()
        if real.is_dir():
            entries = []
            for dirpath, dirnames, filenames in os.walk(real):
                for name in dirnames + filenames:
                    full = os.path.join(dirpath, name)
                    s = os.lstat(full)
                    entries.append(f"{os.path.relpath(full, real)}:{s.st_size}:{s.st_mtime_ns}:{s.st_mode}")
                    if len(entries) > MAX_ENTRIES:
                        raise Invalid(f"Target model {target} holds more than {MAX_ENTRIES} files.")
            tag = _digest(*sorted(entries))
            return Version(target, tag, self._key(target, tag), str(real), True)
        tag = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
        return Version(target, tag, self._key(target, tag), str(real), False)

    def location(self, v: Version) -> Location:
        """Where ``v`` is read from: for a local target, the real path its lookup checked, not
        resolved again (a link swapped in since then is not followed: the data plane's snapshot
        walks to it without following links)."""
        if self.prefix.scheme == "s3":
            key = v.url[len(f"s3://{self.prefix.bucket}/"):]
            return Location("s3", v.url, bucket=self.prefix.bucket, key=key)
        return Location("file", v.url, path=Path(v.url))


class Archives:
    """Prepared models on disk, shared by every multi-model endpoint of the gateway.  At most
    ``PREPARING`` are made at once: each holds its model (up to its tier) in the gateway's memory
    while it is packed, and its copies on disk."""
    PREPARING = 2

    def __init__(self, root: Path, capacity_bytes: int):
        self.root, self.capacity = Path(root), capacity_bytes
        self._making: dict[str, asyncio.Future] = {}
        self._slots = asyncio.Semaphore(self.PREPARING)

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.root.glob(".*"):         # a preparation cut short by a stop
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _path(self, key: str, kind: str) -> Path:
        return self.root / f"{key}.{kind}.tar"

    def _read(self, key: str) -> Archive | None:
        for kind in ("pickle", "sagemaker"):
            p = self._path(key, kind)
            try:
                data = p.read_bytes()
                os.utime(p)                   # recently used: the last to go
            except FileNotFoundError:         # trimmed meanwhile: made again
                continue
            return Archive(key, kind, data, 0.0)
        return None

    async def prepared(self, source: ModelSource, v: Version, limits: Limits, code: Path | None,
                       program: str | None) -> Archive:
        """``v`` ready to send to a sandbox; BundleRejected / Invalid when it cannot be served."""
        found = await off_loop(self._read, v.key)
        if found is not None:
            return found
        fut = self._making.get(v.key)
        if fut is None:
            fut = self._making[v.key] = asyncio.ensure_future(self._make(source, v, limits, code, program))
            fut.add_done_callback(lambda _f, k=v.key: self._making.pop(k, None))
        return await asyncio.shield(fut)

    async def _make(self, source: ModelSource, v: Version, limits: Limits, code, program) -> Archive:
        async with self._slots:
            return await self._make_now(source, v, limits, code, program)

    async def _make_now(self, source: ModelSource, v: Version, limits: Limits, code, program) -> Archive:
        t0 = time.perf_counter()
        stage = self.root / f".{v.key}-{os.urandom(4).hex()}"
        try:
            async with source.plane.local(source.location(v), what=f"target model {v.target}",
                                          max_bytes=limits.max_bytes, prefix=v.directory and v.url.startswith("s3"),
                                          etag=None if v.directory or not v.url.startswith("s3") else v.tag) as path:
                t1 = time.perf_counter()
                kind = await off_loop(install, Path(path), stage / "bundle", limits, code, program)
            data = await off_loop(_pack, stage / "bundle")
            dest = self._path(v.key, kind)
            await off_loop(_write, stage / "archive", dest, data)
        finally:
            await asyncio.to_thread(shutil.rmtree, stage, True)
        await off_loop(self._trim)
        return Archive(v.key, kind, data, (t1 - t0) * 1000.0)

    def _trim(self) -> None:
        """Past its capacity, the least recently used archives go (they are made again if asked)."""
        files = []
        for p in self.root.glob("m*.tar"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= self.capacity:
                break
            total -= size
            p.unlink(missing_ok=True)


def _pack(bundle: Path) -> bytes:
    """The bundle as an uncompressed tar: regular files and directories only (the bundle was
    checked to hold nothing else), names relative to its top."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(bundle):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                tar.add(full, arcname=str(full.relative_to(bundle)), recursive=False)
    return buf.getvalue()


def _write(stage: Path, dest: Path, data: bytes) -> None:
    stage.parent.mkdir(parents=True, exist_ok=True)
    with open(stage, "wb") as fh:
        fh.write(data)
    os.replace(stage, dest)
