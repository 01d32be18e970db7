"""Asynchronous inference, the pure part: an endpoint config's ``AsyncInferenceConfig`` checked
and read, and one ``InvokeEndpointAsync`` request's headers checked against the limits of
botocore's ``sagemaker-runtime`` model, with the output and failure locations it gets.

Every limit is checked here, by the server, whatever the client checked already; a failure is
a ``ValidationError`` that names the member.  Nothing here does I/O or reads a clock.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import Invalid

MAX_INLINE_BODY = 128_000               # InvokeEndpointAsync's Body (the newer request shape)
MAX_INPUT_BYTES = 1 << 30               # an input object, and an answer, at most (SageMaker's 1 GB)
TTL_RANGE, DEFAULT_TTL_S = (60, 21600), 21600
TIMEOUT_RANGE, DEFAULT_TIMEOUT_S = (1, 3600), 900
PER_INSTANCE_RANGE = (1, 1000)
MAX_HEADER = 1024
MAX_INCLUDED_RESPONSE = 128 << 10       # IncludeInferenceResponseIn: answers up to 128 KB ride along

SNS_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+$")
HTTP_TOPIC_RE = re.compile(r"^https?://[^/\s?#@]+(/[^\s#]*)?$")
S3_PATH_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/[^\s]*)?$")
INPUT_RE = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
INFERENCE_ID_RE = re.compile(r"^\S[\x20-\x7e]*$")
EXTENSION_RE = re.compile(r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$")
FILENAME_RE = re.compile(r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9\-_.]*$")
TOPIC_TYPES = ("SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC")


def _error(member: str, value, constraint: str) -> Invalid:
    shown = str(value)[:200]
    return Invalid(f"1 validation error detected: Value '{shown}' at '{member}' failed to satisfy constraint: "
                   f"{constraint}")


@dataclass(frozen=True)
class AsyncConfig:
    """An endpoint config's AsyncInferenceConfig, read."""
    output_path: str                    # s3://bucket/prefix, without a trailing /
    failure_path: str | None
    success_topic: str | None = None    # arn:aws:sns:... or, as an extension, an http(s):// URL
    error_topic: str | None = None
    include_response_in: tuple[str, ...] = ()
    max_per_instance: int | None = None  # ClientConfig.MaxConcurrentInvocationsPerInstance

    @classmethod
    def from_doc(cls, doc: dict) -> "AsyncConfig":
        out = doc.get("OutputConfig") or {}
        note = out.get("NotificationConfig") or {}
        client = doc.get("ClientConfig") or {}
        return cls(output_path=_strip(out.get("S3OutputPath")), failure_path=_strip(out.get("S3FailurePath")),
                   success_topic=note.get("SuccessTopic") or None, error_topic=note.get("ErrorTopic") or None,
                   include_response_in=tuple(note.get("IncludeInferenceResponseIn") or ()),
                   max_per_instance=client.get("MaxConcurrentInvocationsPerInstance"))


def _strip(path):
    return path.rstrip("/") if isinstance(path, str) and path else None


def check_config(doc, variants: list[dict]) -> None:
    """CreateEndpointConfig's AsyncInferenceConfig, as the service checks it."""
    at = "asyncInferenceConfig"
    if not isinstance(doc, dict):
        raise Invalid(f"Value at '{at}' must be an object.")
    if any(isinstance(pv, dict) and pv.get("ServerlessConfig") for pv in variants):
        raise Invalid("AsyncInferenceConfig is not supported for an endpoint config with a serverless production "
                      "variant: asynchronous inference runs on instance variants (InstanceType).")
    out = doc.get("OutputConfig")
    if not isinstance(out, dict):
        raise Invalid(f"1 validation error detected: Value null at '{at}.outputConfig' failed to satisfy "
                      "constraint: Member must not be null")
    for key, member in (("S3OutputPath", "s3OutputPath"), ("S3FailurePath", "s3FailurePath")):
        value = out.get(key)
        if value is None and key == "S3FailurePath":
            continue
        if not isinstance(value, str) or len(value) > 512 or not S3_PATH_RE.match(value):
            raise _error(f"{at}.outputConfig.{member}", value,
                         "Member must be an S3 URI s3://bucket/prefix of at most 512 characters")
    note = out.get("NotificationConfig")
    if note is not None:
        if not isinstance(note, dict):
            raise Invalid(f"Value at '{at}.outputConfig.notificationConfig' must be an object.")
        for key in ("SuccessTopic", "ErrorTopic"):
            topic = note.get(key)
            if topic is None or topic == "":
                continue
            if not isinstance(topic, str) or len(topic) > 2048 or not (SNS_ARN_RE.match(topic)
                                                                       or HTTP_TOPIC_RE.match(topic)):
                raise _error(f"{at}.outputConfig.notificationConfig.{key[0].lower() + key[1:]}", topic,
                             "Member must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME) or, as a "
                             "slimserve extension, an http(s):// URL")
        include = note.get("IncludeInferenceResponseIn")
        if include is not None and (not isinstance(include, list) or len(include) > 2
                                    or any(t not in TOPIC_TYPES for t in include)):
            raise _error(f"{at}.outputConfig.notificationConfig.includeInferenceResponseIn", include,
                         f"Member must have at most 2 items from [{', '.join(TOPIC_TYPES)}]")
    client = doc.get("ClientConfig")
    if client is not None:
        if not isinstance(client, dict):
            raise Invalid(f"Value at '{at}.clientConfig' must be an object.")
        n = client.get("MaxConcurrentInvocationsPerInstance")
        lo, hi = PER_INSTANCE_RANGE
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not lo <= n <= hi):
            raise _error(f"{at}.clientConfig.maxConcurrentInvocationsPerInstance", n,
                         f"Member must have value between {lo} and {hi}")


