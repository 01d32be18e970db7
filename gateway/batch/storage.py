"""Where a transform job's objects come from and go to: S3 (``s3://``, S3 ``https://``) or this
machine (``file://`` or a path, only under a ``--model-root``).

Inputs are an S3Prefix (every object under it, in key order) or a ManifestFile (a JSON array:
``{"prefix": URI}`` then keys relative to it).  An input's *relative name* is its key below the
prefix's last ``/``, and names its output: ``<S3OutputPath>/<relative name>.out``.  Every
failure is a ``JobInputError`` whose message says which object and why; S3 outages are
retried by the caller.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.data import s3 as s3mod
from gateway.data.locations import Location
from gateway.data.plane import DataPlane
from gateway.errors import Invalid

MAX_OBJECTS = 100_000            # input objects of one job at most
MAX_MANIFEST_BYTES = 16 << 20


class JobInputError(Exception):
    """An input or output location the job cannot use; ``retry``: storage was unreachable."""

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.message, self.retry = message, retry


@dataclass(frozen=True)
class InputObject:
    url: str                     # s3://bucket/key, or a local path
    rel: str                     # its name below the prefix: the output is <S3OutputPath>/<rel>.out
    size: int | None = None


def _safe_rel(rel: str, where: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\0" in rel or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise JobInputError(f"{where} names an object that is not a path below its prefix: {rel[:200]!r}")
    return rel


def _base(key: str) -> str:
    """What an input's relative name is taken below: the prefix up to its last ``/``."""
    return key[:key.rfind("/") + 1]


