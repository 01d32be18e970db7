"""Hostile models against the process backend's sandboxes, on every start path.

Each attack runs as model code in a real sandbox of a real gateway and reports what it
could do; each must fail (with the error a caller can read) while the gateway keeps
serving, and ordinary model work (numpy, scikit-learn, threads, /tmp, the bundle) must
still run.  Needs root, as the confinement does: without it the gateway says so loudly
and these tests are skipped (CI runs as root).
"""
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.client import ClientError
from tests import models
from tests.helpers import (
    GatewayProcess,
    make_state_dir,
    remove_state_dir,
    running_gateway,
    sagemaker_clients,
    serverless_endpoint,
    wait_until,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox confinement needs a root gateway")


def _model_zygote_ready(c, name):
    v = c.describe(name)["variants"][0]
    return any(m["alive"] and f"/{name}/v{v['bundle_version']}" in m["bundle"] for m in c.zygotes()["models"])


def _call(c, name, payload):
    return c.invoke(name, payload)


def _on_path(gw, name, model, path, payload, memory_mb=1024):
    """Deploy ``model`` and invoke it once so the invocation cold-starts on ``path``."""
    c = gw.client()
    c.deploy(name, model, memory_mb=memory_mb)
    out = _call(c, name, payload)                          # first call: a base zygote stem (or fresh)
    if path == "model-zygote":
        assert wait_until(lambda: _model_zygote_ready(c, name), timeout=60)
        c.scale_in(name)
        out = _call(c, name, payload)
    rec = c.usage(endpoint=name)[-1]
    assert rec["cold_start"] and rec["start_path"] == path, rec
    return out


@pytest.fixture(scope="module")
def fresh_only():
    """A gateway without zygotes: every sandbox a fresh interpreter."""
    with running_gateway("--timeout", "20", "--no-zygotes") as gw:
        yield gw


PATHS = ["fresh", "zygote", "model-zygote"]


def _gw(path, gateway, fresh_only):
    return fresh_only if path == "fresh" else gateway


@pytest.mark.parametrize("path", PATHS)
def test_a_model_cannot_read_the_gateways_secrets_or_the_host(path, gateway, fresh_only):
    gw = _gw(path, gateway, fresh_only)
    name = f"steal-{path}"
    token = gw.state_dir / "admin-token"
    assert token.exists()
    assert _on_path(gw, name, models.reads, path, str(token)) == {"error": "FileNotFoundError"}
    c = gw.client()
    for target in (gw.state_dir / "slimserve.db", gw.state_dir / "sandboxes", Path.home() / ".aws" / "credentials",
                   Path(__file__)):
        assert _call(c, name, str(target)) == {"error": "FileNotFoundError"}, target
    assert _call(c, name, "/etc/shadow") == {"error": "PermissionError"}      # there, but not for this uid


@pytest.mark.parametrize("path", PATHS)
def test_a_model_cannot_write_the_host_or_reach_the_docker_engine(path, gateway, fresh_only):
    gw = _gw(path, gateway, fresh_only)
    name = f"write-{path}"
    assert _on_path(gw, name, models.writes, path, "/etc/slimserve-pwned") == {"error": "OSError"}   # read-only
    c = gw.client()
    assert not Path("/etc/slimserve-pwned").exists()
    for target in (str(gw.state_dir / "pwned"), "/usr/lib/pwned", "/opt/ml/model/pwned"):
        assert "error" in _call(c, name, target), target
    assert not (gw.state_dir / "pwned").exists()
    c.deploy(f"dock-{path}", models.docker_socket, memory_mb=1024)
    assert _call(c, f"dock-{path}", 0) == {"error": "FileNotFoundError"}


@pytest.mark.parametrize("path", PATHS)
def test_a_sandbox_is_unprivileged_and_still_does_what_models_do(path, gateway, fresh_only):
    gw = _gw(path, gateway, fresh_only)
    me = _on_path(gw, f"id-{path}", models.identity, path, 0)
    assert me["uid"] >= 1000 and me["gid"] >= 1000 and me["groups"] == []
    assert int(me["cap_eff"], 16) == 0 and int(me["cap_bnd"], 16) == 0
    assert me["no_new_privs"] == "1" and me["seccomp"] == "2"
    assert me["root"] == sorted(me["root"]) and "run" not in me["root"] and "var" not in me["root"]
    assert me["bundle"] == ["model.pkl"]
    assert me["tmp_size"] == 512 << 20                        # half the 1024 MB tier
    assert me["thread"] == [45] and me["sklearn"] == 1
    assert not any(k.startswith(("AWS_", "SLIMSERVE_")) for k in me["env_keys"])
    if path == "model-zygote":
        assert me["procs"] == [1]                             # PID 1 of a namespace of its own
    else:
        assert me["procs"] == [me["pid"]]                      # hidepid: only its own processes
    sb = gw.client().describe(f"id-{path}")["variants"][0]["pool"]["sandboxes"][-1]
    assert {"view", "uid", "seccomp"} <= set(sb["protections"]["applied"])
    assert sb["protections"]["uid"] == me["uid"]


@pytest.mark.parametrize("path", PATHS)
def test_syscalls_a_model_never_needs_are_refused(path, gateway, fresh_only):
    gw = _gw(path, gateway, fresh_only)
    out = _on_path(gw, f"sys-{path}", models.syscalls, path, 0)
    assert out == {"unshare_user": "EPERM", "mount": "EPERM", "ptrace_attach_1": "EPERM", "keyctl": "EPERM"}


def test_one_sandbox_cannot_signal_another_or_read_its_environment(gateway):
    c = gateway.client()
    c.deploy("victim", models.sleeps, memory_mb=1024)
    assert _call(c, "victim", 0) == 0
    victim = c.describe("victim")["variants"][0]["pool"]["sandboxes"][0]["pid"]
    c.deploy("attacker", models.touches_pid, memory_mb=1024)
    assert _call(c, "attacker", victim) == {"signal": "PermissionError", "environ": "FileNotFoundError"}
    assert _call(c, "attacker", os.getpid()) == {"signal": "PermissionError", "environ": "FileNotFoundError"}
    assert _call(c, "victim", 0) == 0                           # untouched


def test_tmp_is_capped_by_the_tier_not_the_host_disk(gateway):
    c = gateway.client()
    c.deploy("filler", models.fills_tmp, memory_mb=1024)
    out = _call(c, "filler", 5120)
    assert out == {"written_mb": 512, "error": "No space left on device"}
    assert _call(c, "filler", 16) == {"written_mb": 16}         # the sandbox is still healthy
    c.deploy("bystander", models.echo, memory_mb=1024)
    assert _call(c, "bystander", 1) == {"echo": 1}


def _processes_with(marker: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(pid))
            except OSError:
                pass
    return out


def test_a_fork_bomb_fails_inside_its_sandbox_and_destroy_kills_every_process(fresh_gateway):
    gw = fresh_gateway("--sandbox-pids-max", "64")
    gw.wait_for_zygote()
    c = gw.client()
    c.deploy("bomb", models.fork_bomb, memory_mb=1024)
    out = _call(c, "bomb", 1000)
    assert out["forked"] < 64 and out["error"] == 11              # EAGAIN at pids.max
    c.deploy("other", models.echo, memory_mb=1024)
    assert _call(c, "other", 2) == {"echo": 2}                    # the gateway keeps serving
    marker = "777.%d" % (time.time_ns() % 10 ** 6)
    c.deploy("orphans", models.leaves_a_child, memory_mb=1024)
    _call(c, "orphans", marker)
    assert _processes_with(marker)                               # it outlived the call, in a session of its own
    c.delete("orphans")
    assert wait_until(lambda: not _processes_with(marker), timeout=10)
    c.delete("bomb")


def test_a_restart_kills_what_a_killed_gateway_left_and_nothing_of_another_gateway(fresh_gateway):
    other_state = make_state_dir()
    other = GatewayProcess(other_state).start()
    try:
        other.wait_for_zygote()
        theirs = "778.%d" % (time.time_ns() % 10 ** 6)
        other.client().deploy("keep", models.leaves_a_child, memory_mb=1024)
        other.client().invoke("keep", theirs)
        gw = fresh_gateway()
        gw.wait_for_zygote()
        ours = "779.%d" % (time.time_ns() % 10 ** 6)
        gw.client().deploy("left", models.leaves_a_child, memory_mb=1024)
        gw.client().invoke("left", ours)
        assert _processes_with(ours) and _processes_with(theirs)
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        fresh_gateway()                                       # the same state dir: the same cgroup subtree
        assert wait_until(lambda: not _processes_with(ours), timeout=20)
        assert _processes_with(theirs)                         # another gateway's sandboxes are not ours to kill
        assert other.client().invoke("keep", "1") is not None
    finally:
        other.stop()
        remove_state_dir(other_state)


def test_doctor_reports_each_protection(gateway):
    rep = gateway.client().doctor()
    for key in ("sandbox_uid", "filesystem_view", "private_tmp", "pids_limit", "seccomp", "network_isolation",
                "process_isolation", "replica_isolation", "memory_cap"):
        assert rep[key]["ok"] is True, (key, rep[key])
        assert rep[key]["detail"]


def test_allow_network_says_what_it_reopens(fresh_gateway):
    gw = fresh_gateway("--allow-network")
    rep = gw.client().doctor()
    assert rep["network_isolation"]["ok"] is False
    assert "abstract Unix sockets" in rep["network_isolation"]["detail"]


def test_deploy_trial_load_is_confined(gateway):
    """The trial load at deploy runs the bundle's __reduce__: a pickle that reads the token
    at load time fails to load (no token in its view), and the deploy is refused."""
    c = gateway.client()
    with pytest.raises(ClientError) as err:
        c.deploy("reduce", _ReadsAtLoad(str(gateway.state_dir / "admin-token")), memory_mb=1024)
    assert "admin-token" in err.value.message and "No such file" in err.value.message


class _ReadsAtLoad:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path,))

    def __call__(self, x):
        return x



