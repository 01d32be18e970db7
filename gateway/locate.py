"""Where a client finds the gateway and its state dir, the way users expect.

The state dir (the admin token, the generated access key): ``--state-dir``, else
``$SLIMSERVE_STATE_DIR``, else ``./.slimserve`` when it exists, else the gateway this user
started last (``serve`` notes it in ``~/.config/slimserve/current.json``, or under
``$XDG_CONFIG_HOME``).  The URL: ``--url``, else ``$SLIMSERVE_URL``, else the one the state
dir's gateway wrote into it (``gateway.json``), else http://127.0.0.1:8080.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.config import DEFAULT_STATE_DIR

DEFAULT_URL = "http://127.0.0.1:8080"
GATEWAY_FILE = "gateway.json"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "slimserve"


def _private(path: Path) -> bool:
    """Ours alone: owned by this user and writable by no one else (not a planted file or link)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022 and not os.path.islink(path)


def _read(path: Path) -> dict:
    if not _private(path) or not _private(path.parent):
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _running(doc: dict) -> bool:
    """The note's gateway is still the process that wrote it: a stale note (the gateway was killed)
    must not send the admin token to whatever listens on that port now."""
    pid = doc.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    return uid == os.geteuid() and b"serve" in argv and any(b"gateway" in a or b"slimserve" in a for a in argv)


def state_dir(given: str | os.PathLike | None = None) -> Path | None:
    if given:
        return Path(given).resolve()
    if os.environ.get("SLIMSERVE_STATE_DIR"):
        return Path(os.environ["SLIMSERVE_STATE_DIR"]).resolve()
    here = Path(DEFAULT_STATE_DIR)
    if here.is_dir():
        return here.resolve()
    note = _read(config_dir() / "current.json")
    last = note.get("state_dir")
    return Path(last) if isinstance(last, str) and Path(last).is_dir() and _running(note) else None


def url(given: str | None = None, state: Path | None = None) -> str:
    if given:
        return given.rstrip("/")
    if os.environ.get("SLIMSERVE_URL"):
        return os.environ["SLIMSERVE_URL"].rstrip("/")
    note = _read(state / GATEWAY_FILE) if state is not None else {}
    noted = note.get("url") if _running(note) else None
    return noted.rstrip("/") if isinstance(noted, str) and noted.startswith("http") else DEFAULT_URL


def s3_url(state: Path | None) -> str | None:
    """The local S3 server of the state dir's gateway (``serve --s3 local``): where it listens
    now, else the port it keeps between runs; None if that gateway never ran one."""
    if state is None:
        return None
    note = _read(state / GATEWAY_FILE)
    if _running(note) and isinstance(note.get("s3_url"), str):
        return note["s3_url"]
    port = (_read(state / "s3" / "server.json").get("ports") or {}).get("s3")
    return f"http://127.0.0.1:{port}" if isinstance(port, int) else None


def note_started(state: Path, gateway_url: str, s3_url: str | None = None) -> None:
    """``serve``: write where this gateway (and its local S3 server, if it runs one) listens into
    its state dir, and note it as this user's current gateway (owner-only files: they name where
    the admin token is)."""
    doc = {"url": gateway_url, "state_dir": str(state.resolve()), "pid": os.getpid()}
    if s3_url:
        doc["s3_url"] = s3_url
    _write(state / GATEWAY_FILE, doc)
    try:
        config_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        if _private(config_dir()):            # never into a directory someone else can write
            _write(config_dir() / "current.json", doc)
    except OSError:
        pass                                  # no writable home: clients use --state-dir


def note_stopped(state: Path) -> None:
    for path in (state / GATEWAY_FILE, config_dir() / "current.json"):
        if _read(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)               # a planted file or link is removed, never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)
