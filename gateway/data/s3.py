"""The one S3 client of the gateway: boto3, with the standard AWS configuration unless the
operator says otherwise, so it works against AWS S3, MinIO, SeaweedFS or any S3-compatible
store.

Every method blocks (boto3 does): callers run them in a thread.  Failures come out as the
few kinds callers word for their own API: ``Missing`` (no such bucket or key), ``Denied``
(credentials refused or not allowed), ``Unreachable`` (no answer from the endpoint) and
``Changed`` (the object was replaced while it was being read).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gateway.data.locations import Location

PART_BYTES = 16 << 20          # ranged GETs of this size, several at once, for objects larger than one
PARALLEL_PARTS = 4
READ_BYTES = 1 << 20           # what one read of a response body takes at most
SMALL_PUT_BYTES = 8 << 20      # uploads up to this are one PutObject; larger ones multipart, in parallel


class LocalWriteError(OSError):
    """A download that could not be written here (the disk is full): not the store's failure."""


class S3Error(Exception):
    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class Missing(S3Error):
    """The bucket or the key does not exist (``bucket_missing`` says which)."""

    def __init__(self, url: str, reason: str, bucket_missing: bool = False):
        super().__init__(url, reason)
        self.bucket_missing = bucket_missing


class Denied(S3Error):
    """The store refused the gateway's credentials, or they may not read this."""


class Unreachable(S3Error):
    """The endpoint did not answer (down, wrong address, timed out)."""


class Changed(S3Error):
    """The object changed (another ETag) between its listing and its download."""


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None     # None: boto3's own (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS)
    key_id: str | None = None           # None (both): the standard credentials chain
    secret: str | None = None
    region: str | None = None           # None: boto3's (AWS_DEFAULT_REGION ...), else us-east-1


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    etag: str                           # without quotes
    size: int
    content_type: str | None = None     # (from a HEAD; listings do not say)
    metadata: dict = field(default_factory=dict)    # x-amz-meta-* (from a HEAD)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _cause(exc: Exception) -> Exception:
    """The botocore error under boto3's transfer wrapper (S3UploadFailedError keeps it as its cause)."""
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, Exception) and type(exc).__name__ == "S3UploadFailedError" else exc


