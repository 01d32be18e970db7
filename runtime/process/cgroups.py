"""Cgroups for sandboxes, on cgroup v2 or v1, detected at start.

Each sandbox gets its own cgroup whose memory limit is its tier; swap is
capped to zero where the kernel allows it, so a sandbox that allocates past its
tier is OOM-killed by the kernel rather than swapped.  Its ``pids.max`` bounds
processes and threads together, so a fork bomb fails inside its sandbox, and its
CPU quota (``cpu.max``, v1 ``cpu.cfs_quota_us``) is its tier's vCPUs.  On v1
every controller is a hierarchy of its own: a sandbox's cgroup is then one
directory per hierarchy (memory, pids, cpu) under the same name, joined together.
Nothing outside this module writes cgroup files.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
BASE_NAME = "slimserve"
CPU_PERIOD_US = 100_000      # the kernel's default CFS period: quotas are vCPUs x 100 ms


@dataclass(frozen=True)
class CgroupSupport:
    version: str | None          # "v2", "v1" or None
    base: Path | None            # the directory under which sandbox cgroups are made (memory)
    reason: str                  # why it is missing, or how it was found
    pids_base: Path | None = None    # where pids.max is set: ``base`` on v2, the pids hierarchy's on v1
    pids_reason: str = ""
    cpu_base: Path | None = None     # where the CPU quota is set: ``base`` on v2, the cpu hierarchy's on v1
    cpu_reason: str = ""

    def dirs(self, name: str) -> list[Path]:
        """Every directory of the cgroup ``name``: one per hierarchy it spans."""
        out = [] if self.base is None else [self.base / name]
        for extra in (self.pids_base, self.cpu_base):
            if extra is not None and extra != self.base:
                out.append(extra / name)
        return out

    def bases(self) -> list[Path]:
        return [d.parent for d in self.dirs("x")]

    def to_args(self) -> dict:
        """What a zygote needs to make and cap its stems' cgroups (it cannot detect: it is not alone)."""
        return {"version": self.version or "", "base": str(self.base or ""), "pids_base": str(self.pids_base or ""),
                "cpu_base": str(self.cpu_base or "")}

    @classmethod
    def from_args(cls, args: dict) -> "CgroupSupport":
        return cls(args.get("version") or None, Path(args["base"]) if args.get("base") else None, "given",
                   Path(args["pids_base"]) if args.get("pids_base") else None,
                   cpu_base=Path(args["cpu_base"]) if args.get("cpu_base") else None)


def _own_path(controller_line_match) -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hid, controllers, path = line.split(":", 2)
            if controller_line_match(hid, controllers):
                return path
    except OSError:
        pass
    return "/"


