"""What an untrusted process may see and do: a default-deny filesystem view, an
unprivileged identity and a syscall filter.

Every process that runs model code (a sandbox on any start path, a model zygote,
a deploy's trial load) passes through here *before* that code runs, while it is
still root and has loaded nothing but the runtime and installed libraries:

1. ``build_view``: a new mount and IPC namespace whose root is an empty tmpfs,
   given read-only binds of what Python needs (system directories, the
   interpreter's prefixes, the ``runtime`` package) and the bundle; a private
   ``/tmp`` and ``/dev/shm`` (tmpfs: memory, so what is written there counts
   against the tier); a ``/dev`` with null, zero, full, random and urandom; a
   ``/proc`` of its own with ``hidepid=invisible`` (processes of other uids are
   not there).  Nothing else of the host exists: not the state dir, the admin
   token, the ledger, other sandboxes, ``/run``, ``/var``, home directories or
   any Unix socket.  The root itself is remounted read-only.
2. ``drop_privileges``: a uid and gid of its own (never 0), no supplementary
   groups, an empty capability bounding set, ``no_new_privs``, not dumpable
   (so no process of the same uid can read its memory or ``/proc/<pid>/environ``).
3. ``load_filter``: a seccomp filter refusing what a model never needs.

Replicas forked from one model zygote inherit its (unprivileged) uid; each
enters a user + PID + mount namespace of its own (``enter_replica`` and
``finish_replica``) so it cannot see or signal its siblings or its zygote,
and gets its own ``/tmp``.  Unprivileged user namespaces are the one thing a
model zygote's filter allows that a sandbox's does not.

Functions raise ``OSError`` with the reason when the kernel refuses.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                   CLONE_NEWNET)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
DEVICES = ("null", "zero", "full", "random", "urandom")
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine(), 155)
MODEL_DIR = "/opt/ml/model"          # where the bundle appears, as in a SageMaker container
RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the runtime package

# Syscalls a model never needs.  Each is refused with EPERM (ENOSYS for clone3, whose flags
# live in memory a filter cannot read: glibc then falls back to clone, whose flags it can).
DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "mount_setattr", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "add_key", "request_key", "keyctl",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "vhangup", "iopl", "ioperm",
    "lookup_dcookie",
)
# What a model zygote may still do so its replicas can make namespaces of their own.
ZYGOTE_ALLOWED = ("mount", "unshare")


@dataclass(frozen=True)
class View:
    root: str                     # an empty host directory: the new root is a tmpfs mounted on it
    binds: tuple[tuple[str, str], ...]   # (host path, path inside), bound read-only
    tmp_bytes: int                # size of /tmp and of /dev/shm
    hide_pids: bool = True        # /proc with hidepid=invisible (needs Linux 5.8: see proc_options)


_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_c().mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def unshare(flags: int) -> None:
    _check(_c().unshare(flags), "unshare")


def prctl(option: int, arg: int = 0) -> None:
    _check(_c().prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl {option}")


def proc_options() -> str:
    """``hidepid=invisible`` on kernels where each /proc mount has options of its own (5.8+);
    before that the options belong to the PID namespace, and setting them would change the
    host's /proc: then nothing is hidden, and ``doctor`` says so."""
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return ""
    return "hidepid=invisible" if (major, minor) >= (5, 8) else ""


