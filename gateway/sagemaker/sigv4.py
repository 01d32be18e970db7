"""AWS Signature Version 4: verification for every AWS-style API the gateway serves, and
signing for slimserve's own clients (one canonical request for both).

Both SageMaker planes sign with service ``sagemaker``; Application Auto Scaling (whose
operations arrive with ``X-Amz-Target: AnyScaleFrontendService.*``) signs with
``application-autoscaling``, and a signature must name the service the request addresses.  The
canonical request is
rebuilt from the request as received (method, path, sorted query, the signed
headers, SHA-256 of the body) and the signature recomputed with the secret of
the access key named in the credential scope; derived signing keys are cached
(one per key, day and region), so a warm invocation pays two HMACs.  Failures
carry the AWS error codes clients know: MissingAuthenticationTokenException
(403), IncompleteSignatureException, UnrecognizedClientException and
InvalidSignatureException (400), as the real service answers.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
from urllib.parse import parse_qsl, quote

from gateway.errors import Unauthorized

SERVICE = "sagemaker"
AUTOSCALING = "application-autoscaling"
AUTOSCALING_TARGET = "AnyScaleFrontendService."
LOGS = "logs"
LOGS_TARGET = "Logs_20140328."
MAX_SKEW_S = 15 * 60
# Signed whenever present: what the request does (its operation) and when.  Content-Type is not
# required: some clients' HTTP libraries add one after signing, and it does not choose the operation.
MUST_SIGN = ("host", "x-amz-target", "x-amz-date")


class AuthError(Unauthorized):
    """A request SigV4 does not let in; ``code`` is the AWS error code that says why."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message, code, status)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))


def _parse_authorization(value: str) -> dict[str, str]:
    if not value.startswith("AWS4-HMAC-SHA256 "):
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires the AWS4-HMAC-SHA256 algorithm.")
    parts = {}
    for item in value[len("AWS4-HMAC-SHA256 "):].split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key] = val
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
    if missing:
        raise AuthError("IncompleteSignatureException",
                        f"Authorization header requires '{missing[0]}' parameter.")
    return parts


def service_of(headers, path: str = "/") -> str:
    """The signing name of the API a request addresses: Application Auto Scaling's and CloudWatch
    Logs' operations come to ``POST /`` with their X-Amz-Target; everything else is SageMaker's."""
    target = headers.get("X-Amz-Target") or "" if path == "/" else ""
    if target.startswith(AUTOSCALING_TARGET):
        return AUTOSCALING
    if target.startswith(LOGS_TARGET):
        return LOGS
    return SERVICE


def verify(method: str, path: str, query_string: str, headers, body: bytes, keys: dict[str, str],
           region: str, now: float, payload_hash: str | None = None) -> str:
    """Check the request's signature; returns the access key id, or raises AuthError.
    ``payload_hash``: the SHA-256 of the body as received, computed while it was read (a body
    over the cap is hashed but not kept); never a client's claim."""
    key_id, parts, secret, amz_date, signed = precheck(headers, keys, region, now, path)
    if payload_hash is None:
        payload_hash = hashlib.sha256(body).hexdigest()      # the body as received, never a client's claim
    claimed = headers.get("X-Amz-Content-SHA256")
    if claimed is not None and claimed != payload_hash:
        raise AuthError("InvalidSignatureException",
                        "The provided x-amz-content-sha256 header does not match what was computed.")
    expected = _signature(secret, method, path, query_string, headers, signed, payload_hash, amz_date, region,
                          service_of(headers, path))
    if not hmac.compare_digest(expected, parts["Signature"]):
        raise AuthError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you provided. Check your "
                        "AWS Secret Access Key and signing method. Consult the service documentation for details.")
    return key_id


