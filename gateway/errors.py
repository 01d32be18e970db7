"""SageMaker Runtime errors, shaped as botocore's rest-json parser reads them.

The error code travels in the ``x-amzn-ErrorType`` header and the body is a
JSON object with ``message``/``Message``; ModelError adds OriginalStatusCode,
OriginalMessage and LogStreamArn, which botocore exposes on the exception.
"""
from __future__ import annotations

import json

from aiohttp import web

from runtime import sandbox as sbx


class ApiError(Exception):
    def __init__(self, code: str, status: int, message: str, **fields):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.fields = fields

    def response(self, request_id: str, headers: dict | None = None) -> web.Response:
        body = {"ErrorCode": self.code, "message": self.message, "Message": self.message, **self.fields}
        hdrs = {"x-amzn-ErrorType": f"{self.code}:http://internal.amazon.com/coral/com.amazonaws.sagemaker/",
                "x-amzn-RequestId": request_id}
        hdrs.update(headers or {})
        return web.Response(status=self.status, body=json.dumps(body).encode(),
                            content_type="application/json", headers=hdrs)


def validation(message: str) -> ApiError:
    return ApiError("ValidationError", 400, message)


def payload_too_large(limit: int) -> ApiError:
    return ApiError("ValidationError", 413, f"Request body exceeds the maximum of {limit} bytes")


def throttled(message: str) -> ApiError:
    return ApiError("ThrottlingException", 429, message)


def not_ready(message: str) -> ApiError:
    return ApiError("ModelNotReadyException", 429, message)


def unavailable(message: str) -> ApiError:
    return ApiError("ServiceUnavailable", 503, message)


def internal(message: str) -> ApiError:
    return ApiError("InternalFailure", 500, message)


def model_error(kind: str, message: str, original_status: int | None, log_stream: str) -> ApiError:
    """A sandbox failure as SageMaker's ModelError (HTTP 424)."""
    status = 500 if original_status is None else original_status
    lead = {
        sbx.MODEL_RAISED: f"Received server error ({status}) from model with message",
        sbx.BAD_OUTPUT: f"Received server error ({status}) from model with message",
        sbx.UNSUPPORTED_MEDIA: f"Received client error ({status}) from model with message",
        sbx.OUT_OF_MEMORY: "Model exceeded its memory size:",
        sbx.EXITED: "Model process exited:",
        sbx.TIMEOUT: "Your invocation timed out while waiting for a response from the model:",
        sbx.LOAD_FAILED: "Model failed to load:",
    }.get(kind, "Model error:")
    return ApiError(
        "ModelError", 424, f'{lead} "{message}". See {log_stream} for more information.',
        OriginalStatusCode=status, OriginalMessage=message, LogStreamArn=log_stream,
        ErrorKind=kind,
    )