def test_nothing_the_gateway_had_open_reaches_a_fresh_sandbox(fresh_only):
    fds = _on_path(fresh_only, "fds-fresh", models.open_fds, "fresh", 0)
    assert all(t.startswith(("pipe:", "socket:", "anon_inode:")) or t == "/dev/null" for t in fds.values()), fds


@pytest.mark.parametrize("path", PATHS)
def test_a_model_cannot_erase_or_bloat_its_log(path, gateway, fresh_only):
    gw = _gw(path, gateway, fresh_only)
    name = f"logs-{path}"
    out = _on_path(gw, name, models.attacks_its_log, path, 1)
    assert out["truncate"] != "done" and out["fallocate"] != "done"
    log = gw.state_dir / "logs" / f"{name}.log"
    assert wait_until(lambda: "still-logging-1" in log.read_text(), timeout=10)
    assert "--- sandbox" in log.read_text()                  # the gateway's own lines are still there
    assert log.stat().st_size < 1 << 20


def test_an_answer_over_the_limit_is_refused_and_the_sandbox_stays(gateway):
    c = gateway.client()
    c.deploy("big", models.big_answer, memory_mb=1024)
    assert len(_call(c, "big", 1)) == 1 << 20
    with pytest.raises(ClientError) as err:
        _call(c, "big", 7)
    assert err.value.status == 424 and "over the limit of 4194304 bytes" in err.value.message   # serverless
    assert len(_call(c, "big", 0.5)) == 1 << 19
    assert [u["cold_start"] for u in c.usage(endpoint="big")] == [True, False, False]


