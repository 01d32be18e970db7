"""``slimserve image build``: the docker backend's runtime image, made from this machine.

No registry is needed: the root filesystem is assembled from the Python that
runs slimserve (its interpreter and standard library, the packages installed
next to slimserve, the ``runtime`` package) plus the system libraries they link
against (found with ``ldd``), written as a tar and loaded with ``docker import``.
The image tag is a hash of what went in, so a build is skipped when nothing
changed.  Users with a registry can instead build FROM an official Python image
(see the README).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

from runtime.process import isolation

REPO = "slimserve-runtime"
APP_DIR = "/opt/slimserve/app"
SITE_DIR = "/opt/slimserve/site-packages"
SANDBOX_UID = 10001
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Packages the gateway or the tests use that no model needs: left out of the sandbox image.
SKIP_PACKAGES = re.compile(r"^(boto3|botocore|s3transfer|sagemaker.*|pip|setuptools|_pytest|pytest.*|docker|"
                           r"aiohttp|uvloop|prometheus_client|pygments|__editable__.*|_distutils_hack|"
                           r"distutils-precedence\.pth|playwright|fastapi|starlette|uvicorn)($|[-_.])")
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "__pycache__"}


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _fingerprint() -> str:
    """What the image is made of: interpreter, installed packages, the runtime sources."""
    h = hashlib.sha256(sys.version.encode())
    for entry in sorted(os.listdir(_site_packages())):
        h.update(entry.encode())
    runtime = PROJECT_ROOT / "runtime"
    for src in sorted(runtime.rglob("*.py")):         # every subpackage: the image holds all of them
        h.update(str(src.relative_to(runtime)).encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:12]


def image_tag() -> str:
    return f"{REPO}:{_fingerprint()}"


def _walk(root: Path, skip_top: set[str] = frozenset(), skip_re=None):
    for entry in sorted(root.iterdir()):
        if entry.name in skip_top or (skip_re is not None and skip_re.match(entry.name)):
            continue
        yield entry


def _shared_objects(paths: list[Path]) -> set[str]:
    """System libraries the interpreter and the packages' extension modules link against."""
    targets = [str(p) for p in paths]
    libs: set[str] = set()
    for i in range(0, len(targets), 200):
        out = subprocess.run(["ldd", *targets[i:i + 200]], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+\.so[\w.]*)\s+\(0x", line) or re.search(r"^\s*(/\S+)\s+\(0x", line)
            if m:
                libs.add(m.group(1))
    keep = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")
    return {lib for lib in libs if lib.startswith(keep)}


def _add_file(tar: tarfile.TarFile, src: str, arcname: str, seen: set[str]) -> None:
    if arcname in seen:
        return
    seen.add(arcname)
    tar.add(src, arcname=arcname, recursive=False)


def _add_tree(tar: tarfile.TarFile, src: Path, dest: str, seen: set[str], skip_top=frozenset(),
              skip_re=None) -> list[Path]:
    """Add a directory tree; returns the ELF shared objects in it (for ldd)."""
    sos = []
    _add_dirs(tar, dest, seen)
    for entry in _walk(src, skip_top, skip_re):
        arc = f"{dest}/{entry.name}"
        if entry.is_dir() and not entry.is_symlink():
            for root, dirs, files in os.walk(entry):
                dirs[:] = [d for d in dirs if d not in ("tests", "test")] if "site-packages" in str(src) else dirs
                rel = os.path.relpath(root, src)
                _add_file(tar, root, f"{dest}/{rel}", seen)
                for f in files:
                    p = os.path.join(root, f)
                    _add_file(tar, p, f"{dest}/{rel}/{f}", seen)
                    if ".so" in f and not os.path.islink(p):
                        sos.append(Path(p))
        else:
            _add_file(tar, str(entry), arc, seen)
            if ".so" in entry.name and not entry.is_symlink():
                sos.append(entry)
    return sos


def _add_path(tar: tarfile.TarFile, path: str, seen: set[str], depth: int = 0) -> None:
    """A file by the path programs use, following each symlink on the way (the loader's
    /lib64/ld-linux... -> /lib/x86_64-linux-gnu/... chains), with real parent directories."""
    parent = os.path.realpath(os.path.dirname(path))
    entry = os.path.join(parent, os.path.basename(path))
    _add_dirs(tar, parent.lstrip("/"), seen)
    _add_file(tar, entry, entry.lstrip("/"), seen)
    if os.path.islink(entry) and depth < 8:
        target = os.readlink(entry)
        _add_path(tar, target if target.startswith("/") else os.path.join(parent, target), seen, depth + 1)


def _add_dirs(tar: tarfile.TarFile, path: str, seen: set[str], mode: int = 0o755) -> None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        arc = "/".join(parts[:i])
        if arc in seen:
            continue
        seen.add(arc)
        info = tarfile.TarInfo(arc)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
        tar.addfile(info)


def _add_text(tar: tarfile.TarFile, arcname: str, text: str, seen: set[str], mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(arcname.strip("/"))
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    seen.add(info.name)
    tar.addfile(info, io.BytesIO(data))


def write_rootfs(out: Path) -> dict:
    """The runtime image's root filesystem as a tar at ``out``; returns what went in."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    seen: set[str] = set()
    sos: list[Path] = []
    with tarfile.open(out, "w", dereference=False) as tar:
        for link in ("lib64", "lib", "bin", "sbin"):        # usr-merged systems: the top-level links first
            if os.path.islink(f"/{link}"):
                _add_file(tar, f"/{link}", link, seen)
        for d in ("tmp", "opt/ml/model", "run/slimserve", "proc", "sys", "dev", "etc", "home/slimserve"):
            _add_dirs(tar, d, seen, 0o1777 if d == "tmp" else 0o755)
        exe = Path(os.path.realpath(sys.executable))
        _add_dirs(tar, str(exe.parent).lstrip("/"), seen)
        _add_file(tar, str(exe), str(exe).lstrip("/"), seen)
        sos.append(exe)
        for lib in sorted((base / "lib").glob("libpython*")):
            _add_file(tar, str(lib), str(lib).lstrip("/"), seen)
        sos += _add_tree(tar, base / "lib" / version, str(base / "lib" / version).lstrip("/"), seen,
                         skip_top=SKIP_STDLIB)
        sos += _add_tree(tar, _site_packages(), SITE_DIR.lstrip("/"), seen, skip_re=SKIP_PACKAGES)
        _add_tree(tar, PROJECT_ROOT / "runtime", f"{APP_DIR}/runtime".lstrip("/"), seen, skip_top={"__pycache__"})
        libs = _shared_objects(sos) | _shared_objects([Path("/bin/sh")])
        for lib in sorted(libs):
            _add_path(tar, lib, seen)
        if os.path.exists("/etc/ld.so.cache"):
            _add_file(tar, "/etc/ld.so.cache", "etc/ld.so.cache", seen)
        for sh in ("/usr/bin/sh", "/usr/bin/dash"):
            if os.path.exists(sh):
                _add_dirs(tar, "usr/bin", seen)
                _add_file(tar, sh, sh.lstrip("/"), seen)
        _add_text(tar, "etc/passwd", f"root:x:0:0:root:/root:/bin/sh\nslimserve:x:{SANDBOX_UID}:{SANDBOX_UID}:"
                                     f"sandbox:/home/slimserve:/bin/sh\n", seen)
        _add_text(tar, "etc/group", f"root:x:0:\nslimserve:x:{SANDBOX_UID}:\n", seen)
        _add_text(tar, "etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n", seen)
        _add_text(tar, "etc/hosts", "127.0.0.1 localhost\n", seen)
    return {"files": len(seen), "libraries": len(libs), "python": str(exe)}


def docker_changes() -> list[str]:
    exe = os.path.realpath(sys.executable)
    env = dict(isolation.SANDBOX_ENV, PYTHONPATH=f"{APP_DIR}:{SITE_DIR}", PYTHONDONTWRITEBYTECODE="1",
               PATH=f"{Path(exe).parent}:/usr/bin:/bin", HOME="/home/slimserve", SLIMSERVE_PYTHON=exe)
    return ([f"ENV {k}={v}" for k, v in env.items()]
            + [f"USER {SANDBOX_UID}:{SANDBOX_UID}", "WORKDIR /tmp",
               f'CMD ["{exe}", "-m", "runtime.worker", "--help"]',
               "LABEL slimserve.runtime=1"])


def build(client, force: bool = False, log=print) -> str:
    """Build (or find) the runtime image; returns its tag."""
    import docker.errors

    tag = image_tag()
    if not force:
        try:
            client.images.get(tag)
            log(f"{tag} is up to date")
            return tag
        except docker.errors.ImageNotFound:
            pass
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slimserve-image-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        facts = write_rootfs(rootfs)
        size = rootfs.stat().st_size
        log(f"root filesystem: {facts['files']:,} entries, {facts['libraries']} system libraries, "
            f"{size / 1e6:,.0f} MB; importing ...")
        repo, _, version = tag.partition(":")
        client.api.import_image_from_file(str(rootfs), repository=repo, tag=version, changes=docker_changes())
    client.images.get(tag).tag(REPO, "latest")
    log(f"built {tag} in {time.perf_counter() - t0:.1f} s")
    return tag
