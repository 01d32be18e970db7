"""Where data lives, as the APIs name it: ``s3://bucket/key``, an S3 ``https://`` URL, a
``file://`` URL or a local path.  Parsing is pure: it decides what a location *is*, never
whether it exists or may be read (``model_data`` does that).

An ``http(s)://`` location is accepted only as the URL of an object in the configured S3
endpoint, path-style (``https://host/bucket/key``) or virtual-hosted (``https://bucket.host/key``);
with no endpoint configured, AWS's own S3 host names.  The gateway never fetches an arbitrary
URL: an accepted one is read through the S3 client as ``s3://bucket/key``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.errors import Invalid

# AWS's S3 hosts: s3.amazonaws.com, s3.<region>.amazonaws.com, s3-<region>.amazonaws.com,
# s3.dualstack.<region>.amazonaws.com (and .com.cn), each optionally with a "<bucket>." prefix.
_AWS_HOST = re.compile(r"^(?:(?P<bucket>.+)\.)?s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?$")
# S3's bucket naming rules (3-63 characters, lowercase letters, digits, dots and hyphens)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024                       # S3's limit on a key, in UTF-8 bytes


@dataclass(frozen=True)
class Location:
    """``scheme`` "s3" (``bucket``, ``key``) or "file" (``path``); ``text`` is what was given."""
    scheme: str
    text: str
    bucket: str = ""
    key: str = ""
    path: Path | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else self.text

    @property
    def is_prefix(self) -> bool:
        return self.scheme == "s3" and (self.key == "" or self.key.endswith("/"))


def parse(text, s3_endpoint: str | None = None, what: str = "location") -> Location:
    """The location ``text`` names.  ``s3_endpoint`` is the S3 endpoint URL the gateway uses
    (None: AWS's), which an ``http(s)://`` location must be an object of."""
    if not isinstance(text, str) or not text:
        raise Invalid(f"{what} must be a non-empty string.")
    if "\0" in text or len(text) > 4096:
        raise Invalid(f"{what} is not a valid location.")
    if text[:5].lower() == "s3://":                # S3 keys are literal: no %-decoding, '?' and '#' are key
        bucket, _, key = text[5:].partition("/")
        return _s3(text, bucket, key, what)
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            bucket, key = _s3_url(text, parts, s3_endpoint, what)
            return _s3(text, bucket, key, what)
    except Invalid:
        raise
    except ValueError:                              # a malformed URL: a bad port, an unclosed [IPv6
        raise Invalid(f"{what} {text!r} is not a valid location.") from None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise Invalid(f"{what} {text}: a file:// URL names a path on this machine (file:///path).")
        return Location("file", text, path=Path(unquote(parts.path)))
    if scheme == "" or len(scheme) == 1:            # a path (or a Windows drive letter)
        return Location("file", text, path=Path(text))
    raise Invalid(f"{what} {text}: slimserve reads s3://, S3 https:// and file:// locations and local paths, "
                  f"not {scheme}://.")


def _s3(text: str, bucket: str, key: str, what: str) -> Location:
    if not _BUCKET.match(bucket or "") or ".." in bucket:
        raise Invalid(f"{what} {text}: {bucket!r} is not a valid S3 bucket name.")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise Invalid(f"{what} {text}: the key is longer than {MAX_KEY_BYTES} bytes.")
    return Location("s3", text, bucket=bucket, key=key)


def _s3_url(text: str, parts, s3_endpoint: str | None, what: str) -> tuple[str, str]:
    """(bucket, key) of an http(s) URL of an S3 object, path- or virtual-hosted style (a URL's
    path is %-encoded: it is decoded into the key)."""
    refused = Invalid(f"{what} {text}: an http(s) location must be an object URL of the S3 endpoint the gateway "
                      f"uses ({s3_endpoint or 'AWS S3'}); slimserve does not fetch other URLs.")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise refused
    host = (parts.hostname or "").lower()
    path = unquote(parts.path or "")
    if s3_endpoint:
        ep = urlsplit(s3_endpoint)
        ep_host, ep_port = (ep.hostname or "").lower(), ep.port or (443 if ep.scheme == "https" else 80)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        if parts.scheme.lower() != ep.scheme.lower() or port != ep_port:
            raise refused
        if host == ep_host:
            bucket = None
        elif host.endswith("." + ep_host):
            bucket = host[: -len(ep_host) - 1]
        else:
            raise refused
    else:
        m = _AWS_HOST.match(host)
        if m is None or parts.scheme.lower() != "https":
            raise refused
        bucket = m.group("bucket")
    if bucket is None:                                  # path-style: /bucket/key
        bucket, _, key = path.lstrip("/").partition("/")
    else:
        key = path.lstrip("/")
    if not key:
        raise refused
    return bucket, key
