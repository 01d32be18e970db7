"""The ``slimserve`` command line against a real gateway."""
import json
import os
import subprocess
import sys

import pytest

from gateway.client import pickle_model
from tests import models
from tests.helpers import ROOT


def run(gw, *args, check=True, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SLIMSERVE_URL=gw.url)
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--state-dir", str(gw.state_dir)],
                          capture_output=True, text=True, env=env, cwd=ROOT, input=stdin, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"slimserve {' '.join(args)} failed: {proc.stderr}")
    return proc


def test_cli_round_trip(gateway, tmp_path):
    pkl = tmp_path / "echo.pkl"
    pkl.write_bytes(pickle_model(models.echo))
    out = run(gateway, "deploy", "cli-echo", str(pkl), "--memory", "1024", "--tag", "team=cli").stdout
    assert "cli-echo" in out and "team=cli" in out
    assert json.loads(run(gateway, "invoke", "cli-echo", "--data", '{"k": 1}').stdout) == {"echo": {"k": 1}}
    body = tmp_path / "body.json"
    body.write_text("[3]")
    assert json.loads(run(gateway, "invoke", "cli-echo", "--file", str(body)).stdout) == {"echo": [3]}
    assert json.loads(run(gateway, "invoke", "cli-echo", "--file", "-", stdin="7").stdout) == {"echo": 7}

    usage = json.loads(run(gateway, "usage", "--format", "json", "--endpoint", "cli-echo").stdout)
    assert len(usage) == 3 and usage[0]["cold_start"] is True and usage[1]["cold_start"] is False
    assert {"endpoint", "variant", "memory_mb", "start", "billed_ms", "model_ms", "overhead_ms",
            "cold_start", "init_ms", "status"} <= set(usage[0])
    table = run(gateway, "usage", "--endpoint", "cli-echo").stdout
    assert table.splitlines()[0].split()[:3] == ["START", "ENDPOINT", "VARIANT"] and len(table.splitlines()) == 4

    eps = json.loads(run(gateway, "endpoints", "--format", "json").stdout)
    assert "cli-echo" in [e["name"] for e in eps]
    desc = run(gateway, "describe", "cli-echo").stdout
    assert "sandbox" in desc and "path " in desc and "cgroup" in desc
    assert "starting (1024 MB" in run(gateway, "logs", "cli-echo").stdout
    run(gateway, "update", "cli-echo", "--max-concurrency", "3")
    assert json.loads(run(gateway, "describe", "cli-echo", "--format", "json").stdout)[
        "variants"][0]["max_concurrency"] == 3
    assert "deleted cli-echo" in run(gateway, "delete", "cli-echo").stdout


def test_cli_errors_are_one_line_on_stderr_with_nonzero_exit(gateway, tmp_path):
    p = run(gateway, "invoke", "missing-endpoint", "--data", "1", check=False)
    assert p.returncode != 0 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "missing-endpoint" in p.stderr
    p = run(gateway, "deploy", "x", str(tmp_path / "nope.pkl"), "--memory", "1024", check=False)
    assert p.returncode != 0 and "does not exist" in p.stderr
    p = run(gateway, "deploy", "x", "y.pkl", "--memory", "1000", check=False)
    assert p.returncode == 2 and "1024" in p.stderr


def test_cli_doctor(gateway):
    rep = json.loads(run(gateway, "doctor", "--format", "json").stdout)
    assert rep["memory_cap"]["ok"] in (True, False) and rep["memory_cap"]["mechanism"]
    assert {"network_isolation", "gpu_hidden", "private_tmp"} <= set(rep)
    if os.geteuid() == 0:
        assert rep["network_isolation"]["ok"] is True
    table = run(gateway, "doctor").stdout
    assert "memory_cap" in table and "network_isolation" in table


@pytest.mark.parametrize("cmd", ["serve", "deploy", "invoke", "endpoints", "describe", "delete", "logs",
                                 "usage", "doctor", "update"])
def test_help_everywhere(cmd):
    p = subprocess.run([sys.executable, "-m", "gateway.cli", cmd, "--help"], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0 and "usage: slimserve" in p.stdout


def _bare(*args, cwd, env_extra=None):
    """``slimserve`` with no --url and no --state-dir, from ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLIMSERVE_URL", "SLIMSERVE_STATE_DIR",
                                                           "SLIMSERVE_TOKEN")}
    env.update(PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_client_commands_find_the_users_gateway_from_any_directory(tmp_path):
    from tests.helpers import running_gateway

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with running_gateway() as gw:
        assert not gw.url.endswith(":8080")                              # so the default URL would miss it
        gw.client().deploy("found", models.echo, memory_mb=1024)
        p = _bare("invoke", "found", "--data", "4", cwd=elsewhere)      # the gateway this user started last
        assert p.returncode == 0 and json.loads(p.stdout) == {"echo": 4}, p.stderr
        p = _bare("endpoints", cwd=elsewhere, env_extra={"SLIMSERVE_STATE_DIR": str(gw.state_dir)})
        assert p.returncode == 0 and "found" in p.stdout, p.stderr       # the URL from the state dir
        creds = _bare("credentials", cwd=elsewhere).stdout
        assert f"AWS_ENDPOINT_URL_SAGEMAKER={gw.url}\n" in creds
        assert f"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={gw.url}\n" in creds
        assert f"AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING={gw.url}\n" in creds
        listening = next(line for line in gw.output if "listening on" in line)
        assert f"(state in {gw.state_dir.resolve()})" in listening       # an absolute path, whatever was given
    assert not (gw.state_dir / "gateway.json").exists()                  # a stopped gateway is not found
    p = _bare("endpoints", cwd=elsewhere)
    assert p.returncode != 0 and "no admin token" in p.stderr and "slimserve serve" in p.stderr


def test_invoke_on_a_terminal_prints_a_whole_line(gateway):
    import pty

    gateway.client().deploy("tty-echo", models.echo, memory_mb=1024)
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), SLIMSERVE_URL=gateway.url)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "invoke", "tty-echo", "--data", "5",
                             "--state-dir", str(gateway.state_dir)], stdout=follower, stderr=follower,
                            env=env, cwd=ROOT)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(60) == 0
    os.close(leader)
    assert out.replace(b"\r\n", b"\n") == b'{"echo": 5}\n'


def test_a_stale_note_of_a_killed_gateway_is_not_followed(tmp_path):
    """After a kill -9 the notes stay behind; whatever listens on the old port now must not be
    sent the admin token."""
    import signal

    from tests.helpers import GatewayProcess

    state = tmp_path / "state"
    gw = GatewayProcess(state).start()
    url = gw.url
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(10)
    assert (state / "gateway.json").exists()                         # left behind
    from gateway import locate

    assert locate.url(None, state) == locate.DEFAULT_URL != url      # not followed: its pid is gone
    GatewayProcess(state).start().stop()                             # (and its cgroups are swept)


def test_serve_writes_its_notes_through_no_planted_link(tmp_path):
    from gateway import locate

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (state / "gateway.json.tmp").symlink_to(victim)
    locate.note_started(state, "http://127.0.0.1:1")
    assert victim.read_text() == "precious"
    assert json.loads((state / "gateway.json").read_text())["url"] == "http://127.0.0.1:1"
