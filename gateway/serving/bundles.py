"""Bundle storage on the gateway side: unpack, check statically, keep per version.

The gateway never unpickles or imports a bundle itself (that runs user code);
it checks what can be checked without running it -- the pickle stream is
well-formed, inference.py compiles and defines model_fn, requirements are
installed -- and leaves the real load to a sandbox.
"""
from __future__ import annotations

import ast
import contextlib
import gzip
import pickletools
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import BundleRejected
from runtime import bundle as rb

MAX_ENTRIES = 20_000          # files and directories in one bundle


@dataclass(frozen=True)
class Limits:
    """How large a bundle may be once unpacked: bytes (None: no cap) and entries.  Checked as
    an archive is read, member by member, so a small archive that expands to gigabytes stops
    at the cap instead of filling the disk."""
    max_bytes: int | None = None
    max_entries: int = MAX_ENTRIES

    def too_big(self, what: str) -> BundleRejected:
        mb = (self.max_bytes or 0) / (1 << 20)
        return BundleRejected(f"{what} is larger than {mb:g} MB unpacked, the limit for this endpoint (its memory "
                              "size unless serve --max-bundle-mb says otherwise)")

    def too_many(self, what: str) -> BundleRejected:
        return BundleRejected(f"{what} has more than {self.max_entries} files and directories")

    def check_tree(self, source: Path) -> None:
        """A directory or file about to be copied in: refused before a byte is copied."""
        paths = [source] if source.is_file() else list(source.rglob("*"))
        if len(paths) > self.max_entries:
            raise self.too_many(f"model data {source}")
        total = sum(p.lstat().st_size for p in paths if p.is_file() and not p.is_symlink())
        if self.max_bytes is not None and total > self.max_bytes:
            raise self.too_big(f"model data {source}")


NO_LIMITS = Limits()


def detect_format(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:1] == b"\x80":
        return "pickle"
    raise BundleRejected(
        "bundle is neither a pickle (.pkl) nor a tar archive (model.tar.gz); "
        "for a model directory, deploy the directory itself or its model.tar.gz"
    )


