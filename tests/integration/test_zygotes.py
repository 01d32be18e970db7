"""Cold starts forked from zygotes: the path taken, isolation kept, and failures absorbed."""
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import models
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def rf():
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    return RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y), X


def _invoke(gw, name, body=b"[[5.1, 3.5, 1.4, 0.2]]"):
    r = gw.boto().invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")
    return json.loads(r["Body"].read())


def _model_zygote_ready(c, name):
    bundle = c.describe(name)["variants"][0]
    return any(m["alive"] and f"/{name}/v{bundle['bundle_version']}" in m["bundle"] for m in c.zygotes()["models"])


def test_cold_starts_take_the_zygote_then_the_model_zygote_path(gateway, rf):
    model, X = rf
    c = gateway.client()
    c.deploy("zy-rf", model, memory_mb=2048)
    assert _invoke(gateway, "zy-rf", json.dumps(X[:3].tolist())) == model.predict(X[:3]).tolist()
    first = c.usage(endpoint="zy-rf")[-1]
    assert first["cold_start"] and first["start_path"] == "zygote"
    detail = json.loads(first["init_detail"])
    for phase in ("fork_ms", "cgroup_ms", "netns_ms", "load_ms", "first_predict_ms", "total_ms"):
        assert phase in detail and detail[phase] >= 0
    assert detail["load_ms"] > 0
    # the endpoint has traffic: a model zygote with the model loaded appears, and later cold starts use it
    assert wait_until(lambda: _model_zygote_ready(c, "zy-rf"), timeout=30)
    c.scale_in("zy-rf")
    assert _invoke(gateway, "zy-rf") == [0]
    rec = c.usage(endpoint="zy-rf")[-1]
    assert rec["cold_start"] and rec["start_path"] == "model-zygote"
    assert json.loads(rec["init_detail"])["load_ms"] < detail["load_ms"]     # nothing left to load
    sandboxes = c.describe("zy-rf")["variants"][0]["pool"]["sandboxes"]
    assert [s["start_path"] for s in sandboxes] == ["model-zygote"]
    assert sandboxes[0]["protections"]["applied"][:3] == ["pdeathsig", "cgroup", "netns"]
    text = __import__("urllib.request").request.urlopen(gateway.url + "/metrics").read().decode()
    assert 'slimserve_cold_start_phase_seconds_count{path="model-zygote",phase="first_predict"}' in text


def test_forked_sandboxes_keep_the_memory_cap_crash_and_timeout_behaviour(gateway):
    c = gateway.client()
    boto = gateway.boto()
    for name, fn in (("zy-bomb", models.allocates), ("zy-exit", models.exits), ("zy-hang", models.hangs)):
        c.deploy(name, fn, memory_mb=1024)
    with pytest.raises(boto.exceptions.ModelError) as exc:
        _invoke(gateway, "zy-bomb", b"1536")
    assert "1024 MB" in exc.value.response["Error"]["Message"]
    assert _invoke(gateway, "zy-bomb", b"100") == 100 << 20
    with pytest.raises(boto.exceptions.ModelError) as exc:
        _invoke(gateway, "zy-exit")
    assert "exit code 7" in exc.value.response["Error"]["Message"]
    with pytest.raises(boto.exceptions.ModelError) as exc:
        _invoke(gateway, "zy-hang")
    assert "timed out" in exc.value.response["Error"]["Message"]
    recs = {}
    for u in c.usage():
        recs.setdefault(u["endpoint"], []).append(u)
    assert recs["zy-bomb"][0]["error_kind"] == "out_of_memory"
    assert recs["zy-exit"][0]["error_kind"] == "exited" and recs["zy-hang"][0]["error_kind"] == "timeout"
    paths = {u["start_path"] for name in ("zy-bomb", "zy-exit", "zy-hang") for u in recs[name] if u["cold_start"]}
    assert paths <= {"zygote", "model-zygote"} and paths


def test_forked_sandboxes_get_their_own_random_state(gateway):
    c = gateway.client()
    c.deploy("zy-rand", models.randoms, memory_mb=1024)
    a = _invoke(gateway, "zy-rand", b"0")
    c.scale_in("zy-rand")
    b = _invoke(gateway, "zy-rand", b"0")
    assert a[0] != b[0] and a[1] != b[1]


def _pids(c):
    z = c.zygotes()
    return z["base"]["pid"], [m["pid"] for m in z["models"]]