def test_a_sandbox_announcing_a_huge_frame_is_cut_off_before_it_is_read(gateway):
    import psutil

    c = gateway.client()
    c.deploy("forger", models.forges_a_huge_frame, memory_mb=1024)
    with pytest.raises(ClientError) as err:
        _call(c, "forger", 0)
    assert err.value.status == 424 and "over the limit" in err.value.message
    assert psutil.Process(gateway.proc.pid).memory_info().rss < 400 << 20
    c.deploy("after-forger", models.echo, memory_mb=1024)
    assert _call(c, "after-forger", 5) == {"echo": 5}


def test_a_models_environment_never_reaches_a_root_process(fresh_only, tmp_path):
    """PYTHONPATH, LD_PRELOAD … in a model's Environment are the model's to set, once it is confined:
    a fresh worker starts with the gateway's environment and gets the model's after protecting itself."""
    marker = tmp_path / "ran-as-root"
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.pkl").write_bytes(__import__("gateway.client").client.pickle_model(models.reads_env))
    (model_dir / "sitecustomize.py").write_text(
        f"import os\nif os.getuid() == 0:\n    open({str(marker)!r}, 'w').write('root')\n")
    bundle = fresh_only.state_dir / "bundles" / "envy" / "v1"        # where the gateway will unpack it
    sm, rt = sagemaker_clients(fresh_only.url)
    serverless_endpoint(sm, "envy", {
        "ModelDataUrl": str(model_dir),
        "Environment": {"PYTHONPATH": str(bundle), "LD_PRELOAD": str(bundle / "nope.so"), "MARK": "seen"}})
    body = rt.invoke_endpoint(EndpointName="envy", Body=b'"MARK"', ContentType="application/json")["Body"].read()
    assert body == b"seen"                                    # the model still gets its environment
    assert not marker.exists()


