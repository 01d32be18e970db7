"""Model functions deployed by the tests.  They live in a module of their own so
that the client pickles them by value (a sandbox cannot import tests/)."""
from __future__ import annotations

import os
import time


def echo(x):
    return {"echo": x}


def kind_of(x):
    return type(x).__name__


def numpy_out(x):
    import numpy as np

    return np.arange(int(x), dtype=np.float64) * 0.5


def raises(x):
    raise ValueError(f"bad input {x!r}")


def unserialisable(x):
    return object()


def exits(x):
    os._exit(7)


def hangs(x):
    time.sleep(3600)


def sleeps(x):
    time.sleep(float(x))
    return x


def allocates(x):
    """Touch ``x`` MB of memory page by page, so it is really resident."""
    block = bytearray(int(x) * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def with_context(x, context):
    context.response_custom_attributes = f"seen={context.custom_attributes}"
    return x


def tmp_and_net(x):
    import socket
    import tempfile

    out = {"tmpdir": tempfile.gettempdir(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        socket.create_connection(("127.0.0.1", 1), timeout=1)
        out["net"] = "connected"
    except OSError as exc:
        out["net"] = exc.errno
    return out


class Doubler:
    def predict(self, x):
        return [2 * v for v in x]


def randoms(x):
    import random

    import numpy as np

    return [random.random(), float(np.random.rand())]


# --- hostile models (tests/integration/test_isolation.py): each reports what it could do -------------------
def reads(path):
    """Read a host path; the error's name if it cannot."""
    try:
        with open(path, "rb") as fh:
            return {"read": len(fh.read(64))}
    except OSError as exc:
        return {"error": type(exc).__name__}


def writes(path):
    try:
        with open(path, "w") as fh:
            fh.write("pwned")
        return {"wrote": path}
    except OSError as exc:
        return {"error": type(exc).__name__}


def docker_socket(x):
    import socket

    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect("/var/run/docker.sock")
        s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        return {"answer": s.recv(200).decode(errors="replace")}
    except OSError as exc:
        return {"error": type(exc).__name__}


def touches_pid(pid):
    """Signal another process and read its environment."""
    out = {}
    try:
        os.kill(int(pid), 0)
        out["signal"] = "delivered"
    except OSError as exc:
        out["signal"] = type(exc).__name__
    try:
        with open(f"/proc/{int(pid)}/environ", "rb") as fh:
            out["environ"] = len(fh.read())
    except OSError as exc:
        out["environ"] = type(exc).__name__
    return out


def identity(x):
    """What a sandbox is, and that ordinary model work still runs in it."""
    import threading

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    box = []
    t = threading.Thread(target=lambda: box.append(int(np.arange(10).sum())))
    t.start()
    t.join()
    with open("/tmp/scratch.bin", "wb") as fh:
        fh.write(b"x" * (8 << 20))
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    return {
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "pid": os.getpid(),
        "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "root": sorted(os.listdir("/")), "bundle": sorted(os.listdir("/opt/ml/model")),
        "tmp_size": os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize,
        "thread": box, "sklearn": int(model.predict([[2.5]])[0]),
        "env_keys": sorted(os.environ),
    }


def syscalls(x):
    """Syscalls a model never needs: each should be refused."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, call in (("unshare_user", lambda: libc.unshare(0x10000000)),
                       ("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
                       ("ptrace_attach_1", lambda: libc.ptrace(16, 1, None, None)),
                       ("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0))):
        rc = call()
        out[name] = errno.errorcode.get(ctypes.get_errno(), "ok") if rc != 0 else "ok"
    return out


def fills_tmp(mb):
    written = 0
    try:
        with open("/tmp/fill.bin", "wb") as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(int(mb)):
                fh.write(chunk)
                fh.flush()
                written += 1
    except OSError as exc:
        os.unlink("/tmp/fill.bin")
        return {"written_mb": written, "error": exc.strerror}
    os.unlink("/tmp/fill.bin")
    return {"written_mb": written}


def fork_bomb(n):
    import time

    forked = 0
    try:
        for _ in range(int(n)):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            forked += 1
    except OSError as exc:
        return {"forked": forked, "error": exc.errno}
    return {"forked": forked}


def leaves_a_child(marker):
    """Start a child in a session of its own that outlives this call, named by ``marker``."""
    import subprocess

    p = subprocess.Popen(["sleep", str(marker)], start_new_session=True)
    return p.pid


def open_fds(x):
    """What every open file descriptor of the sandbox points to."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def attacks_its_log(x):
    """Truncate, preallocate and read back the log it writes to; then print a line."""
    out = {}
    for name, call in (("truncate", lambda: os.ftruncate(1, 0)),
                       ("fallocate", lambda: os.posix_fallocate(1, 0, 1 << 30))):
        try:
            call()
            out[name] = "done"
        except OSError as exc:
            out[name] = type(exc).__name__
    print(f"still-logging-{x}", flush=True)
    return out


def big_answer(mb):
    return "x" * int(float(mb) * (1 << 20))


def forges_a_huge_frame(x):
    """Write straight onto the channel a frame that claims a 1 GiB payload, then wait."""
    import socket
    import stat
    import struct
    import time

    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                s = socket.socket(fileno=os.dup(fd))
                head = b'{"op":"result","ok":true}'
                s.sendall(struct.pack("!II", len(head), 1 << 30) + head + b"\0" * (1 << 20))
        except OSError:
            pass
    time.sleep(30)
    return "unreachable"


def reads_env(name):
    return os.environ.get(name)


def exits_3(x):
    os._exit(3)


def fine_until(deadline):
    """Answers until the wall clock passes ``deadline``, then exits."""
    import time

    if time.time() > float(deadline):
        os._exit(4)
    return 1


def dies_in_replicas(x):
    """Answers in a sandbox of the host's PID namespace, exits in a model zygote's replica (PID 1
    of a namespace of its own): every warm-up replay of it dies."""
    if os.getpid() == 1:
        os._exit(4)
    return 1


def prints_once(x):
    print(f"side-effect-{x}", flush=True)
    return x


class KillsItsForks:
    """Once loaded, every process forked from the one that loaded it dies at once: a model
    zygote of it can make no stem, with or without a warm-up."""

    def __getstate__(self):
        return {"armed": True}

    def __setstate__(self, state):
        os.register_at_fork(after_in_child=lambda: os._exit(5))
        self.__dict__.update(state)

    def __call__(self, x):
        return 1


class SendsNestedJsonAtLoad:
    """When unpickled, writes onto every socket it holds a frame whose 4 KiB header is JSON nested
    too deep to read, then waits: a start that does not destroy it would leave it running."""

    def __getstate__(self):
        return {"depth": 4000}

    def __setstate__(self, state):
        import socket
        import stat
        import struct
        import time

        head = b"[" * state["depth"]
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    socket.socket(fileno=os.dup(fd)).sendall(struct.pack("!II", len(head), 0) + head)
            except OSError:
                pass
        time.sleep(60)

    def __call__(self, x):
        return x


class SlowToLoad:
    """Takes ``seconds`` to unpickle (to load), then echoes."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, x):
        return x

    def __setstate__(self, state):
        time.sleep(state["seconds"])
        self.__dict__.update(state)


def spins(seconds):
    """Burn CPU on one thread for ``seconds`` of wall time; returns how many loops it made."""
    end, n = time.monotonic() + float(seconds), 0
    while time.monotonic() < end:
        n += 1
    return n


def thread_pools(x):
    """The thread pools this sandbox's BLAS/OpenMP libraries use, and its CPU quota."""
    import os

    import numpy  # noqa: F401 - loads the BLAS whose pool is reported
    import threadpoolctl

    return {"pools": sorted({p["num_threads"] for p in threadpoolctl.threadpool_info()}),
            "omp": os.environ.get("OMP_NUM_THREADS"), "cpus": os.environ.get("SM_NUM_CPUS")}


def answers_ahead(x):
    """Answer this request, and put a forged answer for the next one on the channel at once
    (an instant reply claiming no run time), then work on unseen."""
    import json
    import socket
    import stat
    import struct

    head = json.dumps({"op": "result", "ok": True, "model_ms": 0.0, "content_type": "application/json"}).encode()
    body = b'"forged"'
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                s = socket.socket(fileno=os.dup(fd))
                s.sendall(struct.pack("!II", len(head), len(body)) + head + body)
        except OSError:
            pass
    time.sleep(0.3)
    return "real"


def lies_about_time(x):
    """Run 0.3 s, then make the worker's clock report that no time passed."""
    time.sleep(0.3)
    frozen = time.perf_counter()
    time.perf_counter = lambda: frozen - 3600.0      # the worker's run-time figure is now negative
    return "ran"


def async_work(x):
    """The asynchronous tests' model: {"n": N} doubles N, after sleeping {"sleep": S} seconds,
    or raises with {"fail": MESSAGE}; a bare number is doubled."""
    if not isinstance(x, dict):
        return {"double": x * 2}
    time.sleep(float(x.get("sleep", 0)))
    if "fail" in x:
        raise ValueError(x["fail"])
    return {"double": x.get("n", 0) * 2}


def csv_sums(text):
    """The batch transform tests' model: each CSV line of numbers becomes their sum, one answer
    line per input line; a line "boom" raises, a line "sleep S" sleeps S seconds first."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("boom"):
            raise ValueError(f"cannot score {line!r}")
        if line.startswith("sleep"):
            time.sleep(float(line.split()[1]))
            out.append("slept")
            continue
        out.append(repr(sum(float(v) for v in line.split(","))))
    return "\n".join(out) + "\n"


def json_sums(body):
    """The batch transform tests' JSON Lines model: each line a JSON array of numbers, answered
    with its sum, one line per line."""
    import json

    text = body.decode() if isinstance(body, (bytes, bytearray)) else body
    return "".join(f"{float(sum(json.loads(line)))}\n" for line in text.splitlines() if line.strip())
