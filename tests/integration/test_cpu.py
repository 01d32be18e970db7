"""CPU in proportion to memory, read from the kernel's own accounting (the cgroup's cpu.stat and
the process's CPU time), not from wall time."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from tests import models
from tests.helpers import running_gateway, sagemaker_clients, serverless_endpoint  # noqa: F401


def _cpu_dir(pid: int) -> Path | None:
    """The cgroup directory (cpu controller) the process is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(",") or (hid == "0" and Path("/sys/fs/cgroup/cgroup.controllers").exists()):
            base = Path("/sys/fs/cgroup/cpu") if "cpu" in controllers.split(",") else Path("/sys/fs/cgroup")
            return base / path.lstrip("/")
    return None


def _stat(d: Path) -> dict:
    return {k: int(v) for k, _, v in (ln.partition(" ") for ln in (d / "cpu.stat").read_text().splitlines())}


def _sandbox_pid(gw, name) -> int:
    pool = gw.client().describe(name)["variants"][0]["pool"]
    return next(sb["pid"] for sb in pool["sandboxes"])


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _spin_and_measure(gw, name, seconds=3.0):
    c = gw.client()
    c.invoke(name, 0.01)                                   # warm: the sandbox exists
    pid = _sandbox_pid(gw, name)
    d = _cpu_dir(pid)
    before, cpu0, t0 = _stat(d), _cpu_seconds(pid), time.monotonic()
    c.invoke(name, seconds)
    wall, used = time.monotonic() - t0, _cpu_seconds(pid) - cpu0
    return used / wall, before, _stat(d), d


@pytest.fixture(scope="module")
def cpu_gw():
    with running_gateway("--timeout", "30") as gw:
        c = gw.client()
        c.deploy("spin-1g", models.spins, memory_mb=1024)
        c.deploy("pools-1g", models.thread_pools, memory_mb=1024)
        c.deploy("pools-2g", models.thread_pools, memory_mb=2048)
        yield gw


def test_a_1_gb_sandbox_is_throttled_to_its_share(cpu_gw):
    share, before, after, d = _spin_and_measure(cpu_gw, "spin-1g")
    quota = int((d / "cpu.cfs_quota_us").read_text()) if (d / "cpu.cfs_quota_us").exists() else \
        int((d / "cpu.max").read_text().split()[0])
    assert abs(quota - 1024 / 1769 * 100_000) < 100                 # 0.579 vCPU per 100 ms period
    assert after["nr_throttled"] > before["nr_throttled"]           # the kernel held it back ...
    assert 0.40 < share < 0.66, share                               # ... to about 0.58 of a CPU


def test_thread_pools_follow_the_quota(cpu_gw):
    c = cpu_gw.client()
    one, two = c.invoke("pools-1g", 0), c.invoke("pools-2g", 0)
    assert (one["omp"], one["cpus"]) == ("1", "1") and one["pools"] == [1]
    assert (two["omp"], two["cpus"]) == ("2", "2") and two["pools"] == [2]         # ceil(1.158)
    assert c.describe("pools-2g")["variants"][0]["pool"]["vcpus"] == pytest.approx(1.158)
    tiers = c.doctor()["cpu_tiers"]
    assert tiers["1024"] == pytest.approx(0.579) and tiers["6144"] == min(psutil.cpu_count(), 3.473)


def test_a_4_gb_sandbox_gets_four_times_a_1_gb_ones_share_under_contention():
    with running_gateway("--timeout", "30", "--cpu-per-gb", "0.25") as gw:     # 0.25 and 1.0 vCPU: both fit
        c = gw.client()
        c.deploy("small", models.spins, memory_mb=1024)
        c.deploy("large", models.spins, memory_mb=4096)
        for name in ("small", "large"):
            c.invoke(name, 0.01)
        pids = {name: _sandbox_pid(gw, name) for name in ("small", "large")}
        before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        spinners = [threading.Thread(target=c.invoke, args=(name, 4.0)) for name in ("small", "large")]
        for t in spinners:
            t.start()
        for t in spinners:
            t.join(60)
        used = {name: _cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        assert 3.0 < used["large"] / used["small"] < 5.0, used


def test_no_quota_at_zero():
    with running_gateway("--cpu-per-gb", "0") as gw:
        c = gw.client()
        c.deploy("free", models.thread_pools, memory_mb=1024)
        assert c.invoke("free", 0)["cpus"] is None
        d = _cpu_dir(_sandbox_pid(gw, "free"))
        quota = (d / "cpu.cfs_quota_us").read_text().strip() if (d / "cpu.cfs_quota_us").exists() else \
            (d / "cpu.max").read_text().split()[0]
        assert quota in ("-1", "max")


def test_the_fresh_path_gets_the_same_quota_and_pools():
    with running_gateway("--no-zygotes") as gw:
        c = gw.client()
        c.deploy("fresh-pools", models.thread_pools, memory_mb=2048)
        out = c.invoke("fresh-pools", 0)
        assert out["pools"] == [2] and out["cpus"] == "2"
        d = _cpu_dir(_sandbox_pid(gw, "fresh-pools"))
        quota = (d / "cpu.cfs_quota_us").read_text().strip() if (d / "cpu.cfs_quota_us").exists() else \
            (d / "cpu.max").read_text().split()[0]
        assert quota == "115800"