class S3:
    def __init__(self, config: S3Config = S3Config()):
        self.config = config
        self._client = None
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint in use when one is configured here or in the environment (None: AWS)."""
        return (self.config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)

    def client(self):
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                c = self.config
                session = boto3.session.Session(aws_access_key_id=c.key_id, aws_secret_access_key=c.secret,
                                                region_name=c.region)
                self._client = session.client(
                    "s3", endpoint_url=c.endpoint_url, region_name=c.region or session.region_name or "us-east-1",
                    config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5,
                                  read_timeout=60, max_pool_connections=PARALLEL_PARTS * 4,
                                  s3={"addressing_style": "path" if self.endpoint_url else "auto"}))
            return self._client

    # --- reading -------------------------------------------------------------------------
    def stat(self, loc: Location) -> ObjectInfo:
        """The object's ETag and size (HEAD); a failure says which of bucket, key or access."""
        try:
            head = self.client().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:  # noqa: BLE001 - sorted into the kinds below
            raise self._explain(loc, exc) from None
        return ObjectInfo(loc.bucket, loc.key, head["ETag"].strip('"'), int(head["ContentLength"]),
                          head.get("ContentType"), dict(head.get("Metadata") or {}))

    def list(self, loc: Location, max_keys: int) -> list[ObjectInfo]:
        """Every object under the prefix ``loc.key`` (paginated); more than ``max_keys`` is refused."""
        out: list[ObjectInfo] = []
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key)
            for page in pages:
                for o in page.get("Contents") or []:
                    out.append(ObjectInfo(loc.bucket, o["Key"], o["ETag"].strip('"'), int(o["Size"])))
                if len(out) > max_keys:
                    raise S3Error(loc.url, f"more than {max_keys} objects under the prefix")
        except S3Error:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into the kinds below
            raise self._explain(loc, exc) from None
        return out

    def open(self, loc: Location):
        """(a stream of the object's bytes, its Content-Type, its size): for relaying an object
        a read buffer at a time.  The caller closes the stream."""
        try:
            resp = self.client().get_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:  # noqa: BLE001 - sorted into the kinds below
            raise self._explain(loc, exc) from None
        return resp["Body"], resp.get("ContentType"), int(resp["ContentLength"])

    def download(self, info: ObjectInfo, dest: Path, progress=None, sync: bool = True) -> None:
        """The object as it was stat'ed (``If-Match`` its ETag) into ``dest``, streamed to disk in
        ranged parts; ``progress(nbytes)`` is called as bytes arrive.  Nothing is held in memory
        beyond a read buffer per part.  ``sync``: on disk (fsync'ed) before it returns -- what the
        model cache keeps must be; a spool file read once need not."""
        loc = Location("s3", info.url, bucket=info.bucket, key=info.key)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, info.size)
            ranges = [(lo, min(lo + PART_BYTES, info.size) - 1) for lo in range(0, info.size, PART_BYTES)]
            if len(ranges) <= 1:
                self._get(loc, info, fd, None, progress)
            else:
                with ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="s3-part") as pool:
                    for f in [pool.submit(self._get, loc, info, fd, r, progress) for r in ranges]:
                        f.result()
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _get(self, loc: Location, info: ObjectInfo, fd: int, byte_range, progress) -> None:
        kw = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        try:
            resp = self.client().get_object(Bucket=info.bucket, Key=info.key, IfMatch=f'"{info.etag}"', **kw)
            body = resp["Body"]
            if byte_range and resp.get("ContentRange") != f"bytes {byte_range[0]}-{byte_range[1]}/{info.size}":
                body.close()                  # a store that ignored Range would put bytes in the wrong place
                raise S3Error(info.url, f"asked for bytes {byte_range[0]}-{byte_range[1]}, the store answered "
                                        f"{resp.get('ContentRange') or 'the whole object'}")
            offset, end = (byte_range[0], byte_range[1] + 1) if byte_range else (0, info.size)
            while offset < end:
                chunk = body.read(min(READ_BYTES, end - offset))
                if not chunk:
                    break
                try:
                    os.pwrite(fd, chunk, offset)
                except OSError as exc:        # this machine's disk (full?), not S3: raised as it is
                    body.close()
                    raise LocalWriteError(exc.errno, f"writing {info.url} to disk: {exc.strerror}") from None
                offset += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            body.close()
        except (S3Error, LocalWriteError):
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into the kinds below
            raise self._explain(loc, exc) from None
        if offset != end:
            raise Changed(info.url, f"the download ended at byte {offset} of {end}")

    # --- writing (asynchronous inference's outputs) --------------------------------------
    def put(self, loc: Location, source: Path | bytes, content_type: str | None = None,
            metadata: dict | None = None) -> None:
        """``source`` (a file, streamed in multipart parts when large, or bytes) as the object
        ``loc``.  S3 makes an object visible only once it is complete, so a reader polling for
        it never sees part of one."""
        from boto3.s3.transfer import TransferConfig

        extra = {"ContentType": content_type} if content_type else {}
        if metadata:
            extra["Metadata"] = dict(metadata)
        try:
            if not isinstance(source, (bytes, bytearray)) and os.path.getsize(source) <= SMALL_PUT_BYTES:
                with open(source, "rb") as fh:           # one PUT: no transfer manager, no threads
                    source = fh.read()
            if isinstance(source, (bytes, bytearray)):
                self.client().put_object(Bucket=loc.bucket, Key=loc.key, Body=bytes(source), **extra)
            else:
                self.client().upload_file(str(source), loc.bucket, loc.key, ExtraArgs=extra or None,
                                          Config=TransferConfig(multipart_threshold=PART_BYTES,
                                                                multipart_chunksize=PART_BYTES,
                                                                max_concurrency=PARALLEL_PARTS))
        except Exception as exc:  # noqa: BLE001 - sorted into the kinds below
            raise self._explain(loc, _cause(exc)) from None

    def check_bucket(self, loc: Location) -> None:
        """Missing(bucket_missing) unless the bucket exists.  Writers ask first: some S3-compatible
        stores (SeaweedFS) create a bucket on the first PutObject, where S3 answers NoSuchBucket."""
        try:
            self.client().head_bucket(Bucket=loc.bucket)
        except Exception as exc:  # noqa: BLE001 - sorted into the kinds below
            err = self._explain(loc, exc)
            if isinstance(err, Missing) or getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404",):
                raise Missing(loc.url, f"the bucket {loc.bucket} does not exist", bucket_missing=True) from None
            raise err from None

    def exists(self, loc: Location) -> bool:
        try:
            self.stat(loc)
        except Missing as exc:
            if exc.bucket_missing:
                raise
            return False
        return True

    # --- errors --------------------------------------------------------------------------
    def _explain(self, loc: Location, exc: Exception) -> S3Error:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        where = self.endpoint_url or "AWS S3"
        if isinstance(exc, NoCredentialsError):
            return Denied(loc.url, "the gateway has no S3 credentials (set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY, a profile, or serve --s3 local)")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code, status = str(err.get("Code", "")), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "403", "") and status in (403, 404):
                code = self._error_code(loc) or code        # HEAD answers carry no error code: ask with a GET
            if code == "NoSuchBucket":
                return Missing(loc.url, f"the bucket {loc.bucket} does not exist", bucket_missing=True)
            if code in ("NoSuchKey", "404", "NotFound"):
                return Missing(loc.url, f"no object {loc.key} in the bucket {loc.bucket}")
            if code in ("PreconditionFailed", "412"):
                return Changed(loc.url, "the object was replaced while it was read")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                        "InvalidToken", "ExpiredToken", "AllAccessDisabled"):
                detail = {"InvalidAccessKeyId": "the store does not know the gateway's access key id",
                          "SignatureDoesNotMatch": "the store refused the gateway's secret key"}.get(
                              code, "access denied")
                return Denied(loc.url, f"{detail} ({code} from {where})")
            return S3Error(loc.url, f"{code or status}: {err.get('Message', '')}".strip())
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        # the network (refused, reset, timed out, broken off): worth trying again
        if isinstance(exc, (EndpointConnectionError, BotoConnectionError, HTTPClientError, ConnectionError,
                            TimeoutError)):
            return Unreachable(loc.url, f"S3 at {where} did not answer ({type(exc).__name__})")
        if isinstance(exc, (BotoCoreError, OSError)):     # a bad argument, a response that broke off ...
            return S3Error(loc.url, f"{type(exc).__name__}: {exc}")
        return S3Error(loc.url, f"{type(exc).__name__}: {exc}")

    def _error_code(self, loc: Location) -> str | None:
        from botocore.exceptions import ClientError

        try:
            self.client().get_object(Bucket=loc.bucket, Key=loc.key, Range="bytes=0-0")["Body"].close()
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code", "")) or None
        except Exception:  # noqa: BLE001 - only the code was wanted
            return None
        return None
