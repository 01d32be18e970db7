"""Process-level protections a sandbox applies to itself before loading user code.

Each function returns a short string naming what is now in force, or raises
``OSError`` saying why it could not be done; the worker reports the outcome to
the gateway so ``describe`` and ``doctor`` can show it.
"""
from __future__ import annotations

import os
import resource
import signal

from runtime.process import jail  # the one ctypes wrapper of prctl and unshare

PR_SET_PDEATHSIG = 1

# Environment that hides accelerators and pins math libraries to one thread (a zygote must stay
# single-threaded; a sandbox's pools are resized to its CPU quota when it gets its model), and
# makes idle pool threads sleep instead of spinning: a thread that spins after each BLAS call
# (OpenBLAS's default ~0.1 s, libgomp's too) burns its sandbox's own CPU quota for nothing.
SANDBOX_ENV = {
    "CUDA_VISIBLE_DEVICES": "",
    "HIP_VISIBLE_DEVICES": "",
    "ROCR_VISIBLE_DEVICES": "",
    "NVIDIA_VISIBLE_DEVICES": "none",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "OPENBLAS_THREAD_TIMEOUT": "4",       # 2^4 cycles of spinning, OpenBLAS's least
    "OMP_WAIT_POLICY": "PASSIVE",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}

def parent_pid() -> int:
    """The parent's pid as /proc sees it: also right in the first process of a PID namespace
    of its own, for which ``os.getppid()`` is 0 (its parent is outside)."""
    try:
        with open("/proc/self/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return os.getppid()


def die_with_parent(parent: int | None = None) -> str:
    """SIGKILL this process when its parent (the gateway) dies, so no sandbox outlives it."""
    parent = parent_pid() if parent is None else parent
    jail.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid() != parent:  # the gateway died before prctl took effect
        os._exit(1)
    return "pdeathsig"


def join_cgroup(procs_file: str) -> str:
    with open(procs_file, "w") as fh:
        fh.write(str(os.getpid()))
    return "cgroup"


def leave_network() -> str:
    """Move into a fresh network namespace: only a loopback, and it is down."""
    jail.unshare(jail.CLONE_NEWNET)
    return "netns"


def cap_address_space(limit_bytes: int) -> str:
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return "rlimit_as"


def close_inherited(keep: set[int]) -> None:
    """Close every file descriptor but stdin, stdout, stderr and ``keep``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
