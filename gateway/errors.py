"""One error hierarchy for everything a request can fail with, whichever API it came by.

A class says what went wrong; how that is written on the wire is ``gateway.http.wire``'s
job, with one mapping per flavour (the runtime's REST-JSON, the control plane's JSON 1.1,
the admin API).  Nothing here knows HTTP.

``code`` is SageMaker Runtime's name for the failure.  It is also what the usage ledger
stores as an invocation's status and what the metrics count, so records read the way
CloudWatch's do; ``kind`` is the ledger's finer ``error_kind``.
"""
from __future__ import annotations


class SlimserveError(Exception):
    code = "InternalFailure"
    kind = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(SlimserveError, ValueError):
    """A request that breaks a rule; the message names the rule."""
    code, kind = "ValidationError", "invalid"


class Malformed(Invalid):
    """A body that is not the JSON (or other encoding) the operation reads."""
    kind = "malformed"


class PayloadTooLarge(Invalid):
    kind = "too_large"

    def __init__(self, limit: int, what: str = "Request body"):
        super().__init__(f"{what} exceeds the maximum of {limit} bytes")
        self.limit = limit


class RequestTimeout(Invalid):
    """The request's body did not arrive in time."""
    code, kind = "RequestTimeout", "request_timeout"


class BundleRejected(Invalid):
    """An uploaded bundle that cannot be served; the message says why."""
    kind = "bundle_rejected"


class NotFound(SlimserveError, LookupError):
    """No such resource.  SageMaker answers it as a validation error, hence the code."""
    code, kind = "ValidationError", "not_found"


class Conflict(SlimserveError):
    """The resource exists already, or is in a state that does not allow the change."""
    code, kind = "ValidationError", "conflict"


class Unauthorized(SlimserveError):
    """A request whose credentials are missing, wrong or not allowed this action.  Its ``code``
    is the AWS error code that says which (``SignatureDoesNotMatch``, ``AccessDeniedException``...)."""
    kind = "unauthorized"

    def __init__(self, message: str, code: str = "UnrecognizedClientException", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


class Named(SlimserveError):
    """A refusal an API words with its own error code (Application Auto Scaling's
    ``ObjectNotFoundException``, ``ValidationException``...), written as given."""
    kind = "invalid"

    def __init__(self, message: str, code: str, status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


class UnknownOperation(SlimserveError):
    code, kind = "UnknownOperationException", "unknown_operation"

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Throttled(SlimserveError):
    """The endpoint is at its concurrency or the host at its memory budget."""
    code, kind = "ThrottlingException", "throttled"


class NotReady(SlimserveError):
    """The endpoint is being changed, or the sandbox went away under the request."""
    code, kind = "ModelNotReadyException", "not_ready"


class Unavailable(SlimserveError):
    """No sandbox could be started on this host (the backend, not the model, failed)."""
    code, kind = "ServiceUnavailable", "unavailable"


class Internal(SlimserveError):
    """A gateway bug, or a usage record that could not be made durable."""


class ModelFailed(SlimserveError):
    """The model failed: it raised, answered badly, ran out of memory or time, exited, or did not
    load.  ``kind`` is one of ``runtime.sandbox``'s error kinds; ``log_stream`` is where to look."""
    code = "ModelError"

    def __init__(self, kind: str, message: str, original_status: int | None = None, log_stream: str = ""):
        super().__init__(message)
        self.kind, self.original_status, self.log_stream = kind, original_status, log_stream
