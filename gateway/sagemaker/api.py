"""The SageMaker control-plane API over HTTP: AWS JSON 1.1, ``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``, so ``boto3.client("sagemaker")`` and the
SageMaker Python SDK work unchanged.  Also the SigV4 check for both SageMaker
APIs when access keys are configured (the admin API keeps its bearer token).
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from aiohttp import web

from gateway import errors
from gateway.config import DRAIN_FACTOR
from gateway.http.body import read_body, read_capped
from gateway.http.wire import control_error, control_json, runtime_error
from gateway.sagemaker.catalog import Catalog
from gateway.sagemaker.endpoint_configs import EndpointConfigs
from gateway.sagemaker.endpoints import Endpoints
from gateway.sagemaker.models import Models
from gateway.sagemaker.sigv4 import AuthError, precheck, service_of, verify
from gateway.sagemaker.tags import Tags

log = logging.getLogger("slimserve.sagemaker")
MAX_BODY_BYTES = 1 << 20


def operations(catalog: Catalog, extra: dict | None = None, taggable: dict | None = None) -> dict:
    """Operation name -> handler, over one catalog's records (and ``extra``: transform jobs';
    ``taggable``: further kinds of resource tags reach by ARN)."""
    m, c, e, t = Models(catalog), EndpointConfigs(catalog), Endpoints(catalog), Tags(catalog, taggable)
    return {
        "CreateModel": m.create_model, "DescribeModel": m.describe_model, "ListModels": m.list_models,
        "DeleteModel": m.delete_model,
        "CreateEndpointConfig": c.create_endpoint_config, "DescribeEndpointConfig": c.describe_endpoint_config,
        "ListEndpointConfigs": c.list_endpoint_configs, "DeleteEndpointConfig": c.delete_endpoint_config,
        "CreateEndpoint": e.create_endpoint, "DescribeEndpoint": e.describe_endpoint,
        "ListEndpoints": e.list_endpoints, "UpdateEndpoint": e.update_endpoint,
        "UpdateEndpointWeightsAndCapacities": e.update_weights, "DeleteEndpoint": e.delete_endpoint,
        "AddTags": t.add_tags, "ListTags": t.list_tags, "DeleteTags": t.delete_tags,
        **(extra or {}),
    }


class SageMakerApi:
    """``POST /`` for every AWS JSON 1.1 API the gateway serves, by the X-Amz-Target prefix:
    SageMaker's own, and the ones given in ``services`` (Application Auto Scaling's)."""

    def __init__(self, catalog: Catalog, services: dict[str, dict] | None = None, extra: dict | None = None,
                 taggable: dict | None = None):
        self.catalog = catalog
        self.services = {"SageMaker": operations(catalog, extra, taggable), **(services or {})}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        service, _, op = target.partition(".")
        ops = self.services.get(service, {})
        if op not in ops:
            return control_error(errors.UnknownOperation(
                f"Unknown operation {target or '(no X-Amz-Target header)'}"
                + ("" if service in self.services or not service else
                   f": this endpoint serves {', '.join(self.services)}")))
        try:
            req = _parse(await _read(request))
            result = ops[op](req)
            if hasattr(result, "__await__"):
                result = await result
        except errors.SlimserveError as exc:
            return control_error(exc)
        except Exception as exc:  # noqa: BLE001 - a gateway bug: still the API's own error shape
            log.exception("%s failed inside the gateway", target)
            return control_error(errors.Internal(f"internal error: {type(exc).__name__}"))
        return control_json(result)


async def _read(request: web.Request) -> bytes:
    try:
        return await read_body(request, MAX_BODY_BYTES)
    except errors.PayloadTooLarge as exc:
        exc.message = f"The request body is over {MAX_BODY_BYTES} bytes."
        raise


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")             # NaN / Infinity: Python reads them, JSON has none


def _parse(raw: bytes) -> dict:
    try:
        req = json.loads(raw or b"{}", parse_constant=_no_constant)
    except ValueError:
        raise errors.Malformed("The request body is not valid JSON.") from None
    except RecursionError:
        raise errors.Invalid("The request body nests JSON objects or arrays too deeply.") from None
    if not isinstance(req, dict):
        raise errors.Malformed("The request body must be a JSON object.")
    return req


def _action(request: web.Request) -> tuple[str, bool]:
    """(the IAM-style action a request performs, whether a read-scoped key may perform it)."""
    if request.path.startswith("/endpoints/"):
        return "sagemaker:InvokeEndpoint", True
    op = request.headers.get("X-Amz-Target", "").partition(".")[2] or "UnknownOperation"
    return f"{service_of(request.headers, request.path)}:{op}", op.startswith(("Describe", "List", "Get", "Filter"))


def auth_middleware(keys: dict, region: str, max_body: int, account_id: str, clock=time.time,
                    body_timeout_s: float = 60.0, budget=None):
    """SigV4 on everything but the admin API (bearer token), /ping and /metrics; ``keys`` maps
    access key ids to ``credentials.AccessKey`` (a ``read`` key may invoke, Describe and List)."""
    open_paths = ("/ping", "/metrics")
    secrets = {k: v.secret for k, v in keys.items()}

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path.startswith("/admin") or request.path in open_paths:
            return await handler(request)
        try:                                   # no body byte is read for a request that cannot be signed right
            precheck(request.headers, secrets, region, clock(), request.path)
        except AuthError as exc:
            return control_error(exc)
        try:
            body = await read_capped(request, max_body, max_body * DRAIN_FACTOR, body_timeout_s, budget)
        except (errors.PayloadTooLarge, errors.RequestTimeout, errors.Unavailable) as exc:   # not attributed
            return control_error(exc) if request.path == "/" else runtime_error(exc, str(uuid.uuid4()))
        request["body"] = body
        try:                                   # aiohttp's headers are already case-insensitive
            key_id = verify(request.method, request.path, request.query_string, request.headers, body.data, secrets,
                            region, clock(), payload_hash=body.sha256)
        except AuthError as exc:
            return control_error(exc)
        action, is_read = _action(request)
        if keys[key_id].scope == "read" and not is_read:
            return control_error(errors.Unauthorized(
                f"User: arn:aws:iam::{account_id}:user/{key_id} is not authorized to perform: "
                f"{action} because its access key is scoped to read (invoke, Describe*, List*).",
                "AccessDeniedException"))
        return await handler(request)

    return middleware