def precheck(headers, keys: dict[str, str], region: str, now: float, path: str = "/"):
    """Everything about a signature that needs no body: its shape, a known key, the time, which
    headers it covers.  Run before the body is read, so a request that cannot be signed right
    costs the gateway no body bytes.  Returns (key id, parts, secret, amz date, signed headers)."""
    auth = headers.get("Authorization")
    if not auth:
        raise AuthError("MissingAuthenticationTokenException", "Request is missing Authentication Token", 403)
    parts = _parse_authorization(auth)
    try:
        key_id, date, scope_region, service, terminator = parts["Credential"].split("/")
    except ValueError:
        raise AuthError("IncompleteSignatureException",
                        "Credential must be KEY/DATE/REGION/SERVICE/aws4_request.") from None
    wanted = service_of(headers, path)
    if service != wanted or terminator != "aws4_request":
        raise AuthError("InvalidSignatureException", f"Credential should be scoped to correct service: '{wanted}'. ")
    if scope_region != region:
        raise AuthError("InvalidSignatureException",
                        f"Credential should be scoped to a valid region, not '{scope_region}'. ")
    secret = keys.get(key_id)
    if secret is None:
        raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        raise AuthError("IncompleteSignatureException", "X-Amz-Date header is missing or malformed.") from None
    if abs(now - signed_at) > MAX_SKEW_S or not amz_date.startswith(date):
        raise AuthError("InvalidSignatureException", "Signature expired or not yet valid: the request time is "
                        "more than 15 minutes from the server's, or does not match the credential's date.")
    signed = parts["SignedHeaders"].split(";")
    # What the request does must be what was signed: the operation (X-Amz-Target) and the time,
    # whenever they are sent; else a captured request could be replayed as another operation.
    unsigned = [h for h in MUST_SIGN if h not in signed and (h == "host" or headers.get(h) is not None)]
    if unsigned:
        raise AuthError("InvalidSignatureException", f"The {unsigned[0]} header must be signed.")
    return key_id, parts, secret, amz_date, signed


def _signature(secret: str, method: str, path: str, query_string: str, headers, signed: list[str],
               payload_hash: str, amz_date: str, region: str, service: str = SERVICE) -> str:
    canonical_headers = "".join(f"{h}:{' '.join((headers.get(h) or '').split())}\n" for h in signed)
    canonical = "\n".join([method, quote(path, safe="/-_.~"), canonical_query(query_string), canonical_headers,
                           ";".join(signed), payload_hash])
    date = amz_date[:8]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, f"{date}/{region}/{service}/aws4_request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()


class _Lower(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


def sign(method: str, host: str, path: str, query_string: str, body: bytes, key_id: str, secret: str,
         region: str, now: float, headers: dict | None = None) -> dict:
    """The headers that sign a request (``Host``, ``X-Amz-Date``, ``X-Amz-Content-SHA256``,
    ``Authorization``), covering ``headers`` too.  ``host`` is ``name:port`` as sent."""
    amz_date = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body or b"").hexdigest()
    out = dict(headers or {}, Host=host, **{"X-Amz-Date": amz_date, "X-Amz-Content-SHA256": payload_hash})
    lower = _Lower({k.lower(): v for k, v in out.items()})
    signed = sorted(lower)
    sig = _signature(secret, method, path, query_string, lower, signed, payload_hash, amz_date, region)
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{amz_date[:8]}/{region}/{SERVICE}/aws4_request, "
                            f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return out


def sign_url(method: str, url: str, body: bytes, key, region: str, headers: dict | None = None,
             now: float | None = None) -> dict:
    """``headers`` plus the signature of a request to ``url`` with ``key`` (an object with
    ``key_id`` and ``secret``, e.g. ``credentials.AccessKey``); ``headers`` alone when ``key`` is None."""
    import time
    from urllib.parse import unquote, urlsplit

    if key is None:
        return dict(headers or {})
    parts = urlsplit(url)
    return sign(method, parts.netloc, unquote(parts.path), parts.query, body or b"", key.key_id, key.secret, region,
                time.time() if now is None else now, headers)