def test_zygote_killed_mid_traffic_is_replaced_with_no_failed_request(fresh_gateway, rf):
    model, _ = rf
    gw = fresh_gateway()
    gw.wait_for_zygote()
    c = gw.client()
    c.deploy("zy-live", model, memory_mb=2048, max_concurrency=50)
    _invoke(gw, "zy-live")
    assert wait_until(lambda: _model_zygote_ready(c, "zy-live"), timeout=30)
    base_pid, model_pids = _pids(c)
    errors, done = [], []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                done.append(_invoke(gw, "zy-live"))
            except Exception as exc:  # noqa: BLE001 - any failure fails the test below
                errors.append(exc)

    def churn():                 # keep forcing cold starts, so forks are in flight when the zygotes die
        while not stop.is_set():
            c.scale_in("zy-live")

    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(traffic) for _ in range(3)] + [ex.submit(churn)]
        wait_until(lambda: len(done) > 30, timeout=30)
        for pid in model_pids + [base_pid]:
            os.kill(pid, signal.SIGKILL)
        n = len(done)
        wait_until(lambda: len(done) > n + 60, timeout=60)
        stop.set()
        for f in futs:
            f.result()
    assert errors == []
    new_base = wait_until(lambda: (z := c.zygotes())["base"] and z["base"]["alive"] and z["base"]["pid"] != base_pid
                          and z, timeout=30)
    assert new_base and new_base["base"]["restarts"] >= 1
    # the replacement zygotes are used again
    assert wait_until(lambda: _model_zygote_ready(c, "zy-live"), timeout=30) or _invoke(gw, "zy-live") == [0]
    # pre-warms the churn set off may still be starting: let them land, so the scale-in leaves nothing warm
    wait_until(lambda: not c.describe("zy-live")["variants"][0]["pool"]["states"].get("starting"), timeout=30)
    c.scale_in("zy-live")
    _invoke(gw, "zy-live")
    assert c.usage(endpoint="zy-live")[-1]["start_path"] in ("zygote", "model-zygote")


def test_a_zygote_with_threads_refuses_to_fork_and_the_fresh_path_serves(fresh_gateway):
    gw = fresh_gateway("--preload", "tests.thready")
    c = gw.client()
    base = wait_until(lambda: (z := c.zygotes())["base"] and z["base"], timeout=60)
    assert base and base["alive"] is False            # started, found a thread, not used
    c.deploy("zy-fresh", models.echo, memory_mb=1024)
    assert _invoke(gw, "zy-fresh", b"1") == {"echo": 1}
    assert c.usage(endpoint="zy-fresh")[-1]["start_path"] == "fresh"


def test_no_zygotes_flag_uses_fresh_interpreters(fresh_gateway):
    gw = fresh_gateway("--no-zygotes")
    c = gw.client()
    c.deploy("plain", models.echo, memory_mb=1024)
    assert _invoke(gw, "plain", b"2") == {"echo": 2}
    assert c.usage(endpoint="plain")[-1]["start_path"] == "fresh"
    assert c.zygotes()["base"] is None


# --- model zygotes stay within their limits -------------------------------------------------

def _models(c):
    return [m for m in c.zygotes()["models"] if m["alive"]]


def _pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_beyond_the_model_zygote_limit_a_bundle_started_more_often_displaces_the_least_recent(fresh_gateway, rf):
    model, _ = rf
    gw = fresh_gateway("--max-model-zygotes", "1")
    gw.wait_for_zygote()
    c = gw.client()
    c.deploy("zl-a", model, memory_mb=2048)
    c.deploy("zl-b", models.echo, memory_mb=1024)
    _invoke(gw, "zl-a")
    assert wait_until(lambda: _model_zygote_ready(c, "zl-a"), timeout=30)
    a_pid = _models(c)[0]["pid"]
    assert _models(c)[0]["own_memory_mb"] >= 1
    # zl-b's first cold start: as many as zl-a's, so no model zygote is made to displace it
    assert _invoke(gw, "zl-b", b"3") == {"echo": 3}
    time.sleep(3)
    assert [m["pid"] for m in _models(c)] == [a_pid] and c.zygotes()["model_limits"]["closed"] == 0
    # its second: now it starts more often than zl-a, whose model zygote gives way
    c.scale_in("zl-b")
    assert _invoke(gw, "zl-b", b"4") == {"echo": 4}
    assert wait_until(lambda: _model_zygote_ready(c, "zl-b"), timeout=30)
    assert wait_until(lambda: len(_models(c)) == 1 and _pid_gone(a_pid), timeout=10)
    assert not _model_zygote_ready(c, "zl-a")
    assert c.zygotes()["model_limits"]["closed"] == 1
    # zl-a still serves: its next cold start forks from the base zygote
    c.scale_in("zl-a")
    assert _invoke(gw, "zl-a") == [0]
    assert c.usage(endpoint="zl-a")[-1]["start_path"] == "zygote"


