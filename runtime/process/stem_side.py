"""What a stem does in its own process, once forked: wait to be adopted by the gateway, join
its cgroup (or be confined as a model zygote's replica), warm up, take an assignment and
become a sandbox -- or a model zygote, which runs the zygote loop over the bundle it loaded.

``StemSide`` is the part of ``runtime.process.zygote.Zygote`` that runs after the fork: it
reads the zygote's state it inherited (its sockets to forget, its cgroup support, filters,
warm-up input and, in a model zygote, the loaded model) and never returns into the loop.
"""
from __future__ import annotations

import gc
import os
import random
import signal
import socket
import sys
import tempfile
import time
import traceback

from runtime import protocol
from runtime.process import cgroups, isolation, jail

REPARENT_TIMEOUT_S = 2.0


def thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _reseed() -> None:
    """Copies of one process share its random state; give each its own."""
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()


def _host_pid() -> int:
    """This process's pid as the gateway sees it, also from inside a PID namespace of its
    own (whose /proc is not mounted yet: /proc is still the zygote's)."""
    return int(os.readlink("/proc/self"))


class StemSide:
    """Mixed into ``Zygote``: the stem's side of a fork (see the module docstring)."""

    def _stem_main(self, sock: socket.socket, warm_up: bool = True) -> None:
        try:
            # Forget the zygote's sockets without letting Python close them later by
            # number (the numbers will be reused), then close every fd but our own.
            self.control.detach()
            if self.events is not None:
                self.events.detach()
            for other in self.stems:
                other.sock.detach()
            self.stems = []
            isolation.close_inherited({sock.fileno()})
            deadline = time.monotonic() + REPARENT_TIMEOUT_S
            while isolation.parent_pid() != self.gateway_pid:     # until the intermediate has exited
                if time.monotonic() > deadline:
                    os._exit(3)                         # the gateway is not our subreaper: give up
                time.sleep(0.0002)
            isolation.die_with_parent(self.gateway_pid)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            pid = _host_pid()
            cgroup = ""
            if self.cgroups is not None:     # joining a cgroup can stall on an RCU grace period: do it now
                cgroup = f"stem-{pid}"
                cgroups.make_and_join(self.cgroups, cgroup)
                cgroups.set_limits(self.cgroups, cgroup, self.stem_limit_bytes, self.pids_max)
            if self.replica is not None:
                self._confine_replica()
            warming = warm_up and self.warmup is not None and self.handler is not None
            protocol.send_blocking(sock, {"pid": pid, "cgroup": cgroup, "warming": warming})
            if warming:
                self._warm_up()
                protocol.send_blocking(sock, {"op": "warm"})
            header, payload, fds = protocol.recv_with_fds(sock)
            self._take_assignment(sock, header, fds, cgroup, payload)
        except BaseException:  # noqa: BLE001 - a stem must never return into the zygote's loop
            traceback.print_exc()
        os._exit(1)

    def _confine_replica(self) -> None:
        """A model zygote's stem: already unprivileged; with user namespaces, PID 1 of its own
        PID, mount and IPC namespaces, given its own /tmp and /proc; then a stricter filter."""
        if self.replica.get("userns"):
            jail.finish_replica(self.replica["tmp_bytes"])
        if "sandbox" in self.filters:
            jail.load_filter(self.filters["sandbox"])

    def _warm_up(self) -> None:
        """Run the model once on a real request's input, discarding the answer: the pages
        a call touches are copied now, while nobody waits, instead of on the first request."""
        if self.warmup is None or self.handler is None:
            return
        from runtime.bundle import InvocationContext

        body, meta = self.warmup
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)                  # what the replay prints the model already printed once
        os.dup2(quiet, 2)
        os.close(quiet)
        try:
            self.handler.invoke(body, InvocationContext(content_type=meta.get("content_type"),
                                                        accept=meta.get("accept")))
        except Exception:  # noqa: BLE001 - a failed warm-up only means a slower first request
            pass
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])

    def _take_assignment(self, zsock: socket.socket, setup: dict, fds: list[int], cgroup: str,
                         payload: bytes = b"") -> None:
        from runtime.worker import bundle_path, load_and_serve, protect

        t0 = time.perf_counter()
        parent = setup.get("cgroup_parent")
        if cgroup and parent:                        # a sandbox of a group (a transform job's instance): its cgroup
            moved = f"{parent}/{cgroup}"             # goes inside the group's, whose cap it shares
            cgroups.make_and_join(self.cgroups, moved)
            for d in self.cgroups.dirs(cgroup):
                try:
                    d.rmdir()
                except OSError:
                    pass
            cgroup = moved
        if cgroup:                                   # the cap comes before anything else
            limit, vcpus = setup["memory_limit_bytes"], float(setup.get("vcpus") or 0.0)
            if setup.get("role") == "zygote":        # its stems warm up here before the gateway moves them:
                limit *= 1 + self.target_stems       # their memory is theirs, but they share one tier's CPU
            cgroups.set_limits(self.cgroups, cgroup, limit, self.pids_max, vcpus)
        limit_ms = (time.perf_counter() - t0) * 1000.0
        channel_fd, log_fd, *events_fd = fds          # a model zygote also gets its stem-event channel
        os.setsid()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        zsock.close()
        confine = setup.get("confine") if self.replica is None else None   # a replica is confined already
        role = setup.get("role")
        flt = self.filters.get("zygote" if role == "zygote" else "sandbox") if confine else None
        protections, timings = protect((), setup.get("no_network", False) and self.replica is None,
                                       setup.get("rlimit_bytes", 0), pdeathsig=False, confine=confine,
                                       syscall_filter=flt)
        protections["applied"][:0] = ["pdeathsig"] + (["cgroup"] if cgroup or setup.get("cgroup_by_gateway") else [])
        if self.replica is not None:
            protections["applied"] += ["netns"] * bool(self.replica["no_network"]) + ["view", "uid", "seccomp"]
            if self.replica.get("userns"):
                protections["applied"].append("pidns")
        timings["cgroup_ms"] = limit_ms
        os.environ.update(setup.get("env", {}))
        tmp = "/tmp" if confine or self.replica is not None else setup.get("tmp_dir")
        if tmp:
            os.chdir(tmp)
            tempfile.tempdir = None
        _reseed()
        channel = socket.socket(fileno=channel_fd)
        if role == "zygote":
            events = socket.socket(fileno=events_fd[0]) if events_fd else None
            self._become_model_zygote(channel, setup, protections, timings, payload, events)
        else:
            load_and_serve(channel, bundle_path(setup["bundle"], setup.get("confine")), setup["kind"],
                           protections, timings, handler=self.handler)
        os._exit(0)

    def _become_model_zygote(self, control: socket.socket, setup: dict, protections: dict, timings: dict,
                             sample: bytes, events: socket.socket | None = None) -> None:
        from runtime import bundle
        from runtime.worker import bundle_path

        t0 = time.perf_counter()
        try:
            handler = bundle.load(bundle_path(setup["bundle"], setup.get("confine")), setup["kind"])
        except BaseException as exc:  # noqa: BLE001 - reported to the gateway, which keeps the base path
            traceback.print_exc()
            protocol.send_blocking(control, {"op": "failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        gc.collect()
        gc.freeze()
        timings["load_ms"] = (time.perf_counter() - t0) * 1000.0
        warmup = (sample, setup["warmup"]) if "warmup" in setup else None
        replica = {"uid": os.getuid(), "gid": os.getgid(), "tmp_bytes": setup["confine"]["tmp_bytes"]
                   if setup.get("confine") else 0,
                   "no_network": bool(setup.get("no_network")), "userns": bool(setup.get("replica_userns"))}
        zy = type(self)(control, self.gateway_pid, self.target_stems, handler, (setup["bundle"], setup["kind"]),
                    None if setup.get("confine") else self.cgroups,      # unprivileged: the gateway moves its stems
                    warmup, setup.get("memory_limit_bytes", 0), self.pids_max, filters=self.filters,
                    replica=replica if setup.get("confine") else None, events=events)
        protocol.send_blocking(control, {"op": "ready", "pid": os.getpid(), "threads": thread_count(),
                                         "protections": protections, "timings": timings})
        zy.loop()
