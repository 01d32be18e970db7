"""Shared by the benchmarks: start a gateway (or any server that prints its URL) and stop it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_server(argv: list[str], timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Run ``argv`` and wait for its 'listening on http://...' line."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        m = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if m:
            # Keep reading what it prints, or a full pipe would block the server mid-benchmark.
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{' '.join(argv[:5])} did not start")


def _drain(stream) -> None:
    for _ in stream:
        pass


_KEYS: dict[str, object] = {}          # gateway URL -> the access key its state dir generated
_OTHER = None


def start_gateway(state_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    from gateway.sagemaker import credentials

    proc, url = start_server([sys.executable, "-m", "gateway.cli", "serve", "--port", "0",
                              "--state-dir", str(state_dir), *extra])
    _KEYS[url] = credentials.read(Path(state_dir) / credentials.FILE_NAME)
    return proc, url


def signed(url: str, body: bytes, headers: dict | None = None) -> dict:
    """``headers`` signed (SigV4) for the gateway ``url`` belongs to; for any other server (a bare
    baseline) signed with a throwaway key, so both sides pay the same client-side cost."""
    from gateway.sagemaker import credentials, sigv4

    global _OTHER
    key = next((k for u, k in _KEYS.items() if url.startswith(u)), None)
    if key is None:
        _OTHER = _OTHER or credentials.generate()
        key = _OTHER
    return sigv4.sign_url("POST", url, body, key, "us-east-1", headers)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed_invocation(url: str, name: str, body: bytes, timeout: float = 300.0) -> float:
    """One signed JSON invocation of endpoint ``name``, timed by the client, in ms."""
    import urllib.request

    target = f"{url}/endpoints/{name}/invocations"
    req = urllib.request.Request(target, data=body, method="POST",
                                 headers=signed(target, body, {"Content-Type": "application/json"}))
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()
    return (time.perf_counter() - t0) * 1000.0


_S3_SCRIPT = """
import asyncio, sys
from pathlib import Path
from gateway.data.local_s3 import LocalS3, LocalS3Config
from gateway.sagemaker.credentials import AccessKey

async def main(root, key_id, secret):
    root = Path(root)
    server = LocalS3(LocalS3Config(root=root / "s3", log_path=root / "s3.log", keys=(AccessKey(key_id, secret),)))
    url = await server.start()
    print(f"listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()

asyncio.run(main(*sys.argv[1:]))
"""


def start_s3(root: Path) -> tuple[subprocess.Popen, str, object]:
    """A SeaweedFS S3 server of its own (``serve --s3 local``'s, in a process of its own: its
    forwarder's work is not the gateway's), and the access key it takes."""
    from gateway.sagemaker import credentials

    key = credentials.generate()
    Path(root).mkdir(parents=True, exist_ok=True)
    proc, url = start_server([sys.executable, "-c", _S3_SCRIPT, str(root), key.key_id, key.secret], timeout=120)
    return proc, url, key