def test_an_idle_model_zygote_is_closed(fresh_gateway):
    gw = fresh_gateway("--model-zygote-idle", "2")
    gw.wait_for_zygote()
    c = gw.client()
    c.deploy("zl-idle", models.echo, memory_mb=1024)
    assert _invoke(gw, "zl-idle", b"1") == {"echo": 1}
    assert wait_until(lambda: _model_zygote_ready(c, "zl-idle"), timeout=30)
    pid = _models(c)[0]["pid"]
    assert wait_until(lambda: not _models(c) and _pid_gone(pid), timeout=15)
    assert c.zygotes()["model_limits"] == {"max_models": 16, "memory_mb": c.zygotes()["model_limits"]["memory_mb"],
                                           "idle_s": 2.0, "closed": 1}
    assert _invoke(gw, "zl-idle", b"2") == {"echo": 2}


def test_serve_refuses_bad_limits_and_policies_before_starting(tmp_path):
    import subprocess
    import sys

    for extra, words in ((["--max-model-zygotes", "-1"], "--max-model-zygotes"),
                         (["--model-zygote-idle", "0"], "--model-zygote-idle"),
                         (["--policy", "bogus"], "unknown policy")):
        r = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--state-dir", str(tmp_path), *extra],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_model_zygote_asked_for_a_fork_is_not_closed_and_closing_one_frees_its_caller_at_once():
    import asyncio
    import socket
    import sys

    from runtime.process.zygote_handle import ZygoteHandle, ZygoteUnavailable
    from runtime.process.zygotes import ZygoteConfig, ZygoteSet

    async def scenario():
        zs = ZygoteSet(ZygoteConfig(max_models=0))            # a limit that closes every model zygote
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        # a stand-in zygote that holds the other end of the channel and never answers
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)",
                                                    pass_fds=(theirs.fileno(),))
        theirs.close()
        handle = zs.templates[("bundle", 1024)] = ZygoteHandle("model:x", proc, ours, {})
        old_fd = ours.fileno()
        fork = asyncio.ensure_future(handle.assign({"x": 1}, []))
        await asyncio.sleep(0.1)                                # asked; no reply yet
        await zs.enforce_limits()
        assert ("bundle", 1024) in zs.templates and handle.alive   # not closed mid-fork
        t0 = time.monotonic()
        await zs.close()
        with pytest.raises(ZygoteUnavailable):
            await fork
        assert time.monotonic() - t0 < 3                        # not the 10 s reply timeout
        # the next socket may take the closed channel's file number; the loop must serve it
        a, b = socket.socketpair()
        mine, other = (a, b) if a.fileno() == old_fd else (b, a)
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        other.sendall(b"hello\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"hello\n"
        writer.close()
        other.close()

    asyncio.run(scenario())


def test_no_model_zygote_is_made_when_the_limits_leave_no_room(fresh_gateway):
    gw = fresh_gateway("--max-model-zygotes", "0")
    gw.wait_for_zygote()
    c = gw.client()
    c.deploy("zl-none", models.echo, memory_mb=1024)
    for i in range(3):
        c.scale_in("zl-none")
        assert _invoke(gw, "zl-none", str(i).encode()) == {"echo": i}
    assert [r["start_path"] for r in c.usage(endpoint="zl-none")] == ["zygote"] * 3
    time.sleep(3)                        # long enough for a model zygote to be made (and closed)
    z = c.zygotes()
    assert z["models"] == [] and z["model_limits"]["closed"] == 0     # none made, so none closed


def test_the_base_zygote_writes_its_log_through_the_rotating_pipe(gateway):
    """Not into a file it holds: what it (or a stem before its assignment) prints is copied by the
    gateway at a bounded rate and rotated past 16 MB, as sandbox logs are."""
    zpid = gateway.client().zygotes()["base"]["pid"]
    assert os.readlink(f"/proc/{zpid}/fd/1").startswith("pipe:")
    assert os.readlink(f"/proc/{zpid}/fd/2").startswith("pipe:")
    assert (gateway.state_dir / "logs" / "_zygotes.log").exists()


def test_a_model_zygotes_memory_time_is_billed_to_its_endpoint_beside_idle_time(fresh_gateway):
    gw = fresh_gateway()
    gw.wait_for_zygote()
    c = gw.client()
    c.deploy("zm-bill", models.echo, memory_mb=1024)
    assert c.invoke("zm-bill", 1) == {"echo": 1}
    assert wait_until(lambda: _model_zygote_ready(c, "zm-bill"), timeout=30)
    held_mb = next(m["own_memory_mb"] for m in c.zygotes()["models"] if "/zm-bill/" in m["bundle"])
    time.sleep(3)
    gw.stop()                                   # the last checkpoint books what was held until then
    row = next(r for r in fresh_gateway().client().bill(by="endpoint")["rows"] if r["endpoint"] == "zm-bill")
    assert row["zygote_gb_s"] >= held_mb / 1024 * 2.0
    assert row["zygote_gb_s"] < held_mb / 1024 * 120.0