def unpack(upload: Path, dest: Path, limits: Limits = NO_LIMITS, code: Path | None = None,
           program: str | None = None) -> str:
    """Put the bundle at ``upload`` into the empty directory ``dest``; returns its kind.
    ``code``/``program``: see ``add_code``."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        fmt = detect_format(upload)
        if fmt == "pickle":
            limits.check_tree(upload)
            shutil.move(str(upload), dest / rb.PICKLE_FILE)
        else:
            extract_archive(upload, dest, limits)
            _hoist_single_dir(dest)
        add_code(dest, code, program, limits)
        kind = check(dest, program)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return kind


def extract_archive(archive: Path, dest: Path, limits: Limits = NO_LIMITS) -> None:
    """Extract a (gzipped) tar as a stream, each member checked before it is written: only
    regular files and directories whose names stay inside ``dest`` (rather than trusting the
    ``data`` extraction filter alone: some Python releases let crafted links through it), and
    no more bytes or entries than ``limits`` allow.  A refusal leaves what was written for the
    caller to remove."""
    try:
        with _tar_stream(archive) as tar:
            for m in _checked_members(tar, dest.resolve(), limits):
                try:
                    tar.extract(m, dest, filter="data")
                except TypeError:       # a Python without extraction filters: the checks above stand alone
                    tar.extract(m, dest)
    except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError) as exc:
        raise BundleRejected(f"cannot unpack the model archive: {exc}") from None


def scan_archive(archive: Path, limits: Limits = NO_LIMITS) -> None:
    """Read a (gzipped) tar to its end, each member checked as ``extract_archive`` would, writing
    nothing: a truncated or corrupt archive (its gzip checksum included) is refused."""
    try:
        with _tar_stream(archive) as tar:
            for m in _checked_members(tar, Path("/bundle"), limits):
                if m.isfile():
                    fh = tar.extractfile(m)
                    while fh.read(1 << 20):
                        pass
    except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError) as exc:
        raise BundleRejected(f"the model archive is truncated or corrupt: {exc}") from None


@contextlib.contextmanager
def _tar_stream(archive: Path):
    """A tar read as a stream, through ``gzip`` when compressed: unlike ``tarfile``'s own
    decompression, it checks the gzip trailer (CRC and length), read here to the very end,
    so an archive cut short anywhere is refused rather than read as a shorter one."""
    with open(archive, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        src = gzip.GzipFile(fileobj=raw) if gz else raw
        with tarfile.open(fileobj=src, mode="r|", tarinfo=_BoundedHeader) as tar:
            yield tar
        trailing = 0                         # past the tar's end (padding): gzip checks its trailer here
        while chunk := src.read(1 << 20):
            trailing += len(chunk)
            if trailing > MAX_TRAILING:
                raise BundleRejected(f"the model archive has more than {MAX_TRAILING >> 20} MB after the end of "
                                     "its tar")


def _checked_members(tar: tarfile.TarFile, root: Path, limits: Limits):
    size = entries = 0
    dirs: set[str] = set()
    for m in tar:
        name = m.name
        parts = Path(name).parts
        if len(name) > MAX_NAME or len(parts) > MAX_DEPTH:
            raise BundleRejected(f"the model archive has an entry name over {MAX_NAME} characters or "
                                 f"{MAX_DEPTH} directories deep: {name[:200]!r}")
        if name.startswith(("/", "\\")) or ".." in parts or (len(parts) and ":" in parts[0]):
            raise BundleRejected(f"the model archive has an entry outside the bundle: {name!r}")
        if not (m.isfile() or m.isdir()):
            raise BundleRejected(f"the model archive has a link or special file, which bundles may not: {name!r}")
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise BundleRejected(f"the model archive has an entry outside the bundle: {name!r}")
        entries += 1
        size += m.size if m.isfile() else 0
        for i in range(1, len(parts)):         # the directories a member makes count as entries too
            prefix = "/".join(parts[:i])
            if prefix not in dirs:
                dirs.add(prefix)
                entries += 1
        if entries > limits.max_entries:
            raise limits.too_many("the model archive")
        if limits.max_bytes is not None and size > limits.max_bytes:
            raise limits.too_big("the model archive")
        yield m


def verify_model_data(path: Path, limits: Limits, raw_ok: bool = False) -> None:
    """What can be checked of model data before an endpoint uses it, without running it: an
    archive is read to its end, a pickle parsed; a directory is checked when it is installed.
    ``raw_ok``: data for a container that brings its own server may be any file."""
    if path.is_dir():
        return
    try:
        fmt = detect_format(path)
    except BundleRejected:
        if raw_ok:
            return
        raise
    if fmt == "pickle":
        limits.check_tree(path)
        _check_pickle(path)
    else:
        scan_archive(path, limits)


MAX_NAME = 4096               # PATH_MAX: no member name needs more
MAX_DEPTH = 64
MAX_HEADER = 64 << 10         # a GNU long name or a PAX header larger than this is refused unread
MAX_TRAILING = 1 << 20        # after a tar's end-of-archive blocks: record padding, not a gzip bomb


class _BoundedHeader(tarfile.TarInfo):
    """A tar header whose extended parts (GNU long names, PAX records) are refused before
    ``tarfile`` reads them into memory: a 400 KB archive can announce a 400 MB "name"."""

    def _proc_member(self, tarfile_):
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE) and self.size > MAX_HEADER:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes")
        return super()._proc_member(tarfile_)


def install(source: Path, dest: Path, limits: Limits = NO_LIMITS, code: Path | None = None,
            program: str | None = None) -> str:
    """Like ``unpack`` but leaves ``source`` alone: a model directory is copied, a
    ``model.tar.gz`` or ``.pkl`` file unpacked from a copy.  Returns the bundle's kind."""
    source = Path(source)
    if not source.exists():
        raise BundleRejected(f"model data {source} does not exist")
    limits.check_tree(source)
    if source.is_dir():
        try:
            copy_tree(source, dest)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleRejected(f"cannot copy model directory {source}: {exc}") from None
        try:
            add_code(dest, code, program, limits)
            return check(dest, program)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.parent / f".{dest.name}.upload"
    shutil.copyfile(source, staged)
    try:
        return unpack(staged, dest, limits, code, program)
    finally:
        staged.unlink(missing_ok=True)