def _try_base(parent: Path, instance: str, enable_v2: bool, controller: str = "memory") -> Path:
    top = parent / BASE_NAME
    base = top / instance
    base.mkdir(parents=True, exist_ok=True)
    if enable_v2:
        for d in (parent, top, base):
            ctl = d / "cgroup.subtree_control"
            if controller not in ctl.read_text().split():
                ctl.write_text(f"+{controller}")
    probe = base / f"probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        if controller == "pids":
            (probe / "pids.max").write_text("64")
        elif controller == "cpu":
            if enable_v2:
                (probe / "cpu.max").write_text(f"50000 {CPU_PERIOD_US}")
            else:
                (probe / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (probe / "cpu.cfs_quota_us").write_text("50000")
        else:
            limit = probe / ("memory.max" if enable_v2 else "memory.limit_in_bytes")
            limit.write_text(str(64 << 20))
    finally:
        probe.rmdir()
    return base


def _with(support: CgroupSupport, instance: str, controller: str) -> CgroupSupport:
    """Find where this gateway may use ``controller`` (pids, cpu) beside the memory cgroup it
    found: the same tree on v2, the controller's own hierarchy on v1."""
    field = {"pids": ("pids_base", "pids_reason"), "cpu": ("cpu_base", "cpu_reason")}[controller]

    def found(base: Path | None, reason: str) -> CgroupSupport:
        return replace(support, **dict(zip(field, (base, reason), strict=True)))

    if support.version == "v2":
        try:
            _try_base(support.base.parent.parent, instance, True, controller)
            return found(support.base, f"{controller} controller of cgroup v2")
        except OSError as exc:
            return found(None, f"cgroup v2 {controller} controller unavailable: {exc.strerror or exc}")
    v1 = ROOT / controller
    if not (v1 / "cgroup.procs").exists():
        return found(None, f"no cgroup v1 {controller} hierarchy is mounted")
    own = _own_path(lambda hid, c: controller in c.split(","))
    errors = []
    for parent in dict.fromkeys([v1 / own.lstrip("/"), v1]):
        try:
            return found(_try_base(parent, instance, False, controller), f"cgroup v1 {controller} at {parent}")
        except OSError as exc:
            errors.append(f"v1 {controller} {parent}: {exc.strerror or exc}")
    return found(None, "; ".join(errors))


def _with_pids(support: CgroupSupport, instance: str) -> CgroupSupport:
    return _with(_with(support, instance, "pids"), instance, "cpu")


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
                    return _with_pids(CgroupSupport("v2", _try_base(parent, instance, True),
                                                    f"cgroup v2 at {parent}"), instance)
                except OSError as exc:
                    errors.append(f"v2 {parent}: {exc.strerror or exc}")
    v1 = ROOT / "memory"
    if mode in ("auto", "v1") and (v1 / "memory.limit_in_bytes").exists():
        own = _own_path(lambda hid, c: "memory" in c.split(","))
        for parent in dict.fromkeys([v1 / own.lstrip("/"), v1]):
            try:
                return _with_pids(CgroupSupport("v1", _try_base(parent, instance, False), f"cgroup v1 at {parent}"),
                                  instance)
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


def set_limits(support: CgroupSupport, name: str, limit_bytes: int, pids_max: int = 0,
               vcpus: float | None = None) -> None:
    """Cap the cgroup ``name``: memory at ``limit_bytes``, processes and threads at ``pids_max``
    (either 0: left as it is), CPU at ``vcpus`` (None: left as it is; 0: no quota)."""
    if limit_bytes:
        set_memory_limit(support.base / name, support.version, limit_bytes)
    if pids_max and support.pids_base is not None:
        (support.pids_base / name / "pids.max").write_text(str(pids_max))
    if vcpus is not None and support.cpu_base is not None:
        set_cpu_quota(support.cpu_base / name, support.version, vcpus)


def set_cpu_quota(path: Path, version: str, vcpus: float) -> None:
    """``vcpus`` CPUs' worth of time in every period of 100 ms (0: unlimited)."""
    quota = round(vcpus * CPU_PERIOD_US) if vcpus > 0 else -1
    if version == "v2":
        (path / "cpu.max").write_text(f"{quota if quota > 0 else 'max'} {CPU_PERIOD_US}")
        return
    (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
    (path / "cpu.cfs_quota_us").write_text(str(quota))


def make_and_join(support: CgroupSupport, name: str, pid: int | None = None) -> None:
    """Create the cgroup ``name`` in every hierarchy (no limit yet) and move ``pid`` (this
    process by default) into it."""
    for d in support.dirs(name):
        d.mkdir(exist_ok=True)
        (d / "cgroup.procs").write_text(str(os.getpid() if pid is None else pid))


def _delegate(d: Path, version: str | None) -> None:
    """Let a group's limits count its children: v2 children get the controllers only if the group
    enables them for its subtree; v1 memory counts children only with use_hierarchy (the default,
    and the only mode, on recent kernels)."""
    if version == "v2":
        have = (d / "cgroup.controllers").read_text().split()
        wanted = [c for c in ("memory", "pids", "cpu") if c in have]
        if wanted:
            (d / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    else:
        _write_optional(d / "memory.use_hierarchy", "1")


def _write_optional(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass


GROUP_PREFIX = "grp-"


def group_name(group: str) -> str:
    """The cgroup of a sandbox group (a transform job's instance); its sandboxes' go inside it."""
    return GROUP_PREFIX + group


def _check_name(name: str) -> None:
    """A sandbox's cgroup, or one inside a group's (``grp-X/name``): never a path out of the base."""
    parts = name.split("/")
    if len(parts) > 2 or (len(parts) == 2 and not parts[0].startswith(GROUP_PREFIX)) \
            or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad cgroup name {name!r}")


class Cgroup:
    """One sandbox's cgroup (a directory per hierarchy), or with ``parent`` a group's, whose
    limits cap the sandboxes made inside it together.  ``remove`` is idempotent."""

    def __init__(self, support: CgroupSupport, name: str, limit_bytes: int, pids_max: int = 0,
                 create: bool = True, exclusive: bool = False, vcpus: float | None = None, parent: bool = False):
        assert support.base is not None
        _check_name(name)
        self.support = support
        self.version = support.version
        self.name = name
        self.path = support.base / name
        self.limit_bytes = limit_bytes
        if create:                              # exclusive: fail rather than take over an existing cgroup
            for d in support.dirs(name):
                d.mkdir(exist_ok=not exclusive)
                if parent:
                    _delegate(d, support.version)
            set_limits(support, name, limit_bytes, pids_max, vcpus)

    @classmethod
    def adopt(cls, support: CgroupSupport, name: str, limit_bytes: int) -> "Cgroup":
        """A cgroup that a trusted stem made and capped itself (a base zygote stem's)."""
        return cls(support, name, limit_bytes, create=False)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.support.dirs(self.name)]

    def add(self, pid: int) -> None:
        """Move ``pid`` into this cgroup, in every hierarchy.  Can stall for an RCU grace
        period (milliseconds): call it off the event loop."""
        for f in self.procs_files:
            with open(f, "w") as fh:
                fh.write(str(pid))

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
        """SIGKILL every process in the cgroup, children that called setsid included (v2's
        cgroup.kill does it atomically; elsewhere each pid listed, repeated by ``remove``
        until the cgroup is empty, while pids.max keeps a fork bomb from outrunning it)."""
        _kill_dir(self.path)

    def remove(self, wait_s: float = 2.0) -> None:
        for d in self.support.dirs(self.name):
            _remove_dir(d, wait_s)


def _kill_dir(d: Path) -> None:
    try:
        (d / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    try:
        pids = (d / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _remove_dir(d: Path, wait_s: float) -> bool:
    """Kill what is in ``d`` until it can be removed; False if it still could not be."""
    deadline = time.monotonic() + wait_s
    try:                                   # a group's: its sandboxes' cgroups go first
        for child in [c for c in d.iterdir() if c.is_dir()]:
            _remove_dir(child, wait_s)
    except OSError:
        pass
    while True:
        try:
            d.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            _kill_dir(d)
            time.sleep(0.01)


def sweep_orphans(support: CgroupSupport) -> int:
    """Kill and remove the sandbox cgroups an earlier run of *this* gateway left behind (a
    ``kill -9``): its instance subtree only, never another gateway's on the same host."""
    removed = 0
    for base in support.bases():
        for child in base.iterdir():
            if child.is_dir() and _remove_dir(child, 1.0):
                removed += 1
    return removed


def remove_empty(support: CgroupSupport, prefix: str) -> int:
    """Remove this gateway's cgroups named ``prefix*`` that no process is in any more
    (the cgroups of zygote stems that died before they were given a sandbox)."""
    removed = 0
    for base in support.bases():
        for child in base.glob(prefix + "*"):
            try:
                if not (child / "cgroup.procs").read_text().strip():
                    child.rmdir()
                    removed += 1
            except OSError:
                pass
    return removed


def remove_base(support: CgroupSupport) -> None:
    """At shutdown: remove this gateway's (now empty) cgroup subtree."""
    remove_empty(support, "")
    for base in support.bases():
        try:
            base.rmdir()
        except OSError:
            pass
