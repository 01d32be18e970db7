"""The target model a request names (``X-Amzn-SageMaker-Target-Model``): a path relative to the
endpoint's prefix.  Pure: says whether a path may be looked up, never whether it exists."""
from __future__ import annotations

import re

from gateway.errors import Invalid

MAX_TARGET = 1024                  # botocore's TargetModel: 1-1024 characters
_PRINTABLE = re.compile(r"\A\S[\x20-\x7e\u00a0-\U0010ffff]*\Z")   # botocore's \A\S[\p{Print}]*\z, near enough
FILE_SUFFIXES = (".pkl", ".tar.gz")   # a single object; any other name is a model directory


def check(text) -> str:
    """``text`` as a relative path inside the prefix, or Invalid saying why it cannot be one."""
    if not isinstance(text, str) or not text:
        raise Invalid("The target model header must name a model: a path relative to the endpoint's model prefix.")
    if len(text) > MAX_TARGET:
        raise Invalid(f"Target model is {len(text)} characters long; at most {MAX_TARGET} are allowed.")
    if not _PRINTABLE.match(text) or "\\" in text:
        raise Invalid("Target model must be printable characters without backslashes.")
    if text.startswith("/"):
        raise Invalid(f"Target model {text} must be a path relative to the endpoint's model prefix, not absolute.")
    parts = text.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Invalid(f"Target model {text} must be a path inside the endpoint's model prefix "
                      "(no empty, '.' or '..' parts).")
    return text.rstrip("/")


def is_file(target: str) -> bool:
    """Whether the target names one object (a pickle or an archive) rather than a directory."""
    return target.endswith(FILE_SUFFIXES)
