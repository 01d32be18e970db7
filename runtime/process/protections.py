"""What the process backend can enforce on this host: the probe at start, which tries each
confinement in throwaway children, and the table ``slimserve doctor`` and describe show."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

from runtime.process import jail

log = logging.getLogger("slimserve.process")


async def probe(python: str, scratch: Path, last_uid: int, env: dict) -> dict:
    """Try each confinement in throwaway children (``runtime.process.probe``):
    {name: {"ok": bool, "detail": str}} for network, view, uid, seccomp and replicas."""
    proc = await asyncio.create_subprocess_exec(
        python, "-m", "runtime.process.probe", str(scratch), str(last_uid),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    await asyncio.to_thread(shutil.rmtree, scratch, True)
    try:
        return json.loads(out)
    except ValueError:
        why = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return {k: {"ok": False, "detail": f"the probe failed: {why}"}
                for k in ("network", "view", "uid", "seccomp", "replicas")}


def confined(confinement: dict) -> bool:
    """Sandboxes get the view, a uid of their own and the filter (the probe found all three)."""
    return all(confinement.get(k, {}).get("ok") for k in ("view", "uid", "seccomp"))


def warn_missing(confinement: dict) -> None:
    """Say loudly what this host does not allow."""
    missing = {k: v["detail"] for k, v in confinement.items() if not v["ok"]}
    if not confined(confinement):
        log.warning("SANDBOXES ARE NOT CONFINED on this host: model code can read and write what the gateway "
                    "can. %s", "; ".join(f"{k}: {v}" for k, v in missing.items()))
    elif "replicas" in missing:
        log.warning("sandboxes forked from one model zygote share its uid, PID namespace and /tmp: %s",
                    missing["replicas"])


def table(support, confinement: dict, uids, network_isolation: bool, pids_max: int) -> dict:
    """Each protection, whether this host gives it, and in one line what it is or why not
    (from the probe at start: nothing here guesses from versions)."""
    cg, c = support, confinement

    def probed(key: str, what: str) -> dict:
        got = c.get(key, {"ok": False, "detail": "not probed yet"})
        return {"ok": got["ok"], "detail": what if got["ok"] else f"MISSING: {got['detail']}"}

    last = uids.first + uids.count - 1
    memory = {"ok": cg.version is not None,
              "mechanism": f"cgroup {cg.version}" if cg.version else "rlimit_as+rss_watchdog",
              "detail": f"kernel-enforced cap per sandbox under {cg.base}" if cg.version else
              f"no writable memory cgroup ({cg.reason}); falling back to RLIMIT_AS and an RSS watchdog"}
    pids_ok = cg.pids_base is not None
    if network_isolation:
        network = dict(probed("network", "each sandbox gets its own network namespace with no interfaces up:"
                                         " no host network, no loopback services, no abstract Unix sockets"),
                       mechanism="netns")
    else:
        network = {"ok": False, "mechanism": "host network (--allow-network)",
                   "detail": "sandboxes share the host's network namespace: they reach every address the host "
                             "does, its loopback services and its abstract Unix sockets (those live in the "
                             "network namespace, not the filesystem)"}
    view_ok = bool(c.get("view", {}).get("ok"))
    return {
        "memory_cap": memory,
        "sandbox_uid": dict(probed("uid", f"a uid of its own per sandbox ({uids.first}-{last}), never 0;"
                                          " no groups, no capabilities, no_new_privs, not dumpable"),
                            mechanism="setresuid"),
        "filesystem_view": dict(probed("view", "default-deny mount namespace: read-only system and Python "
                                               "directories, the bundle read-only at /opt/ml/model; no state "
                                               "dir, /run, /var, home directories or host sockets"),
                                mechanism="mount namespace + pivot_root"),
        "private_tmp": {"ok": view_ok, "mechanism": "tmpfs" if view_ok else "directory",
                        "detail": "/tmp and /dev/shm are tmpfs of half the tier each; what is written there counts "
                                  "against its memory" if view_ok else
                                  "MISSING: a private directory as TMPDIR, on the host's disk, uncapped"},
        "cpu_quota": {"ok": cg.cpu_base is not None,
                      "mechanism": ("cpu.max" if cg.version == "v2" else "cfs_quota (v1 cpu hierarchy)")
                      if cg.cpu_base is not None else "none",
                      "detail": f"each sandbox's CPU time per 100 ms follows its memory tier ({cg.cpu_reason})"
                      if cg.cpu_base is not None else f"MISSING: {cg.cpu_reason or cg.reason}"},
        "pids_limit": {"ok": pids_ok, "mechanism": f"pids.max {pids_max}" if pids_ok else "none",
                       "detail": cg.pids_reason if pids_ok else f"MISSING: {cg.pids_reason or cg.reason}"},
        "process_isolation": dict(probed("view", "/proc shows a sandbox only its own processes ("
                                                 + (jail.proc_options() or "hidepid unavailable before Linux 5.8")
                                                 + "); other uids cannot be signalled or traced"),
                                  mechanism="hidepid + uid"),
        "replica_isolation": dict(probed("replicas", "sandboxes forked from one model zygote share its uid; "
                                                     "each is PID 1 of user, PID, mount and IPC namespaces of its"
                                                     " own, with its own /tmp"),
                                  mechanism="user + PID namespace"),
        "seccomp": dict(probed("seccomp", f"{len(jail.DENIED)} syscalls refused: mount, ptrace, kernel modules,"
                                          " keyrings, bpf, new namespaces (model zygotes may still make user "
                                          "namespaces for their replicas) …"), mechanism="libseccomp filter"),
        "network_isolation": network,
        "gpu_hidden": {"ok": True, "mechanism": "hidden",
                       "detail": "CUDA/HIP/ROCR_VISIBLE_DEVICES empty; no device nodes in the view but null, "
                                 "zero, full, random, urandom"},
        "dies_with_gateway": {"ok": True, "mechanism": "pdeathsig + cgroup",
                              "detail": "sandboxes die with the gateway; a restart kills what a kill -9 left in "
                                        "this gateway's own cgroups, never another gateway's"},
    }