def default_binds(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The host paths a sandbox sees (read-only, at the same place): system directories, this
    interpreter's prefixes and the runtime package; never the project checkout around it or
    the state dir.  The bundle is bound at ``MODEL_DIR`` (see ``View``)."""
    paths = list(SYSTEM_DIRS) + [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, RUNTIME_DIR]
    paths += [os.path.dirname(os.path.realpath(sys.executable))] + list(extra)
    out: list[str] = []
    for p in sorted({os.path.normpath(p) for p in paths if p and os.path.lexists(p)}, key=len):
        if not any(p.startswith(q.rstrip("/") + "/") for q in out):     # already visible through a parent
            out.append(p)
    return tuple(out)


def _ensure(target: str, like: str) -> None:
    """Make a mount point for ``like`` at ``target`` (a directory or an empty file)."""
    if os.path.isdir(like):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))


def _bind_ro(src: str, target: str) -> None:
    mount(src, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _tmpfs(target: str, size_bytes: int, mode: str) -> None:
    os.makedirs(target, exist_ok=True)
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={max(size_bytes, 1 << 20)},mode={mode}")


def build_view(view: View) -> str:
    """Enter a private mount + IPC namespace and make ``view`` its whole filesystem."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    new = view.root
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    _tmpfs(new + "/tmp", view.tmp_bytes, "1777")       # first, so binds of paths under the host's /tmp stay visible
    for src, dest in view.binds:
        target = new + dest
        if os.path.islink(src) and os.path.dirname(src) == "/":     # /bin -> usr/bin on merged-/usr systems
            if not os.path.lexists(target):
                os.symlink(os.readlink(src), target)
            continue
        real = os.path.realpath(src)
        _ensure(target, real)
        _bind_ro(real, target)
    dev = new + "/dev"
    _tmpfs(dev, 1 << 20, "755")
    for name in DEVICES:
        _ensure(f"{dev}/{name}", f"/dev/{name}")
        mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2")):
        os.symlink(to, f"{dev}/{name}")
    _tmpfs(dev + "/shm", view.tmp_bytes, "1777")
    os.makedirs(new + "/proc", exist_ok=True)
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          (proc_options() if view.hide_pids else "") or None)
    os.makedirs(new + "/.old", exist_ok=True)
    os.chdir(new)
    _check(_c().syscall(_SYS_PIVOT_ROOT, b".", b".old"), "pivot_root")
    _check(_c().umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")
    return "view"


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 40


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP: call it while still privileged)."""
    for cap in range(_last_cap() + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:       # a capability this kernel does not know
                raise


def _clear_capability_sets() -> None:
    """Empty the ambient, effective, permitted and inheritable sets."""
    _check(_c().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    data = (_CapData * 2)()
    _check(_c().capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")


def _seal() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_DUMPABLE, 0)


def drop_privileges(uid: int, gid: int) -> str:
    """Become ``uid``/``gid`` for good: no groups, no capabilities, no way back."""
    if uid <= 0 or gid <= 0:
        raise OSError(errno.EINVAL, f"refusing to run a sandbox as uid {uid} gid {gid}")
    _drop_bounding_set()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _clear_capability_sets()
    _seal()
    return "uid"


# --- replicas of a model zygote -----------------------------------------------------
def enter_replica(uid: int, gid: int, no_network: bool) -> None:
    """In the intermediate process of a model zygote's fork: a new user, mount, PID and IPC
    (and network) namespace, mapping only our own uid and gid.  The next fork is the
    replica, PID 1 of its namespace."""
    prctl(PR_SET_DUMPABLE, 1)      # /proc/self/uid_map of a non-dumpable process belongs to root
    try:
        unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | (CLONE_NEWNET if no_network else 0))
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    finally:
        prctl(PR_SET_DUMPABLE, 0)


def _mounts_under(top: str) -> list[str]:
    """Mount points strictly below ``top`` in this mount namespace, outermost only."""
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(top.rstrip("/") + "/"):
                points.append(point)
    out: list[str] = []
    for p in sorted(set(points), key=len):
        if not any(p.startswith(q + "/") for q in out):
            out.append(p)
    return out


def _private_tmp(tmp_bytes: int) -> None:
    """A new tmpfs over /tmp that still shows what the view bound below /tmp (a checkout or a
    virtualenv that lives there): built aside, the binds copied onto it, then moved into place."""
    stage = f"/tmp/.replica-{os.urandom(6).hex()}"
    _tmpfs(stage, tmp_bytes, "1777")
    for point in _mounts_under("/tmp"):
        if point == stage:
            continue
        target = stage + point[len("/tmp"):]
        _ensure(target, point)
        mount(point, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    mount(stage, "/tmp", None, MS_MOVE)


def finish_replica(tmp_bytes: int) -> None:
    """In the replica (PID 1 of its own namespace, capabilities only there): its own /tmp,
    /dev/shm and /proc, then no capabilities at all."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    _private_tmp(tmp_bytes)
    _tmpfs("/dev/shm", tmp_bytes, "1777")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _drop_bounding_set()
    _clear_capability_sets()
    _seal()
    os.chdir("/tmp")


# --- seccomp ------------------------------------------------------------------------
def make_filter(for_zygote: bool = False) -> bytes:
    """A seccomp filter (libseccomp through pyseccomp): allow by default, refuse ``DENIED``;
    returned as the compiled BPF program, so a zygote builds it once and a sandbox's only work
    on the request path is the ``prctl`` that installs it (libseccomp would compile it anew)."""
    import pyseccomp as seccomp

    f = seccomp.SyscallFilter(seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)
    allowed = ZYGOTE_ALLOWED if for_zygote else ()
    for name in DENIED:
        if name in allowed:
            continue
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError, RuntimeError):     # a syscall this architecture does not have
            pass
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    if not for_zygote:
        for flag in NAMESPACE_FLAGS:
            f.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb") as out:
            f.export_bpf(out)
        with os.fdopen(r, "rb") as src:
            r = -1
            return src.read()
    finally:
        if r >= 0:
            os.close(r)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def load_filter(program: bytes) -> str:
    """Install a compiled filter on this process (and all it will fork); no_new_privs first,
    as the kernel requires of an unprivileged process."""
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "not a compiled seccomp filter")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_c().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")
    return "seccomp"
