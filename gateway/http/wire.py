"""Domain errors (``gateway.errors``) as each API writes them: one mapping per wire flavour.

- the runtime API (``/endpoints/...``): REST-JSON as botocore's ``sagemaker-runtime`` parser
  reads it, the code in ``x-amzn-ErrorType``, ModelError's extra members in the body;
- the control plane (``POST /``): AWS JSON 1.1, the code in ``__type`` (and the header);
- the admin API: ``{"error": CODE, "message": ...}`` with a plain HTTP status.
"""
from __future__ import annotations

import json
import uuid

from aiohttp import web

from gateway import errors
from runtime import sandbox as sbx

CONTROL_CONTENT_TYPE = "application/x-amz-json-1.1"
_ERROR_TYPE = "{}:http://internal.amazon.com/coral/com.amazonaws.sagemaker/"

# The first class in the error's MRO that is listed here decides.
_RUNTIME_STATUS = {
    errors.PayloadTooLarge: 413, errors.RequestTimeout: 408, errors.Invalid: 400, errors.NotFound: 400,
    errors.Conflict: 400,
    errors.Throttled: 429, errors.NotReady: 429, errors.Unavailable: 503, errors.ModelFailed: 424,
}
_CONTROL = {          # class -> (JSON 1.1 code, status); the service words most refusals as validation
    errors.Malformed: ("SerializationException", 400), errors.PayloadTooLarge: ("ValidationException", 413),
    errors.RequestTimeout: ("RequestTimeout", 408),
    errors.Invalid: ("ValidationException", 400), errors.NotFound: ("ValidationException", 400),
    errors.Conflict: ("ValidationException", 400), errors.Throttled: ("ThrottlingException", 400),
    errors.NotReady: ("ServiceUnavailable", 503), errors.Unavailable: ("ServiceUnavailable", 503),
}
_ADMIN = {
    errors.BundleRejected: ("BundleRejected", 400), errors.Invalid: ("ValidationError", 400),
    errors.NotFound: ("NotFound", 404), errors.Conflict: ("Conflict", 409),
    errors.Unauthorized: ("Unauthorized", 401), errors.Throttled: ("Throttled", 429),
    errors.NotReady: ("NotReady", 503), errors.Unavailable: ("Unavailable", 503),
}
_MODEL_LEADS = {
    sbx.MODEL_RAISED: "Received server error ({status}) from model with message",
    sbx.BAD_OUTPUT: "Received server error ({status}) from model with message",
    sbx.UNSUPPORTED_MEDIA: "Received client error ({status}) from model with message",
    sbx.OUT_OF_MEMORY: "Model exceeded its memory size:",
    sbx.EXITED: "Model process exited:",
    sbx.TIMEOUT: "Your invocation timed out while waiting for a response from the model:",
    sbx.LOAD_FAILED: "Model failed to load:",
}


def _lookup(table: dict, err: Exception, default):
    for cls in type(err).__mro__:
        if cls in table:
            return table[cls]
    return default


def runtime_error(err: errors.SlimserveError, request_id: str, headers: dict | None = None) -> web.Response:
    """The runtime API's shape, which ``botocore``'s rest-json parser turns into ``err.code``."""
    status = getattr(err, "status", None) or _lookup(_RUNTIME_STATUS, err, 500)
    body = {"ErrorCode": err.code, "message": err.message, "Message": err.message}
    if isinstance(err, errors.ModelFailed):
        status = 424
        original = 500 if err.original_status is None else err.original_status
        lead = _MODEL_LEADS.get(err.kind, "Model error:").format(status=original)
        body["message"] = body["Message"] = f'{lead} "{err.message}". See {err.log_stream} for more information.'
        body.update(OriginalStatusCode=original, OriginalMessage=err.message, LogStreamArn=err.log_stream,
                    ErrorKind=err.kind)
    hdrs = {"x-amzn-ErrorType": _ERROR_TYPE.format(err.code), "x-amzn-RequestId": request_id}
    hdrs.update(headers or {})
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json",
                        headers=hdrs)


def control_error(err: errors.SlimserveError) -> web.Response:
    """The control plane's JSON 1.1 shape: JSON 1.1 readers take ``__type``, REST-JSON readers the header."""
    if isinstance(err, (errors.Unauthorized, errors.UnknownOperation, errors.Named)):
        code, status = err.code, err.status
    else:
        code, status = _lookup(_CONTROL, err, ("InternalFailure", 500))
    return control_json({"__type": code, "message": err.message}, status,
                        {"x-amzn-ErrorType": _ERROR_TYPE.format(code)})


def control_json(doc: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type=CONTROL_CONTENT_TYPE,
                        headers={"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})})


def admin_error(err: errors.SlimserveError) -> web.Response:
    code, status = _lookup(_ADMIN, err, ("InternalFailure", 500))
    return web.json_response({"error": code, "message": err.message}, status=status)
