"""AWS-style access keys: the pair a gateway generates at first start, the scoped keys an
operator gives, and how slimserve's own clients find theirs.

A gateway's generated pair lives in ``<state-dir>/credentials.json`` (mode 0600), beside the
admin token.  Clients look, in order, at the standard AWS places — the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), then the shared credentials file's
profile (``AWS_PROFILE``, else ``default``) — and then at a state dir's generated pair.
"""
from __future__ import annotations

import configparser
import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "credentials.json"
SCOPES = ("all", "read")


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: str
    scope: str = "all"          # "all", or "read": invoke, Describe* and List* only


def parse(spec: str) -> AccessKey:
    """``ID:SECRET`` or ``ID:SECRET:SCOPE``."""
    parts = spec.strip().split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"access key {parts[0] or spec!r} must be given as ID:SECRET or ID:SECRET:SCOPE")
    scope = parts[2] if len(parts) == 3 else "all"
    if scope not in SCOPES:
        raise ValueError(f"access key {parts[0]}: scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return AccessKey(parts[0], parts[1], scope)


def generate() -> AccessKey:
    alphabet = string.ascii_uppercase + string.digits
    key_id = "SLIM" + "".join(secrets.choice(alphabet) for _ in range(16))
    return AccessKey(key_id, secrets.token_urlsafe(30))


def ensure(state_dir: Path) -> AccessKey:
    """The gateway's generated key pair, made at first start (0600, written atomically)."""
    path = Path(state_dir) / FILE_NAME
    found = read(path)
    if found is not None:
        return found
    key = generate()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"aws_access_key_id": key.key_id, "aws_secret_access_key": key.secret}, fh)
    os.replace(tmp, path)
    return key


def read(path: Path) -> AccessKey | None:
    try:
        doc = json.loads(Path(path).read_text())
        return AccessKey(doc["aws_access_key_id"], doc["aws_secret_access_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find(state_dir: str | os.PathLike | None = None) -> AccessKey | None:
    """A client's key: the environment, the shared credentials file, then ``state_dir``'s pair."""
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return AccessKey(key_id, secret)
    shared = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials")
    profile = os.environ.get("AWS_PROFILE") or "default"
    cp = configparser.ConfigParser()
    try:
        cp.read(shared)
        if cp.has_option(profile, "aws_access_key_id") and cp.has_option(profile, "aws_secret_access_key"):
            return AccessKey(cp.get(profile, "aws_access_key_id"), cp.get(profile, "aws_secret_access_key"))
    except configparser.Error:
        pass
    if state_dir is not None:
        return read(Path(state_dir) / FILE_NAME)
    return None
