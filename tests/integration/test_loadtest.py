"""``slimserve load``: short runs against a real gateway."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from gateway.load import command as loadtest
from tests import models
from tests.helpers import ROOT, load_parser, write_trace


def plan(*argv):
    return loadtest.build_plan(load_parser().parse_args(list(argv)))


@pytest.fixture(scope="module")
def endpoints(gateway):
    c = gateway.client()
    c.deploy("lt-echo", models.echo, memory_mb=1024)
    c.deploy("lt-sleep", models.sleeps, memory_mb=2048, max_concurrency=2)
    c.deploy("lt-slow", models.sleeps, memory_mb=1024)
    return gateway


def live_args(gw, *argv):
    return load_parser().parse_args(["--url", gw.url, "--state-dir", str(gw.state_dir), "--no-progress", *argv])


def test_burst_against_a_real_gateway(endpoints, tmp_path, capsys):
    out = tmp_path / "burst"
    args = live_args(endpoints, "lt-echo", "--pattern", "burst", "--base", "2", "--peak", "12", "--before", "1",
                     "--ramp", "1", "--hold", "1.5", "--ramp-down", "0", "--after", "1",
                     "--body", '{"x": [1, 2]}', "--out", str(out), "--format", "json")
    assert loadtest.run_from_args(args) == 0
    printed = json.loads(capsys.readouterr().out)
    doc = json.loads((out / "load.json").read_text())
    s = doc["summary"]
    assert printed["summary"] == s
    assert s["planned"] == doc["config"]["planned_requests"] == 2 + 7 + 18 + 2
    assert s["sent"] + s["dropped_client_cap"] + s["not_sent_interrupted"] == s["planned"]
    assert s["sent"] == s["planned"] and s["completed"] == s["sent"] and s["no_response"] == 0
    assert s["errors"] == 0 and s["errors_by_kind"] == {}
    assert s["ok"] + s["throttled"] == s["completed"]
    assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["max"] >= s["latency_ms"]["p99"] > 0
    assert s["warm_sandboxes"]["max"] >= 1
    assert s["usage"]["matched_records"] == s["sent"]
    assert s["usage"]["gb_s"] > 0 and s["cost"]["usd"] > 0
    assert s["cold_starts"] is not None
    assert len(doc["requests"]) == s["planned"] and all(r["cold_start"] is not None for r in doc["requests"])
    assert [r["t"] for r in doc["series"]] == list(range(len(doc["series"])))
    assert sum(r["offered"] for r in doc["series"]) == s["planned"]
    assert max(r["offered"] for r in doc["series"]) == 12
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 3 and "lt-echo" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def test_trace_replay_counts_throttles_apart_from_errors(endpoints, tmp_path, capsys):
    trace = write_trace(tmp_path / "t.csv", [("lt-sleep", 50.0 + i * 0.01, 400, 2048) for i in range(5)]
                        + [("lt-echo", 50.2, 1, 1024), ("lt-echo", 51.0, 1, 1024)])
    args = live_args(endpoints, "--trace", str(trace), "--map-endpoints", "--trace-body", "duration",
                     "--speedup", "2")
    assert loadtest.run_from_args(args) == 0
    text = capsys.readouterr().out
    assert "7 planned, 7 sent, 0 dropped" in text
    m = re.search(r"completed\s+7: (\d+) ok, (\d+) throttled, 0 other errors", text)
    assert m and int(m.group(2)) >= 1 and int(m.group(1)) + int(m.group(2)) == 7   # MaxConcurrency 2
    assert re.search(r"latency \(ok\)\s+p50 \S+ ms", text)


def test_unknown_endpoint_is_a_one_line_error(endpoints, capsys):
    assert loadtest.run_from_args(live_args(endpoints, "lt-no-such", "--duration", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lt-no-such" in err[0]


def test_the_slimserve_command(endpoints, tmp_path):
    from gateway.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "load" in sub.choices
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "load", "lt-echo", "--url", endpoints.url,
                           "--state-dir", str(endpoints.state_dir), "--rate", "4", "--duration", "1",
                           "--format", "json", "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)["summary"]
    assert s["sent"] == s["ok"] == 4
    assert (tmp_path / "cli" / "report.html").exists()


def test_client_timeouts_are_their_own_kind(endpoints, tmp_path):
    out = tmp_path / "slow"
    args = live_args(endpoints, "lt-slow", "--rate", "2", "--duration", "1", "--body", "1.5", "--timeout", "0.3",
                     "--out", str(out))
    assert loadtest.run_from_args(args) == 0
    s = json.loads((out / "load.json").read_text())["summary"]
    assert s["sent"] == 2 and s["completed"] == 0 and s["no_response"] == 2
    assert s["errors_by_kind"] == {"Timeout": 2} and s["ok"] == 0 and s["latency_ms"]["p50"] is None
