"""A zygote: a process that holds an interpreter with libraries (and maybe a model)
already imported, and hands out copies of itself as sandboxes.

Cold starts are the cost of a fresh interpreter importing numpy and scikit-learn
(about a second here); a fork of a process that already holds them is a few
milliseconds.  To take even the fork off the request path, a zygote keeps a
few *stem* processes forked ahead of demand.  A stem waits for an assignment;
on one it joins its sandbox's cgroup, leaves the network, takes its channel and
log, loads the bundle (unless the zygote already holds the model) and serves.

Stems are forked twice so that their parent is the gateway (a child
subreaper), not the zygote: a zygote that dies takes none of its sandboxes with
it, and PR_SET_PDEATHSIG still ties every sandbox to the gateway's life.

A zygote is single-threaded when it forks: thread-pool variables are pinned to
one thread before anything is imported, and a fork is refused if the process
has grown a thread anyway (a forked child would inherit locks held by threads
that do not exist in it).

Protocol on the control channel (``runtime.protocol`` frames), one request at
a time from the gateway:
  ``assign``  {role: "sandbox"|"zygote", ...setup}  + fds [channel, log]
              -> {ok, pid, fork_ms, stem}          the process took the assignment
  ``ping``    -> {ok, pid, stems, modules}
A model zygote is a stem assigned the ``zygote`` role: it loads the bundle and
then runs this same loop on the control channel it was given.  Confined (see
``runtime.process.jail``), it is unprivileged once it has loaded the bundle, so its stems
cannot make cgroups: it announces each one on a third, one-way channel
(``{op: "stem", pid}``) and the gateway checks the pid, caps it and moves it in
ahead of demand; each such stem also becomes PID 1 of user, PID, mount and IPC
namespaces of its own before it warms up.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass

from runtime import protocol
from runtime.process import cgroups, isolation, jail
from runtime.process.stem_side import StemSide, thread_count

DEFAULT_PRELOAD = ("numpy", "scipy", "pandas", "sklearn", "sklearn.ensemble", "sklearn.linear_model",
                   "onnxruntime", "torch", "cloudpickle")
REFILL_QUIET_S = 0.05
MAX_BACKOFF_S = 5.0
WARMUP_TRIES = 3           # stems that die in a row before a model zygote stops warming them up
MAX_STEM_FAILURES = 6      # ... and before it exits
GAVE_UP = 75               # the exit status of a model zygote whose stems kept dying


class ForkRefused(Exception):
    pass


def preload(modules) -> list[str]:
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - a library that is not installed is simply not preloaded
            pass
    return loaded


@dataclass
class Stem:
    pid: int
    sock: socket.socket
    cgroup: str                      # the cgroup it joined ahead of demand ("" if the gateway moves it)
    warm: bool                       # ready for an assignment: warmed up, or nothing to warm up with


class Zygote(StemSide):
    """``cgroups``: where a (root) base zygote's stems make and join their cgroups ahead of
    demand; a model zygote has none (it is unprivileged: the gateway moves its replicas).
    ``filters``: seccomp filters built before any model code ran ("sandbox", "zygote").
    ``replica``: a model zygote's {uid, gid, tmp_bytes, no_network, userns} for its stems."""

    def __init__(self, control: socket.socket, gateway_pid: int, stems: int, handler=None,
                 bundle: tuple[str, str] | None = None, cgroups_: cgroups.CgroupSupport | None = None,
                 warmup: tuple[bytes, dict] | None = None, stem_limit_bytes: int = 0, pids_max: int = 0,
                 filters: dict | None = None, replica: dict | None = None, events: socket.socket | None = None):
        self.control = control
        self.gateway_pid = gateway_pid
        self.target_stems = stems
        self.cgroups = cgroups_ if cgroups_ is not None and cgroups_.base is not None else None
        self.pids_max = pids_max
        self.warmup = warmup                  # (body, {content_type, accept}) a model zygote's stems pre-run
        self.stem_limit_bytes = stem_limit_bytes   # cap while a stem waits
        self.handler = handler            # a model zygote's loaded bundle
        self.bundle = bundle
        self.filters = filters or {}
        self.replica = replica
        self.events = events                  # tells the gateway each stem forked, so it can cap it ahead
        self.failures = 0                     # stems in a row that died before they were ready
        self.stems: list[Stem] = []

    # --- stems ----------------------------------------------------------------
    def make_stem(self, warm_up: bool = True) -> Stem:
        """Fork a stem and wait until the gateway has adopted it.  With ``warm_up`` (and a model
        to warm up with) it then replays the warm-up request on its own, and says "warm" when
        done: the zygote never waits for a warm-up."""
        if thread_count() != 1:
            raise ForkRefused(f"zygote has {thread_count()} threads; forking now could deadlock the copy")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:                                   # intermediate: fork once more and leave
            try:
                if self.replica is not None and self.replica.get("userns"):
                    r = self.replica              # the next fork is PID 1 of namespaces of its own
                    jail.enter_replica(r["uid"], r["gid"], r["no_network"])
                if os.fork() == 0:
                    ours.detach()
                    self._stem_main(theirs, warm_up)   # never returns
            except BaseException:  # noqa: BLE001 - the stem is simply not made; the zygote sees EOF
                traceback.print_exc()
            finally:
                os._exit(0)
        theirs.close()
        os.waitpid(pid, 0)
        try:
            hello, _ = protocol.recv_blocking(ours)
        except protocol.ProtocolError:
            ours.close()
            raise ForkRefused("stem died before it was adopted by the gateway") from None
        return Stem(hello["pid"], ours, hello.get("cgroup", ""), warm=not hello.get("warming"))

    def _refill_wait(self) -> float:
        """Quiet time before the next refill: backs off exponentially while stems keep dying."""
        return REFILL_QUIET_S if not self.failures else min(MAX_BACKOFF_S, REFILL_QUIET_S * 2 ** self.failures)

    def _stem_failed(self, exc: Exception) -> None:
        """A stem died before it was ready.  A model zygote whose stems keep dying while they warm
        up stops warming them after WARMUP_TRIES, and exits (``GAVE_UP``, which the gateway
        reads as "do not remake this one for a while") after MAX_STEM_FAILURES."""
        self.failures += 1
        print(f"slimserve zygote: {exc} ({self.failures} in a row)", file=sys.stderr, flush=True)
        if self.handler is None:
            return
        if self.failures == WARMUP_TRIES and self.warmup is not None:
            print("slimserve zygote: stems die while warming up; no more warm-ups", file=sys.stderr, flush=True)
            self.warmup = None
        elif self.failures >= MAX_STEM_FAILURES:
            print("slimserve zygote: stems keep dying; giving up", file=sys.stderr, flush=True)
            os._exit(GAVE_UP)

    def _announce(self, pid: int) -> None:
        if self.events is None:
            return
        try:
            protocol.send_blocking(self.events, {"op": "stem", "pid": pid})
        except OSError:                 # the gateway stopped listening: it caps stems on demand then
            self.events = None

    # --- serving the gateway -----------------------------------------------------
    def _pending(self, wait_s: float) -> bool:
        return bool(select.select([self.control], [], [], wait_s)[0])

    def _check_stems(self) -> None:
        """Drop stems that died; note the warming ones that finished (or died warming up)."""
        keep = []
        for st in self.stems:
            if not select.select([st.sock], [], [], 0)[0]:
                keep.append(st)
                continue
            if st.warm:                      # a ready stem never writes: readable means it closed
                st.sock.close()
                continue
            try:
                msg, _ = protocol.recv_blocking(st.sock)
            except protocol.ProtocolError:
                st.sock.close()
                self._stem_failed(ForkRefused("stem died while warming up"))
                continue
            st.warm = msg.get("op") == "warm"
            if st.warm:
                self.failures = 0
            keep.append(st)
        self.stems = keep

    def loop(self) -> None:
        while True:
            self._check_stems()
            # Refill only once the gateway has been quiet for a moment: a fork right after an
            # assignment would compete for the CPU with the sandbox's first response.
            if len(self.stems) < self.target_stems and not self._pending(self._refill_wait()):
                try:
                    stem = self.make_stem()
                    self.stems.append(stem)
                    self._announce(stem.pid)
                    if stem.warm:
                        self.failures = 0
                except ForkRefused as exc:
                    self._stem_failed(exc)
                continue
            warming = [st.sock for st in self.stems if not st.warm]
            if self.control not in select.select([self.control, *warming], [], [])[0]:
                continue                     # a stem finished warming up (or died): see it above
            try:
                header, payload, fds = protocol.recv_with_fds(self.control)
            except protocol.ProtocolError:
                return                                      # the gateway closed the channel
            try:
                reply = self.handle(header, fds, payload)
            except ForkRefused as exc:
                reply = {"ok": False, "message": str(exc)}
            finally:
                for fd in fds:
                    os.close(fd)
            protocol.send_blocking(self.control, reply)

    def handle(self, header: dict, fds: list[int], payload: bytes = b"") -> dict:
        op = header.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "stems": len(self.stems), "threads": thread_count(),
                    "modules": sorted(m for m in sys.modules if "." not in m)}
        if op != "assign":
            return {"ok": False, "message": f"unknown op {op!r}"}
        t0 = time.perf_counter()
        self._check_stems()
        stem = next((st for st in self.stems if st.warm), None)
        from_stem = stem is not None
        if stem is not None:
            self.stems.remove(stem)
        else:                                # never wait for another stem's warm-up: fork one that skips it
            stem = self.make_stem(warm_up=False)     # (not announced: the gateway caps it on assignment)
        fork_ms = (time.perf_counter() - t0) * 1000.0
        try:
            protocol.send_with_fds(stem.sock, header, fds, payload)
        except OSError:
            stem.sock.close()
            raise ForkRefused("the stem died before it took its assignment") from None
        stem.sock.close()
        return {"ok": True, "pid": stem.pid, "cgroup": stem.cgroup, "fork_ms": fork_ms, "stem": from_stem}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="slimserve-zygote")
    ap.add_argument("--fd", type=int, required=True, help="control channel to the gateway")
    ap.add_argument("--gateway-pid", type=int, required=True)
    ap.add_argument("--stems", type=int, default=2, help="processes kept forked ahead of demand")
    ap.add_argument("--preload", default=",".join(DEFAULT_PRELOAD))
    ap.add_argument("--cgroups", default="", help="JSON: where stems make their cgroups (CgroupSupport.to_args)")
    ap.add_argument("--pids-max", type=int, default=0, help="processes and threads per sandbox")
    ap.add_argument("--seccomp", action="store_true", help="build the sandboxes' seccomp filters ahead")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    isolation.die_with_parent()
    control = socket.socket(fileno=args.fd)
    t0 = time.perf_counter()
    # What every stem runs once it has an assignment, imported here once instead of in each copy
    # (a stem writes no bytecode, and a confined one may no longer see every source file).
    import runtime.bundle  # noqa: F401
    import runtime.codec  # noqa: F401
    import runtime.worker  # noqa: F401

    loaded = preload([m for m in args.preload.split(",") if m])
    runtime.worker.prepare_thread_control()           # its sandboxes resize their pools without a scan
    filters = {"sandbox": jail.make_filter(), "zygote": jail.make_filter(for_zygote=True)} if args.seccomp else {}
    gc.collect()
    gc.freeze()          # keep the collector from touching (and so copying) inherited objects
    threads = thread_count()
    protocol.send_blocking(control, {"op": "ready", "pid": os.getpid(), "preloaded": loaded,
                                     "threads": threads, "preload_ms": (time.perf_counter() - t0) * 1000.0})
    if threads != 1:
        print(f"slimserve zygote: {threads} threads after preloading {loaded}; refusing to fork", file=sys.stderr)
        return
    support = cgroups.CgroupSupport.from_args(json.loads(args.cgroups)) if args.cgroups else None
    Zygote(control, args.gateway_pid, args.stems, cgroups_=support, pids_max=args.pids_max,
           filters=filters).loop()


if __name__ == "__main__":
    main()