def install_shared_code(dest: Path, code: Path | None, program: str | None, limits: Limits = NO_LIMITS) -> str:
    """A multi-model variant's bundle: no model, only the code its models share (the SDK's
    sourcedir.tar.gz, SAGEMAKER_SUBMIT_DIRECTORY), which each model gets in its code/."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        add_code(dest, code, program, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return rb.MULTI_MODEL


def copy_tree(source: Path, dest: Path, dirs_exist_ok: bool = False) -> None:
    """Copy a model directory that holds no symbolic links: a link could point anywhere on the
    host (the state dir's keys included), and the copy would carry what it points to into a
    bundle a model reads.  Links are copied as links, then refused, so nothing is followed."""
    shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=dirs_exist_ok)
    links = [p for p in [dest, *dest.rglob("*")] if p.is_symlink()]
    if links:
        shutil.rmtree(dest, ignore_errors=True)
        raise BundleRejected(f"model directory {source} holds a symbolic link ({links[0].relative_to(dest)}); "
                             "copy the files themselves into it")


def make_readable(dest: Path) -> None:
    """Sandboxes run as uids of their own and see the bundle read-only: let any of them
    read it (directories 755, files at least 444), whatever modes the archive carried."""
    for path in [dest, *dest.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o7777
        path.chmod(0o755 if path.is_dir() else (mode & 0o755) | 0o444)


def install_artifacts(source: Path | None, dest: Path, limits: Limits = NO_LIMITS) -> str:
    """Model data for a container that brings its own server: a directory is copied and a
    ``model.tar.gz`` unpacked as they are (nothing is checked: the image knows its files)."""
    dest.mkdir(parents=True, exist_ok=False)
    if source is None:
        return "container"
    source = Path(source)
    try:
        limits.check_tree(source)
        if source.is_dir():
            copy_tree(source, dest, dirs_exist_ok=True)
        elif tarfile.is_tarfile(source):
            extract_archive(source, dest, limits)
        else:
            shutil.copy2(source, dest / source.name)
    except (OSError, tarfile.TarError, shutil.Error) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BundleRejected(f"cannot install model data {source}: {exc}") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return "container"


def _hoist_single_dir(dest: Path) -> None:
    """An archive of ``model/`` rather than of its contents: use the inner directory."""
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name != "code":
        inner = entries[0]
        for child in list(inner.iterdir()):
            shutil.move(str(child), dest / child.name)
        inner.rmdir()


def add_code(dest: Path, code: Path | None, program: str | None, limits: Limits = NO_LIMITS) -> None:
    """The SageMaker framework containers' code convention, as the SageMaker Python SDK uses it:
    ``SAGEMAKER_SUBMIT_DIRECTORY`` (here ``code``: a sourcedir.tar.gz or a directory, already
    local) is unpacked into ``code/``, and ``SAGEMAKER_PROGRAM`` names the entry script there.
    An entry script other than inference.py gets a generated ``code/inference.py`` that takes its
    handlers from it, so the sandbox side knows one name."""
    if code is not None:
        target = dest / "code"
        target.mkdir(exist_ok=True)
        if Path(code).is_dir():
            limits.check_tree(Path(code))
            copy_tree(Path(code), target, dirs_exist_ok=True)
        else:
            extract_archive(Path(code), target, limits)
    if not program or program == rb.ENTRY_SCRIPT or not (dest / "code").is_dir():
        return                             # (a pickled callable has no entry script to name)
    script = dest / "code" / program
    if "/" in program or "\\" in program or not program.endswith(".py") or not program[:-3].isidentifier():
        raise BundleRejected(f"SAGEMAKER_PROGRAM must name a Python file in code/ (like serve.py), not {program!r}")
    if not script.is_file() or script.is_symlink():
        raise BundleRejected(f"SAGEMAKER_PROGRAM names {program}, which is not in the model's code/ directory")
    shim = dest / "code" / rb.ENTRY_SCRIPT
    if shim.exists():
        raise BundleRejected(f"SAGEMAKER_PROGRAM names {program}, but code/{rb.ENTRY_SCRIPT} exists too; "
                             f"slimserve would not know which to run: remove one")
    shim.write_text(rb.entry_shim(program[:-3]))


def check(bundle_dir: Path, program: str | None = None) -> str:
    script = bundle_dir / "code" / (program or rb.ENTRY_SCRIPT)
    if script.exists():
        _check_inference(script)
        try:
            rb.check_requirements(bundle_dir)
        except rb.BundleError as exc:
            raise BundleRejected(str(exc)) from None
        return rb.SAGEMAKER
    pkl = bundle_dir / rb.PICKLE_FILE
    if pkl.exists():
        _check_pickle(pkl)
        return rb.PICKLE
    raise BundleRejected(
        "the archive has neither code/inference.py (SageMaker layout) nor model.pkl (a pickled callable)"
    )


def _check_inference(script: Path) -> None:
    if script.stat().st_size > MAX_SCRIPT_BYTES:
        raise BundleRejected(f"code/{script.name} is larger than {MAX_SCRIPT_BYTES >> 20} MB; put data in files "
                             "beside the code, not in it")
    try:
        tree = ast.parse(script.read_bytes(), filename=f"code/{script.name}")
    except SyntaxError as exc:
        raise BundleRejected(f"code/{script.name} line {exc.lineno}: {exc.msg}") from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    if "model_fn" not in names:
        raise BundleRejected(f"code/{script.name} does not define model_fn(model_dir)")


MAX_PICKLE_LINE = 64 << 10       # a text opcode's argument (a global's name, a protocol-0 number)
MAX_SCRIPT_BYTES = 4 << 20       # an entry script larger than this is not parsed in the gateway


def _check_pickle(path: Path) -> None:
    """The pickle stream is well formed, read opcode by opcode without building its values: a
    counted argument (a large array's bytes) is skipped, a text one is capped, so neither a 6 GB
    model nor a crafted stream costs the gateway more than a line of memory."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            lines = _BoundedLines(fh)
            while True:
                code = fh.read(1)
                if not code:
                    raise BundleRejected("it ends before its STOP opcode")
                op = pickletools.code2op.get(code.decode("latin-1"))
                if op is None:
                    raise BundleRejected(f"an unknown opcode {code!r} at byte {fh.tell() - 1}")
                if op.arg is not None:
                    _skip_argument(fh, lines, op.arg, size)
                if op.name == "STOP":
                    return
    except BundleRejected as exc:
        raise BundleRejected(f"model.pkl is not a valid pickle: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure means a broken file
        raise BundleRejected(f"model.pkl is not a valid pickle: {exc}") from None


def _skip_argument(fh, lines, arg, size: int) -> None:
    n = arg.n
    if n == pickletools.UP_TO_NEWLINE:
        arg.reader(lines)                                   # one or two capped lines
        return
    if n >= 0:
        count = n
    else:
        width, signed = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                         pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
                         pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}[n]
        raw = fh.read(width)
        if len(raw) != width:
            raise BundleRejected("it ends inside an opcode's argument")
        count = int.from_bytes(raw, "little", signed=signed)
        if count < 0:
            raise BundleRejected(f"a negative length {count} at byte {fh.tell() - width}")
    if fh.tell() + count > size:
        raise BundleRejected(f"it is truncated: an argument of {count} bytes at byte {fh.tell()} runs past "
                             f"its end ({size} bytes)")
    fh.seek(count, 1)


class _BoundedLines:
    """The file as pickletools' line readers see it: a line longer than MAX_PICKLE_LINE is refused."""

    def __init__(self, fh):
        self.fh = fh

    def readline(self) -> bytes:
        line = self.fh.readline(MAX_PICKLE_LINE + 1)
        if len(line) > MAX_PICKLE_LINE:
            raise BundleRejected(f"a text argument longer than {MAX_PICKLE_LINE} bytes")
        return line

    def read(self, n: int) -> bytes:
        return self.fh.read(n)


_checks = None


async def off_loop(fn, *args, **kwargs):
    """Run bundle work (unpacking, checking) in its own two threads, so a slow archive cannot take
    the event loop's shared pool, which cold starts and S3 calls use."""
    global _checks
    import asyncio
    import functools
    from concurrent.futures import ThreadPoolExecutor

    if _checks is None:
        _checks = ThreadPoolExecutor(2, thread_name_prefix="bundle")
    return await asyncio.get_running_loop().run_in_executor(_checks, functools.partial(fn, *args, **kwargs))


def pack_directory(src: Path, out: Path) -> Path:
    """Client side: a model directory as model.tar.gz with its contents at the top."""
    with tarfile.open(out, "w:gz") as tar:
        for child in sorted(Path(src).iterdir()):
            tar.add(child, arcname=child.name)
    return out
