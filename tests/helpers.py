"""Test helpers: a real gateway in a subprocess, and small model bundles."""
from __future__ import annotations

import contextlib
import csv
import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTEN_RE = re.compile(r"listening on (http://[\d.]+:\d+)")


# The access keys the tests' boto3 clients sign with (the conftest environment's, and those the
# tests name), accepted unless a test gives keys of its own or asks for the generated pair (keys=False).
TEST_KEYS = ("testing:testing", "test:test", "x:x")


class GatewayProcess:
    """``slimserve serve`` on an ephemeral port with its own state dir; SigV4 with ``TEST_KEYS``
    (``keys=False``: the pair the gateway generates), local model data under the temp dir."""

    def __init__(self, state_dir: Path, *extra: str, keys: bool = True, env: dict | None = None):
        self.state_dir = Path(state_dir)
        self.extra = list(extra)
        self.env = dict(env or {})           # set (a value) or removed (None) in the gateway's environment
        if keys and "--access-key" not in self.extra and "--auth" not in self.extra:
            self.extra += [a for k in TEST_KEYS for a in ("--access-key", k)]
        if "--model-root" not in self.extra:
            self.extra += ["--model-root", tempfile.gettempdir()]
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 30.0) -> "GatewayProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", "0", "--state-dir", str(self.state_dir),
             *self.extra],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        found = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.output.append(line)
                m = LISTEN_RE.search(line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.output))
        return self

    def wait_for_zygote(self, timeout: float = 60.0) -> dict:
        """Until the base zygote is ready (it imports numpy and scikit-learn first)."""
        c = self.client()
        state = wait_until(lambda: (z := c.zygotes()).get("base") and z["base"]["alive"] and z, timeout=timeout)
        if not state:
            raise RuntimeError("the base zygote did not come up")
        return state

    def cli_env(self) -> dict:
        """The environment a ``slimserve`` command needs to reach this gateway."""
        return dict(os.environ, PYTHONPATH=str(ROOT), SLIMSERVE_URL=self.url, SLIMSERVE_STATE_DIR=str(self.state_dir))

    def client(self):
        from gateway.client import Client

        return Client(self.url, state_dir=self.state_dir)

    def boto(self, retries: int = 0):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "sagemaker-runtime", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": retries + 1, "mode": "standard"},
                          read_timeout=120, connect_timeout=10, max_pool_connections=64),
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def make_state_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="slimserve-test-"))


def remove_state_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` (a test-only convenience; the product waits on events)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def answered_until_killed(gw: "GatewayProcess", endpoint: str, clients: int, at_least: int,
                          timeout: float = 90.0) -> list[str]:
    """Invoke ``endpoint`` from ``clients`` threads until ``at_least`` answers have come back,
    then ``kill -9`` the gateway under them; returns the request ids that were answered."""
    from concurrent.futures import ThreadPoolExecutor

    boto = gw.boto()
    answered: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def loop():
        while not stop.is_set():
            try:
                r = boto.invoke_endpoint(EndpointName=endpoint, Body=b"1", ContentType="application/json")
                r["Body"].read()
            except Exception:  # noqa: BLE001 - the gateway is killed under us: expected
                return
            with lock:
                answered.append(r["ResponseMetadata"]["RequestId"])

    with ThreadPoolExecutor(clients) as ex:
        futs = [ex.submit(loop) for _ in range(clients)]
        reached = wait_until(lambda: len(answered) >= at_least, timeout=timeout)
        gw.kill9()
        stop.set()
        for f in futs:
            f.result()
    assert reached, f"only {len(answered)} answers before the kill"
    with lock:
        return list(answered)


def sagemaker_clients(url: str, key: str = "x", secret: str = "x"):
    """boto3's SageMaker and SageMaker Runtime clients for a test gateway (one attempt each)."""
    import boto3
    from botocore.config import Config

    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
              config=Config(retries={"total_max_attempts": 1}))
    return boto3.client("sagemaker", **kw), boto3.client("sagemaker-runtime", **kw)


def serverless_endpoint(sm, name: str, container: dict, memory_mb: int = 1024, delay: float = 0.2) -> None:
    """CreateModel, CreateEndpointConfig (one serverless variant) and CreateEndpoint, all named
    ``name``; returns once the endpoint is InService."""
    sm.create_model(ModelName=name, PrimaryContainer=container)
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": name,
         "ServerlessConfig": {"MemorySizeInMB": memory_mb, "MaxConcurrency": 2}}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": delay, "MaxAttempts": 200})


@contextlib.contextmanager
def running_gateway(*extra: str, keys: bool = True, zygote: bool = False, env: dict | None = None):
    """A gateway of its own state dir for a ``with`` block (or a fixture's ``yield``): stopped and
    its state removed afterwards, whatever happened; ``zygote``: wait for the base zygote first."""
    state = make_state_dir()
    gw = GatewayProcess(state, *extra, keys=keys, env=env).start()
    try:
        if zygote:
            gw.wait_for_zygote()
        yield gw
    finally:
        gw.stop()
        remove_state_dir(state)


def write_trace(path, rows):
    """A trace CSV (or .csv.gz) of ``endpoint,start_s,duration_ms,memory_mb`` rows."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["endpoint", "start_s", "duration_ms", "memory_mb"])
        w.writerows(rows)
    return path


def load_parser():
    """What the CLI builds for ``slimserve load``: --url and --state-dir, then the command's own flags."""
    import argparse

    from gateway.load import command

    p = argparse.ArgumentParser(prog="slimserve load")
    p.add_argument("--url", default=None)
    p.add_argument("--state-dir", default=None)
    command.add_arguments(p)
    return p
