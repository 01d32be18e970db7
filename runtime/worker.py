"""The process inside a sandbox: protect itself, load a bundle, serve invocations.

Started by a backend as ``python -m runtime.worker --fd N ...`` with one end of
a socket pair on fd N.  It applies its protections first (die with the
gateway, join the cgroup, leave the network, cap its address space where no
cgroup caps it), then loads the bundle, reports ``ready`` (or ``failed``), and
answers one ``invoke`` at a time until the channel closes.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback

from runtime import protocol
from runtime.process import isolation
from runtime.sandbox import (  # imported before any fork: a replica may not see the file
    BAD_OUTPUT,
    LOAD_FAILED,
    MODEL_RAISED,
    OUT_OF_MEMORY,
    UNSUPPORTED_MEDIA,
    too_large_message,
)


def protect(cgroup_procs: tuple[str, ...] = (), no_network: bool = False, rlimit_bytes: int = 0,
            pdeathsig: bool = True, confine: dict | None = None, syscall_filter=None) -> tuple[dict, dict]:
    """Apply the sandbox's protections to this process, before any user code runs.

    ``confine`` (from the gateway, which probed what this host allows) asks for the
    filesystem view, the unprivileged uid and the seccomp filter of ``runtime.process.jail``;
    ``syscall_filter`` is a filter built ahead (a zygote's), else one is built here.

    Returns (protections, timings): what was applied and what is missing (with
    the reason), and how long each step took in ms.  Refuses to go on without
    the cgroup or the confinement it was given: they are the promise of a tier.
    """
    from runtime.process import jail

    applied, missing, timings = [], {}, {}
    steps = []
    if pdeathsig:
        steps.append(("pdeathsig", isolation.die_with_parent, ()))
    for procs in cgroup_procs:
        steps.append(("cgroup", isolation.join_cgroup, (procs,)))
    if no_network:
        steps.append(("netns", isolation.leave_network, ()))
    if rlimit_bytes:
        steps.append(("rlimit_as", isolation.cap_address_space, (rlimit_bytes,)))
    required = {"cgroup"}
    if confine:
        view = jail.View(confine["root"], tuple(tuple(b) for b in confine["binds"]), int(confine["tmp_bytes"]),
                         bool(confine.get("hide_pids", True)))
        steps.append(("view", jail.build_view, (view,)))
        steps.append(("uid", jail.drop_privileges, (confine["uid"], confine["gid"])))
        if confine.get("seccomp"):
            flt = syscall_filter or jail.make_filter(for_zygote=confine["seccomp"] == "zygote")
            steps.append(("seccomp", jail.load_filter, (flt,)))
        required |= {"view", "uid", "seccomp"}
    for name, fn, fargs in steps:
        t0 = time.perf_counter()
        try:
            done = fn(*fargs)
            if done not in applied:         # one "cgroup" for every hierarchy joined
                applied.append(done)
        except OSError as exc:
            missing[name] = exc.strerror or str(exc)
        timings[f"{name}_ms"] = timings.get(f"{name}_ms", 0.0) + (time.perf_counter() - t0) * 1000.0
    refused = sorted(required & set(missing))
    if refused:
        raise SystemExit("slimserve worker: cannot confine the sandbox: "
                         + "; ".join(f"{k}: {missing[k]}" for k in refused))
    return {"applied": applied, "missing": missing, "uid": os.getuid()}, timings


def load_and_serve(sock: socket.socket, bundle_dir: str, kind: str, protections: dict, timings: dict,
                   handler=None) -> None:
    """Load the bundle (unless ``handler`` is already loaded), report, then serve."""
    t0 = time.perf_counter()
    if _size_thread_pools():
        timings = dict(timings, threads_ms=(time.perf_counter() - t0) * 1000.0)
        t0 = time.perf_counter()
    if handler is None:
        try:
            from runtime import bundle

            handler = bundle.load(bundle_dir, kind)
        except BaseException as exc:  # noqa: BLE001 - any failure to load is reported, not raised
            traceback.print_exc()
            kind = OUT_OF_MEMORY if isinstance(exc, MemoryError) else LOAD_FAILED
            protocol.send_blocking(sock, {"op": "failed", "kind": kind, "message": f"{type(exc).__name__}: {exc}"})
            sys.exit(1)
    protocol.send_blocking(sock, {
        "op": "ready",
        "pid": os.getpid(),
        "protections": protections,
        "timings": dict(timings, load_ms=(time.perf_counter() - t0) * 1000.0),
    })
    serve(sock, handler)


def prepare_thread_control() -> None:
    """In a zygote, before it forks: find the BLAS/OpenMP libraries it loaded (threadpoolctl
    scans them, ~10 ms), so that a sandbox forked from it resizes their pools in microseconds
    instead of scanning again on its cold start.  Creates no thread."""
    global _CONTROLLER
    try:
        import threadpoolctl

        _CONTROLLER = threadpoolctl.ThreadpoolController()
    except Exception:  # noqa: BLE001 - without it, pools stay at one thread in forked sandboxes
        _CONTROLLER = None


def _size_thread_pools() -> bool:
    """This process has been handed its model and will not fork again: its BLAS/OpenMP (and
    torch) thread pools, pinned to one thread while a zygote forked, follow its CPU quota (the
    gateway sets the size in OMP_NUM_THREADS, unless the model's Environment did).  Libraries
    loaded after the environment was set (a fresh worker's) read it themselves; those a zygote
    loaded are resized through the controller it prepared.  Returns whether it resized any."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if not threads.isdigit() or int(threads) <= 1:
        return False
    n = int(threads)
    if _CONTROLLER is not None:
        try:
            _CONTROLLER.limit(limits=n)            # applied at once; the returned object only restores
        except Exception:  # noqa: BLE001 - thread pools stay as they are; the quota still holds
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.set_num_threads(n)
        except Exception:  # noqa: BLE001
            pass
    return _CONTROLLER is not None or torch is not None


_CONTROLLER = None


def _error_result(kind: str, exc: BaseException, original_status: int = 500, **extra) -> dict:
    return {
        "op": "result",
        "ok": False,
        "error_kind": kind,
        "message": f"{type(exc).__name__}: {exc}",
        "original_status": original_status,
        **extra,
    }


def serve(sock: socket.socket, handler) -> None:
    from runtime.bundle import InvocationContext
    from runtime.codec import OutputError, UnsupportedMediaType

    while True:
        try:
            header, body = protocol.recv_blocking(sock)
        except protocol.ProtocolError:
            return
        if header.get("op") in ("load", "unload"):
            protocol.send_blocking(sock, dict(_manage(handler, header, body), op="loaded", id=header.get("id")))
            continue
        ctx = InvocationContext(
            content_type=header.get("content_type"),
            accept=header.get("accept"),
            custom_attributes=header.get("custom_attributes"),
        )
        if header.get("model") is not None:
            ctx.extra["model"] = header["model"]
        payload = b""
        t0 = time.perf_counter()
        try:
            payload, content_type = handler.invoke(body, ctx)
            reply = {"op": "result", "ok": True, "content_type": content_type}
        except MemoryError as exc:
            reply = _error_result(OUT_OF_MEMORY, exc, fatal=True)
        except UnsupportedMediaType as exc:
            reply = _error_result(UNSUPPORTED_MEDIA, exc, 415)
        except OutputError as exc:
            reply = _error_result(BAD_OUTPUT, exc)
        except Exception as exc:  # noqa: BLE001 - the model's own exception, reported to the caller
            reply = _error_result(MODEL_RAISED, exc)
            traceback.print_exc()
        reply["model_ms"] = (time.perf_counter() - t0) * 1000.0
        reply["custom_attributes"] = ctx.response_custom_attributes
        reply["id"] = header.get("id")           # the reply answers this request, not one sent ahead
        limit = header.get("max_response")
        if reply["ok"] and isinstance(limit, int) and len(payload) > limit:
            reply = dict(reply, ok=False, error_kind=BAD_OUTPUT, original_status=500,
                         message=too_large_message(len(payload), limit))
            payload = b""
        protocol.send_blocking(sock, reply, payload)


def _manage(handler, header: dict, body: bytes) -> dict:
    """A multi-model sandbox's ``load`` (the model's bundle as a tar in the payload) or ``unload``."""
    from runtime.multimodel import ModelHost

    if not isinstance(handler, ModelHost):
        return {"ok": False, "error_kind": LOAD_FAILED, "message": "this sandbox serves one model"}
    if header["op"] == "load":
        return handler.load(str(header.get("model")), str(header.get("kind")), body)
    return handler.unload(str(header.get("model")))


def stem(listen_path: str, preload: list[str]) -> None:
    """A container's worker before it has a model: import the common libraries, wait on a
    Unix socket in the bind-mounted run dir for the gateway, then for an assignment (the
    bundle's path and kind, the model's environment), load it and serve.  The container
    itself is the sandbox: docker caps memory, drops privileges and cuts the network."""
    import importlib

    t0 = time.perf_counter()
    for mod in preload:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a library that is not installed is the bundle's problem later
            pass
    prepare_thread_control()                    # ahead of the assignment, as a zygote does
    preload_ms = (time.perf_counter() - t0) * 1000.0
    if os.path.exists(listen_path):
        os.unlink(listen_path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen_path)
    srv.listen(1)
    conn, _ = srv.accept()
    srv.close()
    protocol.send_blocking(conn, {"op": "stem", "pid": os.getpid(), "preload_ms": preload_ms})
    try:
        header, _ = protocol.recv_blocking(conn)
    except protocol.ProtocolError:
        return
    t1 = time.perf_counter()
    os.environ.update(header.get("env") or {})
    protections = {"applied": ["container"], "missing": {}}
    load_and_serve(conn, header["bundle"], header["kind"], protections,
                   {"assign_ms": (time.perf_counter() - t1) * 1000.0})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="slimserve-worker")
    ap.add_argument("--listen", default=None, help="container stem: wait for the gateway on this Unix socket")
    ap.add_argument("--preload", default="")
    ap.add_argument("--fd", type=int)
    ap.add_argument("--bundle")
    ap.add_argument("--kind")
    ap.add_argument("--cgroup-procs", action="append", default=[], help="join this cgroup (once per hierarchy)")
    ap.add_argument("--no-network", action="store_true")
    ap.add_argument("--rlimit-bytes", type=int, default=0)
    ap.add_argument("--confine", default="", help="JSON: the filesystem view, uid and filter (runtime.process.jail)")
    args = ap.parse_args(argv)
    if args.listen:
        stem(args.listen, [m for m in args.preload.split(",") if m])
        return
    if args.fd is None or not args.bundle or not args.kind:
        ap.error("--fd, --bundle and --kind are required (or --listen)")
    isolation.close_inherited({args.fd})  # nothing the gateway had open reaches model code
    sock = socket.socket(fileno=args.fd)
    confine = json.loads(args.confine) if args.confine else None
    protections, timings = protect(tuple(args.cgroup_procs), args.no_network, args.rlimit_bytes, confine=confine)
    try:                                  # the model's own environment, only now that it is confined
        header, _ = protocol.recv_blocking(sock)
    except protocol.ProtocolError:
        return
    os.environ.update({str(k): str(v) for k, v in (header.get("env") or {}).items()})
    load_and_serve(sock, bundle_path(args.bundle, confine), args.kind, protections, timings)



def bundle_path(host_path: str, confine: dict | None) -> str:
    """Where the bundle is seen from inside: /opt/ml/model in a confined view, else where it is."""
    if not confine:
        return host_path
    from runtime.process.jail import MODEL_DIR

    return MODEL_DIR


if __name__ == "__main__":
    main()
