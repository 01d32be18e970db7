"""Memory cgroups for sandboxes, on cgroup v2 or v1, detected at start.

Each sandbox gets its own cgroup whose memory limit is its tier; swap is
capped to zero where the kernel allows it, so a sandbox that allocates past its
tier is OOM-killed by the kernel rather than swapped.  Nothing outside this
module writes cgroup files.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
BASE_NAME = "slimserve"


@dataclass(frozen=True)
class CgroupSupport:
    version: str | None          # "v2", "v1" or None
    base: Path | None            # the directory under which sandbox cgroups are made
    reason: str                  # why it is missing, or how it was found


def _own_path(controller_line_match) -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hid, controllers, path = line.split(":", 2)
            if controller_line_match(hid, controllers):
                return path
    except OSError:
        pass
    return "/"


def _try_base(parent: Path, instance: str, enable_v2: bool) -> Path:
    top = parent / BASE_NAME
    base = top / instance
    base.mkdir(parents=True, exist_ok=True)
    if enable_v2:
        for d in (parent, top, base):
            ctl = d / "cgroup.subtree_control"
            if "memory" not in ctl.read_text().split():
                ctl.write_text("+memory")
    probe = base / f"probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        limit = probe / ("memory.max" if enable_v2 else "memory.limit_in_bytes")
        limit.write_text(str(64 << 20))
    finally:
        probe.rmdir()
    return base


def detect(mode: str = "auto", instance: str = "default") -> CgroupSupport:
    """Find a place where this process may make memory-capped cgroups.

    Sandbox cgroups live under ``<parent>/slimserve/<instance>``, so two gateways
    on one machine (each with its own state dir) never sweep each other's.

    ``mode`` is ``auto``, ``v2``, ``v1`` or ``none`` (the last turns cgroups off,
    for machines where the operator does not want them touched).
    """
    if mode == "none":
        return CgroupSupport(None, None, "cgroups disabled by configuration")
    errors = []
    if mode in ("auto", "v2") and (ROOT / "cgroup.controllers").exists():
        if "memory" not in (ROOT / "cgroup.controllers").read_text().split():
            errors.append("cgroup v2 is mounted but its memory controller is not available")
        else:
            own = _own_path(lambda hid, c: hid == "0")
            for parent in dict.fromkeys([ROOT / own.lstrip("/"), ROOT]):
                try:
                    return CgroupSupport("v2", _try_base(parent, instance, True), f"cgroup v2 at {parent}")
                except OSError as exc:
                    errors.append(f"v2 {parent}: {exc.strerror or exc}")
    v1 = ROOT / "memory"
    if mode in ("auto", "v1") and (v1 / "memory.limit_in_bytes").exists():
        own = _own_path(lambda hid, c: "memory" in c.split(","))
        for parent in dict.fromkeys([v1 / own.lstrip("/"), v1]):
            try:
                return CgroupSupport("v1", _try_base(parent, instance, False), f"cgroup v1 at {parent}")
            except OSError as exc:
                errors.append(f"v1 {parent}: {exc.strerror or exc}")
    if not errors:
        errors.append("no cgroup memory controller is mounted under /sys/fs/cgroup")
    return CgroupSupport(None, None, "; ".join(errors))


def set_memory_limit(path: Path, version: str, limit_bytes: int) -> None:
    """Cap a cgroup's memory at ``limit_bytes`` with no swap.  Writing a limit is
    cheap; it is moving a process *into* a cgroup that can stall for an RCU grace
    period, which is why zygote stems join theirs ahead of demand."""
    path = Path(path)
    if version == "v2":
        (path / "memory.max").write_text(str(limit_bytes))
        _write_optional(path / "memory.swap.max", "0")
        _write_optional(path / "memory.oom.group", "1")
        return
    # v1 insists memsw >= limit at every step: lower the limit first, or raise memsw first.
    limit, memsw = path / "memory.limit_in_bytes", path / "memory.memsw.limit_in_bytes"
    current = int(limit.read_text())
    order = [(limit, limit_bytes), (memsw, limit_bytes)] if limit_bytes <= current else \
        [(memsw, limit_bytes), (limit, limit_bytes)]
    for fname, value in order:
        if fname is limit:
            fname.write_text(str(value))
        else:
            _write_optional(fname, str(value))
    _write_optional(path / "memory.swappiness", "0")


def make_and_join(base: Path, version: str, name: str) -> Path:
    """Create a cgroup (no limit yet) and move this process into it."""
    path = Path(base) / name
    path.mkdir(exist_ok=True)
    (path / "cgroup.procs").write_text(str(os.getpid()))
    return path


def _write_optional(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass


class Cgroup:
    """One sandbox's cgroup.  ``remove`` is idempotent."""

    def __init__(self, support: CgroupSupport, name: str, limit_bytes: int, create: bool = True):
        assert support.base is not None
        self.version = support.version
        self.path = support.base / name
        self.limit_bytes = limit_bytes
        if create:
            self.path.mkdir(exist_ok=True)
            set_memory_limit(self.path, self.version, limit_bytes)

    @classmethod
    def adopt(cls, support: CgroupSupport, name: str, limit_bytes: int) -> "Cgroup":
        """A cgroup that a sandbox made and capped itself (a zygote stem's)."""
        return cls(support, name, limit_bytes, create=False)

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def oom_kills(self) -> int:
        """How many processes the kernel killed here for exceeding the limit."""
        fname = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            for line in (self.path / fname).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        if self.version == "v1":
            try:  # kernels before 4.13 have no oom_kill counter; a hit limit is the best sign
                return int((self.path / "memory.failcnt").read_text()) > 0
            except OSError:
                return 0
        return 0

    def usage_bytes(self) -> int:
        fname = "memory.current" if self.version == "v2" else "memory.usage_in_bytes"
        try:
            return int((self.path / fname).read_text())
        except (OSError, ValueError):
            return 0

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, wait_s: float = 2.0) -> None:
        if not self.path.exists():
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                self.kill_all()
                time.sleep(0.01)


def sweep_orphans(support: CgroupSupport) -> int:
    """Remove sandbox cgroups that an earlier gateway run left behind."""
    if support.base is None:
        return 0
    removed = 0
    for child in support.base.iterdir():
        if child.is_dir():
            try:
                for pid in (child / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                for _ in range(100):
                    try:
                        child.rmdir()
                        removed += 1
                        break
                    except OSError:
                        time.sleep(0.01)
            except OSError:
                pass
    return removed


def remove_empty(support: CgroupSupport, prefix: str) -> int:
    """Remove this gateway's cgroups named ``prefix*`` that no process is in any more
    (the cgroups of zygote stems that died before they were given a sandbox)."""
    if support.base is None:
        return 0
    removed = 0
    for child in support.base.glob(prefix + "*"):
        try:
            if not (child / "cgroup.procs").read_text().strip():
                child.rmdir()
                removed += 1
        except OSError:
            pass
    return removed


def remove_base(support: CgroupSupport) -> None:
    """At shutdown: remove this gateway's (now empty) cgroup subtree."""
    if support.base is None:
        return
    remove_empty(support, "")
    try:
        support.base.rmdir()
    except OSError:
        pass