def test_a_start_answered_with_unreadable_json_leaves_nothing_running(gateway):
    import psutil

    c = gateway.client()
    gw = psutil.Process(gateway.proc.pid)
    before = {p.pid for p in gw.children(recursive=True)}
    with pytest.raises(ClientError) as err:
        c.deploy("nested", models.SendsNestedJsonAtLoad(), memory_mb=1024)
    assert err.value.status == 400 and "exited while loading" in err.value.message
    # the trial load's sandbox was destroyed, not left sleeping: a failed deploy makes no model zygote,
    # so no process of a sandbox uid is left among the gateway's children
    assert wait_until(lambda: not [p for p in gw.children(recursive=True)
                                   if p.pid not in before and _uid(p) != 0 and p.status() != "zombie"], timeout=15)
    c.deploy("after-nested", models.echo, memory_mb=1024)
    assert c.invoke("after-nested", 1) == {"echo": 1}


def _uid(p):
    try:
        return p.uids().real
    except Exception:  # noqa: BLE001 - gone
        return 0



def test_an_answer_sent_ahead_of_its_request_is_refused_and_run_time_is_the_gateways(gateway):
    """Model code runs in the worker's process, so what it reports is not believed: an answer
    that is not for the request just sent (written ahead, to claim no time or to answer a request
    it has not seen) stops the sandbox, and the run time billed is measured by the gateway."""
    c = gateway.client()
    c.deploy("ahead", models.answers_ahead, memory_mb=1024)
    with pytest.raises(ClientError) as err:
        c.invoke("ahead", 1)
    assert err.value.status == 424 and "not for this request" in err.value.message
    assert c.usage(endpoint="ahead")[0]["status"] == "ModelError"
    c.deploy("liar", models.lies_about_time, memory_mb=1024)
    assert c.invoke("liar", 1) == b"ran"
    rec = c.usage(endpoint="liar")[0]
    assert rec["model_ms"] >= 300 and rec["billed_ms"] >= 300           # the 0.3 s it really ran