class JobStorage:
    def __init__(self, data: DataPlane):
        self.data = data

    @property
    def s3(self) -> s3mod.S3:
        return self.data.s3

    def locate(self, text: str, what: str) -> Location:
        try:
            return self.data.locate(text, what)
        except Invalid as exc:
            raise JobInputError(exc.message.replace("model data", what)) from None

    async def _s3(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except s3mod.Unreachable as exc:
            raise JobInputError(f"{exc.url}: {exc.reason}", retry=True) from None
        except s3mod.S3Error as exc:
            raise JobInputError(f"{exc.url}: {exc.reason}") from None

    # --- inputs ---------------------------------------------------------------------------
    async def inputs(self, uri: str, data_type: str) -> list[InputObject]:
        """The job's input objects, in order.  The whole plan is built in a thread: a prefix or a
        manifest of 100,000 objects is seconds of Python that must not hold the event loop."""
        loc = self.locate(uri, "TransformInput S3Uri")
        return await asyncio.to_thread(self._inputs, loc, data_type)

    def _inputs(self, loc: Location, data_type: str) -> list[InputObject]:
        if data_type == "ManifestFile":
            return self._manifest(loc)
        found = self._list_local(loc) if loc.scheme == "file" else self._list_s3(loc)
        if not found:
            raise JobInputError(f"no objects were found under {loc.text}")
        return found

    def _sync_s3(self, fn, *args):
        try:
            return fn(*args)
        except s3mod.Unreachable as exc:
            raise JobInputError(f"{exc.url}: {exc.reason}", retry=True) from None
        except s3mod.S3Error as exc:
            raise JobInputError(f"{exc.url}: {exc.reason}") from None

    def _list_s3(self, loc: Location) -> list[InputObject]:
        listed = self._sync_s3(self.s3.list, loc, MAX_OBJECTS)
        base = _base(loc.key)
        out = []
        for info in sorted(listed, key=lambda i: i.key):
            if info.key.endswith("/") and info.size == 0:          # a "folder" marker, not data
                continue
            out.append(InputObject(info.url, _safe_rel(info.key[len(base):], loc.text), info.size))
        return out

    def _list_local(self, loc: Location) -> list[InputObject]:
        root = loc.path
        if root.is_file():
            return [InputObject(str(root), root.name, root.stat().st_size)]
        out = []
        for dirpath, dirnames, filenames in os.walk(root):          # links are not followed out of the root
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if self.data.allowed(Path(os.path.realpath(here / d))))
            for f in sorted(filenames):                             # (the state dir is never listed)
                p = here / f
                if p.is_file() and not p.is_symlink():
                    out.append(InputObject(str(p), p.relative_to(root).as_posix(), p.stat().st_size))
                if len(out) > MAX_OBJECTS:
                    raise JobInputError(f"more than {MAX_OBJECTS} files under {loc.text}")
        return out

    def _manifest(self, loc: Location) -> list[InputObject]:
        raw = self._read_small(loc, MAX_MANIFEST_BYTES, "manifest")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise JobInputError(f"the manifest {loc.text} is not JSON") from None
        if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict) \
                or not isinstance(doc[0].get("prefix"), str):
            raise JobInputError(f"the manifest {loc.text} must be a JSON array whose first element is "
                                '{"prefix": "s3://bucket/prefix/"} and whose other elements are keys below it')
        if len(doc) - 1 > MAX_OBJECTS:
            raise JobInputError(f"the manifest {loc.text} lists more than {MAX_OBJECTS} objects")
        prefix = self.locate(doc[0]["prefix"], "manifest prefix")
        out, seen = [], set()
        for i, rel in enumerate(doc[1:], start=1):
            if not isinstance(rel, str):
                raise JobInputError(f"the manifest {loc.text}: element {i} is not a key")
            rel = _safe_rel(rel, f"the manifest {loc.text}")
            if rel in seen:                       # two inputs would write one output
                raise JobInputError(f"the manifest {loc.text} lists {rel[:200]!r} twice")
            seen.add(rel)
            if prefix.scheme == "s3":
                out.append(InputObject(f"s3://{prefix.bucket}/{prefix.key}{rel}", rel))
            else:
                out.append(InputObject(str(Path(prefix.path) / rel), rel))
        if not out:
            raise JobInputError(f"the manifest {loc.text} lists no objects")
        return out

    def _read_small(self, loc: Location, limit: int, what: str) -> bytes:
        if loc.scheme == "file":
            with open(loc.path, "rb") as fh:
                data = fh.read(limit + 1)
        else:
            info = self._sync_s3(self.s3.stat, loc)
            if info.size > limit:
                raise JobInputError(f"the {what} {loc.text} is over {limit} bytes")
            stream, _, _ = self._sync_s3(self.s3.open, loc)
            try:
                data = stream.read(limit + 1)
            finally:
                stream.close()
        if len(data) > limit:
            raise JobInputError(f"the {what} {loc.text} is over {limit} bytes")
        return data

    async def fetch(self, obj: InputObject, dest: Path) -> int:
        """The input object into ``dest`` (a local input is read where it is: ``dest`` is not
        written and its own path is used); its size."""
        if not obj.url.startswith("s3://"):
            try:
                return os.stat(self._local_input(obj.url)).st_size
            except OSError as exc:
                raise JobInputError(f"{obj.url}: {exc.strerror}") from None
        bucket, _, key = obj.url[5:].partition("/")
        loc = Location("s3", obj.url, bucket=bucket, key=key)
        info = await self._s3(self.s3.stat, loc)
        await self._s3(self.s3.download, info, dest, None, False)      # read once, soon: not fsync'ed
        return info.size

    def path_of(self, obj: InputObject, spooled: Path) -> Path:
        return spooled if obj.url.startswith("s3://") else Path(self._local_input(obj.url))

    def _local_input(self, path: str) -> str:
        return str(self.locate(path, "transform input").path)

    # --- outputs --------------------------------------------------------------------------
    def output_location(self, output_path: str, rel: str) -> Location:
        base = self.locate_output(output_path)
        if base.scheme == "s3":
            key = base.key if not base.key or base.key.endswith("/") else base.key + "/"
            return Location("s3", f"s3://{base.bucket}/{key}{rel}.out", bucket=base.bucket, key=f"{key}{rel}.out")
        return Location("file", str(base.path / f"{rel}.out"), path=base.path / f"{rel}.out")

    def locate_output(self, output_path: str) -> Location:
        if output_path.lower().startswith(("s3://", "https://")):
            return self.locate(output_path, "S3OutputPath")
        return self.locate_dir(output_path)

    def locate_dir(self, text: str) -> Location:
        """A local output directory: under a --model-root (it may not exist yet)."""
        from gateway.data.locations import parse

        loc = parse(text, None, "S3OutputPath")
        real = Path(os.path.realpath(loc.path))
        if not self.data.allowed(real):
            raise JobInputError(f"local output {text} is not under a --model-root of this gateway")
        return Location("file", text, path=real)

    async def check_output(self, output_path: str) -> None:
        """Fail early on an output bucket that does not exist (some S3 stores would create it)."""
        loc = self.locate_output(output_path)
        if loc.scheme == "s3":
            await self._s3(self.s3.check_bucket, loc)

    async def put_output(self, loc: Location, path: Path, content_type: str | None) -> None:
        if loc.scheme == "s3":
            await self._s3(self.s3.put, loc, path, content_type)
            return
        try:
            await asyncio.to_thread(self._write_local, Path(loc.path), path)
        except OSError as exc:
            raise JobInputError(f"writing {loc.text}: {exc.strerror or exc}") from None

    def _write_local(self, dest: Path, source: Path) -> None:
        """Copy ``source`` to ``dest`` whole (a temporary file renamed over it), but only where a
        local output may go: the directory it lands in, resolved after it is made (links and all),
        must be under a --model-root and not in the state dir."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        parent = Path(os.path.realpath(dest.parent))
        if not self.data.allowed(parent):
            raise JobInputError(f"local output {dest} resolves to {parent}, which is not under a --model-root of "
                                "this gateway (or is in its state dir)")
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:100]}.", suffix=".part", dir=parent)   # O_EXCL: no link
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, parent / dest.name)           # a link at the name is replaced, not followed
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