@dataclass(frozen=True)
class Submission:
    """One InvokeEndpointAsync request's headers, checked."""
    input_location: str | None
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    inference_id: str | None
    extension: str | None
    filename: str | None
    ttl_s: int
    timeout_s: int


def _ascii(headers, name: str, member: str, limit: int = MAX_HEADER) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    if len(value) > limit or not value.isascii():
        raise _error(member, value, f"Member must be ASCII of at most {limit} characters")
    return value


def _integer(headers, name: str, member: str, bounds: tuple[int, int], default: int) -> int:
    raw = headers.get(name)
    if raw is None:
        return default
    lo, hi = bounds
    try:
        value = int(raw.strip())
    except ValueError:
        raise _error(member, raw, "Member must be an integer") from None
    if not lo <= value <= hi:
        raise _error(member, raw, f"Member must have value between {lo} and {hi}")
    return value


def submission(headers, body_bytes: int) -> Submission:
    """The request's headers (a case-insensitive mapping) read and checked; ``body_bytes``: the
    size of an inline body (0: none)."""
    location = headers.get("X-Amzn-SageMaker-InputLocation")
    if location is not None and (not 1 <= len(location) <= 1024 or not INPUT_RE.match(location)):
        raise _error("inputLocation", location, "Member must satisfy regular expression pattern: "
                                                "^(https|s3)://([^/]+)/?(.*)$")
    if location and body_bytes:
        raise Invalid("Provide either InputLocation or a request body, not both.")
    if not location and not body_bytes:
        raise Invalid("InvokeEndpointAsync needs an input: an InputLocation (an S3 object) or a request body "
                      f"of at most {MAX_INLINE_BODY} bytes.")
    if body_bytes > MAX_INLINE_BODY:
        raise _error("body", f"<{body_bytes} bytes>",
                     f"Member must have length less than or equal to {MAX_INLINE_BODY}; put larger inputs in S3 "
                     "and pass their InputLocation")
    inference_id = headers.get("X-Amzn-SageMaker-Inference-Id")
    if inference_id is not None and (not 1 <= len(inference_id) <= 64 or not INFERENCE_ID_RE.match(inference_id)):
        raise _error("inferenceId", inference_id, "Member must have length between 1 and 64, of printable "
                                                  "characters, not starting with a space")
    extension = headers.get("X-Amzn-SageMaker-S3OutputPathExtension")
    if extension is not None:
        parts = extension.strip("/").split("/")
        if (not 1 <= len(extension) <= 512 or not EXTENSION_RE.match(extension)
                or any(p in ("", ".", "..") for p in parts)):
            raise _error("s3OutputPathExtension", extension,
                         "Member must be 1-512 characters of [a-zA-Z0-9!_.*'()/-], a relative path without "
                         "empty, '.' or '..' segments")
    filename = headers.get("X-Amzn-SageMaker-Filename")
    if filename is not None and (not 1 <= len(filename) <= 32 or not FILENAME_RE.match(filename)):
        raise _error("filename", filename, "Member must have length between 1 and 32 and satisfy regular "
                                           "expression pattern: ^(?!.*\\..*\\.)[a-zA-Z0-9][a-zA-Z0-9-_\\.]*$")
    return Submission(
        input_location=location or None,
        content_type=_ascii(headers, "X-Amzn-SageMaker-Content-Type", "contentType"),
        accept=_ascii(headers, "X-Amzn-SageMaker-Accept", "accept"),
        custom_attributes=_ascii(headers, "X-Amzn-SageMaker-Custom-Attributes", "customAttributes"),
        inference_id=inference_id, extension=extension.strip("/") if extension else None, filename=filename,
        ttl_s=_integer(headers, "X-Amzn-SageMaker-RequestTTLSeconds", "requestTTLSeconds", TTL_RANGE,
                       DEFAULT_TTL_S),
        timeout_s=_integer(headers, "X-Amzn-SageMaker-InvocationTimeoutSeconds", "invocationTimeoutSeconds",
                           TIMEOUT_RANGE, DEFAULT_TIMEOUT_S))


def locations(config: AsyncConfig, uid: str, sub: Submission) -> tuple[str, str]:
    """(output, failure) object URLs of one request: under the configured paths, below the
    request's S3OutputPathExtension, named by the server-made ``uid`` (or the Filename given), so
    two requests never share an object unless a client names the same Filename on purpose."""
    def under(path: str, name: str) -> str:
        return "/".join(p for p in (path, sub.extension, name) if p)

    output = under(config.output_path, sub.filename or f"{uid}.out")
    failure = under(config.failure_path or config.output_path, f"{uid}-error.out")
    return output, failure
