"""What this host allows sandboxes: each confinement of ``runtime.process.jail`` tried for real
in a throwaway child, printed as JSON.  Run by the gateway at start (as root, before any model
code) as ``python -m runtime.process.probe SCRATCH_DIR UID``; ``slimserve doctor`` shows it."""
from __future__ import annotations

import errno
import os
import sys

from runtime.process import jail


def _in_child(fn) -> tuple[bool, str]:
    """Run ``fn`` in a forked child (it may change what the process is); (ok, detail)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = "ok:" + (fn() or "")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, not raised
            out = f"no:{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
        os.write(w, out.encode()[:4000])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = fh.read().decode()
    os.waitpid(pid, 0)
    if not out:
        return False, "the probe died"
    ok, _, detail = out.partition(":")
    return ok == "ok", detail


def probe(scratch: str, uid: int) -> dict:
    """Try each confinement for real in throwaway children: {name: {"ok", "detail"}}."""
    out = {}
    def net():
        import socket

        jail.unshare(jail.CLONE_NEWNET)
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        except OSError:
            return ""
        raise OSError(errno.EEXIST, "a connection to 127.0.0.1 still went through")

    out["network"] = dict(zip(("ok", "detail"), _in_child(net), strict=True))
    if os.geteuid() != 0:
        why = "the gateway is not root: sandboxes cannot get a uid, a mount namespace or a /tmp of their own"
        out.update({name: {"ok": False, "detail": why} for name in ("view", "uid", "seccomp", "replicas")})
        return out
    os.makedirs(scratch, exist_ok=True)
    binds = tuple((p, p) for p in jail.default_binds())

    def view():
        jail.build_view(jail.View(scratch, binds, 1 << 20))
        leaked = [p for p in ("/run", "/var", "/root/.aws", "/home") if os.path.exists(p) and os.listdir(p)]
        if leaked:
            raise OSError(errno.EEXIST, f"still visible: {leaked}")
        return ""

    def ident():
        jail.drop_privileges(uid, uid)
        return ""

    def sec():
        flt = jail.make_filter()
        jail.drop_privileges(uid, uid)
        jail.load_filter(flt)
        try:
            jail.unshare(jail.CLONE_NEWUSER)
        except OSError as exc:
            if exc.errno == errno.EPERM:
                return ""
            raise
        raise OSError(errno.EINVAL, "the filter did not refuse unshare")

    def replicas():
        flt = jail.make_filter(for_zygote=True)
        jail.drop_privileges(uid, uid)
        jail.load_filter(flt)
        jail.enter_replica(uid, uid, no_network=True)
        ok, detail = _in_child(_replica_probe)
        if not ok:
            raise OSError(errno.EPERM, detail)
        return ""

    for name, fn in (("view", view), ("uid", ident), ("seccomp", sec), ("replicas", replicas)):
        ok, detail = _in_child(fn)
        out[name] = {"ok": ok, "detail": detail}
    return out


def _replica_probe() -> str:
    """In the first child of a new PID namespace: can it mount its /proc and /tmp?"""
    if os.getpid() != 1:
        raise OSError(errno.EINVAL, "not PID 1 of a namespace of its own")
    jail.finish_replica(1 << 20)
    return ""


if __name__ == "__main__":
    import json

    print(json.dumps(probe(sys.argv[1], int(sys.argv[2]))))
