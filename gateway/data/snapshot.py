"""A private copy of local model data, taken so that nobody who can write under a model root
can change what the gateway reads after it was checked.

Checking a path and then reading it by name races with anyone who can swap a directory for a
symbolic link in between (``renameat2(RENAME_EXCHANGE)`` wins such a race in a few tries).  So
the data is walked from the model root's own descriptor, one component at a time with
``O_NOFOLLOW``, and every file is copied from a descriptor whose type was checked after it was
opened; a symbolic link, a device or a FIFO anywhere is refused.  The copy, in the gateway's
0700 state dir, is what every later step (the archive check, the install) reads.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.errors import BundleRejected

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC     # a FIFO swapped in cannot block


class Budget:
    """Bytes and entries the copy may still take (the bundle limits), checked as it goes."""

    def __init__(self, max_bytes: int | None, max_entries: int):
        self.bytes, self.entries = max_bytes, max_entries

    def take(self, nbytes: int, what: str) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise BundleRejected(f"model data {what} has too many files and directories")
        if self.bytes is not None:
            self.bytes -= nbytes
            if self.bytes < 0:
                raise BundleRejected(f"model data {what} is larger than a model may be")


def snapshot(root: Path, real: Path, dest_dir: Path, budget: Budget) -> Path:
    """Copy ``real`` (a file or directory at or below ``root``) into the new ``dest_dir``, walking
    from ``root`` without following any link; returns the copy's path."""
    rel = real.relative_to(root)
    dest_dir.mkdir(parents=True)
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in rel.parts[:-1]:
            fd = _step(fd, part, DIR_FLAGS, real)
        name = rel.parts[-1] if rel.parts else None
        target = dest_dir / (name or "model")
        if name is None:
            _copy_dir(os.dup(fd), target, budget, str(real))
            return target
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            raise BundleRejected(f"cannot read model data {real}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            _copy_dir(os.open(name, DIR_FLAGS, dir_fd=fd), target, budget, str(real))
        elif stat.S_ISREG(st.st_mode):
            _copy_file(fd, name, target, budget, str(real))
        else:
            raise BundleRejected(f"model data {real} is not a regular file or directory (a link, a device?)")
        return target
    except OSError as exc:
        raise BundleRejected(f"cannot read model data {real}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _step(fd: int, part: str, flags: int, real: Path) -> int:
    """The directory ``part`` of ``fd``, opened without following a link; ``fd`` is closed once
    it is (on a refusal it stays the caller's to close)."""
    try:
        nfd = os.open(part, flags, dir_fd=fd)
    except OSError as exc:
        raise BundleRejected(f"cannot read model data {real}: {part!r} is not a directory that may be "
                             f"followed ({exc.strerror})") from None
    os.close(fd)
    return nfd


def _copy_dir(fd: int, target: Path, budget: Budget, what: str) -> None:
    try:
        target.mkdir()
        budget.take(0, what)
        with os.scandir(fd) as entries:
            names = [e.name for e in entries]
        for name in names:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise BundleRejected(f"model directory {what} holds a symbolic link ({name}); copy the files "
                                     "themselves into it")
            if stat.S_ISDIR(st.st_mode):
                _copy_dir(os.open(name, DIR_FLAGS, dir_fd=fd), target / name, budget, what)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(fd, name, target / name, budget, what)
            else:
                raise BundleRejected(f"model directory {what} holds {name}, which is not a regular file")
    finally:
        os.close(fd)


def _copy_file(dir_fd: int, name: str, target: Path, budget: Budget, what: str) -> None:
    ffd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        st = os.fstat(ffd)
        if not stat.S_ISREG(st.st_mode):               # swapped after the stat: refused, not read
            raise BundleRejected(f"model data {what}: {name} changed while it was read")
        budget.take(st.st_size, what)
        left = st.st_size
        with open(target, "xb") as dst:
            while True:                                # what it held when checked; a file that grows is refused
                chunk = os.read(ffd, min(1 << 20, left + 1))
                if not chunk:
                    break
                left -= len(chunk)
                if left < 0:
                    raise BundleRejected(f"model data {what}: {name} grew while it was read")
                dst.write(chunk)
    finally:
        os.close(ffd)
