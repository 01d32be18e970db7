"""A small Python client for the admin and runtime APIs (standard library only).

    from gateway.client import Client
    c = Client("http://127.0.0.1:8080")
    c.deploy("fraud", fn, memory_mb=2048)
    c.invoke("fraud", {"amount": 12.5})

``deploy`` takes a callable or an object with ``predict`` (pickled here with
cloudpickle), a ``.pkl`` file, a ``model.tar.gz``, or a model directory in the
SageMaker layout (packed here as model.tar.gz).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gateway import locate
from gateway.locate import DEFAULT_URL  # noqa: F401 - part of this module's interface
from gateway.sagemaker import credentials, sigv4


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def find_token(token: str | None = None, state_dir: str | os.PathLike | None = None) -> str | None:
    if token:
        return token
    if os.environ.get("SLIMSERVE_TOKEN"):
        return os.environ["SLIMSERVE_TOKEN"]
    state = locate.state_dir(state_dir)
    if state is None:
        return None
    path = state / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _user_module(obj):
    """The module to pickle by value: user code that a sandbox could not import by name."""
    target = obj if callable(obj) and hasattr(obj, "__module__") and not hasattr(obj, "predict") else type(obj)
    mod = sys.modules.get(getattr(target, "__module__", None) or "")
    path = getattr(mod, "__file__", None)
    if mod is None or mod.__name__ == "__main__" or not path:
        return None
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    if any(str(Path(path).resolve()).startswith(str(Path(p).resolve())) for p in installed):
        return None
    return mod


def pickle_model(obj) -> bytes:
    import cloudpickle

    mod = _user_module(obj)
    if mod is not None:
        cloudpickle.register_pickle_by_value(mod)
    try:
        return cloudpickle.dumps(obj)
    finally:
        if mod is not None:
            cloudpickle.unregister_pickle_by_value(mod)


def model_tar(model) -> bytes:
    """A SageMaker-style model.tar.gz holding ``model`` (a callable or an estimator) pickled as
    model.pkl: what CreateModel's ModelDataUrl points at once uploaded to S3."""
    import io
    import tarfile

    buf = io.BytesIO()
    data = pickle_model(model)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.pkl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bundle_bytes(model) -> bytes:
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir():
            from gateway.serving.bundles import pack_directory

            with tempfile.TemporaryDirectory() as tmp:
                return pack_directory(path, Path(tmp) / "model.tar.gz").read_bytes()
        if path.is_file():
            return path.read_bytes()
        raise FileNotFoundError(f"bundle {path} does not exist")
    return pickle_model(model)


class Client:
    def __init__(self, url: str | None = None, token: str | None = None,
                 state_dir: str | os.PathLike | None = None, timeout: float = 300.0):
        self.state_dir = locate.state_dir(state_dir)
        self.url = locate.url(url, self.state_dir)
        self.token = find_token(token, self.state_dir)
        self.timeout = timeout
        self.access_key = credentials.find(self.state_dir)      # signs runtime calls (None: sent unsigned)
        self.region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"

    # --- transport ----------------------------------------------------------
    def _request(self, method: str, path: str, query=None, body: bytes | None = None,
                 headers: dict | None = None, admin: bool = True, sink=None) -> tuple[int, dict, bytes]:
        """(status, headers, body); with ``sink`` (a binary file) the body is copied there as it
        arrives instead, and returned empty."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(
                [(k, v) for k, vs in query.items() if vs is not None
                 for v in (vs if isinstance(vs, (list, tuple)) else [vs])])
        hdrs = dict(headers or {})
        if admin:
            if not self.token:
                where = f" in {self.state_dir}" if self.state_dir else ""
                raise ClientError(0, "NoToken", f"no admin token{where}: pass --state-dir, set SLIMSERVE_STATE_DIR "
                                                "or SLIMSERVE_TOKEN, or start `slimserve serve` as this user")
            hdrs["Authorization"] = f"Bearer {self.token}"
        else:
            hdrs = sigv4.sign_url(method, url, body or b"", self.access_key, self.region, hdrs)
        req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                if sink is not None:
                    shutil.copyfileobj(resp, sink, 1 << 16)
                    return resp.status, dict(resp.headers), b""
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {}
            code = doc.get("error") or exc.headers.get("x-amzn-ErrorType", "").split(":")[0] or str(exc.code)
            message = doc.get("message") or doc.get("Message") or data.decode(errors="replace") or exc.reason
            raise ClientError(exc.code, code, message) from None
        except urllib.error.URLError as exc:
            raise ClientError(0, "ConnectionError", f"cannot reach the gateway at {self.url}: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:     # the answer broke off part way
            raise ClientError(0, "IncompleteResponse", f"the gateway's answer to {method} {path} broke off: "
                                                       f"{exc!r}") from None

    def _json(self, method, path, **kw):
        return json.loads(self._request(method, path, **kw)[2] or b"null")

    # --- admin ----------------------------------------------------------------
    def deploy(self, name: str, model, memory_mb: int, max_concurrency: int | None = None,
               provisioned: int | None = None, tags: dict | None = None, warmup: bool = True,
               multi_model: bool = False, model_cache: bool = True) -> dict:
        """``model``: a callable or object (pickled here), a local path (uploaded), or an
        ``s3://`` URL, which the gateway reads itself.  ``multi_model``: ``model`` is the prefix
        (``s3://bucket/prefix/`` or a directory under one of the gateway's model roots) whose
        models the endpoint serves by target path."""
        if multi_model:
            prefix = str(model) if _remote(model) else os.path.abspath(str(model))
            return self._json("PUT", f"/admin/endpoints/{_q(name)}",
                              query=dict(memory_mb=memory_mb, max_concurrency=max_concurrency,
                                         provisioned=provisioned, tag=[f"{k}={v}" for k, v in (tags or {}).items()],
                                         multi_model=prefix, model_cache=None if model_cache else "0"))
        remote = _remote(model)
        return self._json("PUT", f"/admin/endpoints/{_q(name)}", body=None if remote else bundle_bytes(model),
                          headers={"Content-Type": "application/octet-stream"},
                          query=dict(memory_mb=memory_mb, max_concurrency=max_concurrency, provisioned=provisioned,
                                     tag=[f"{k}={v}" for k, v in (tags or {}).items()],
                                     warmup=None if warmup else "0", model_data_url=remote))

    def update(self, name: str, model=None, memory_mb: int | None = None, max_concurrency: int | None = None,
               provisioned: int | None = None, tags: dict | None = None) -> dict:
        remote = _remote(model)
        body = bundle_bytes(model) if model is not None and not remote else None
        return self._json("PATCH", f"/admin/endpoints/{_q(name)}", body=body,
                          headers={"Content-Type": "application/octet-stream"},
                          query=dict(memory_mb=memory_mb, max_concurrency=max_concurrency, provisioned=provisioned,
                                     tag=[f"{k}={v}" for k, v in (tags or {}).items()], model_data_url=remote))

    def endpoints(self) -> list[dict]:
        return self._json("GET", "/admin/endpoints")

    def describe(self, name: str) -> dict:
        return self._json("GET", f"/admin/endpoints/{_q(name)}")

    def delete(self, name: str) -> dict:
        return self._json("DELETE", f"/admin/endpoints/{_q(name)}")

    def models(self, name: str) -> dict:
        """A multi-model endpoint's loaded models, per variant."""
        return self._json("GET", f"/admin/endpoints/{_q(name)}/models")

    def logs(self, name: str, tail: int = 200) -> str:
        return self._request("GET", f"/admin/endpoints/{_q(name)}/logs", query={"tail": tail})[2].decode()

    def usage(self, endpoint: str | None = None, since: float | None = None, until: float | None = None,
              limit: int | None = None, kind: str = "invocation") -> list[dict]:
        return self._json("GET", "/admin/usage",
                          query=dict(endpoint=endpoint, since=since, until=until, limit=limit, kind=kind))

    def bill(self, since: str | None = None, until: str | None = None, by: str = "endpoint",
             format: str = "json"):
        """A bill: the JSON document, or the CSV / HTML text when ``format`` asks for it."""
        query = dict(since=since, until=until, by=by, format=format)
        if format == "json":
            return self._json("GET", "/admin/bill", query=query)
        return self._request("GET", "/admin/bill", query=query)[2].decode()

    def usage_pages(self, endpoint: str | None = None, since: float | None = None, until: float | None = None,
                    kind: str = "invocation", page: int = 5000):
        """Every matching record, oldest first, fetched a page at a time by cursor."""
        after = 0
        while True:
            _, headers, body = self._request("GET", "/admin/usage", query=dict(
                endpoint=endpoint, since=since, until=until, kind=kind, after=after, page=page))
            yield from json.loads(body)
            nxt = next((v for k, v in headers.items() if k.lower() == "x-slimserve-next-after"), None)
            if not nxt:
                return
            after = int(nxt)

    def usage_csv(self, endpoint: str | None = None, since: float | None = None, until: float | None = None,
                  kind: str = "invocation", out=None) -> str | None:
        """Every matching record as CSV: the text, or with ``out`` (a binary file) streamed there."""
        query = dict(endpoint=endpoint, since=since, until=until, kind=kind, format="csv")
        if out is not None:
            self._request("GET", "/admin/usage", query=query, sink=out)
            return None
        return self._request("GET", "/admin/usage", query=query)[2].decode()

    def scale_in(self, name: str) -> dict:
        """Stop the endpoint's idle sandboxes now, down to its provisioned floor."""
        return self._json("POST", f"/admin/endpoints/{_q(name)}/scale-in")

    def zygotes(self) -> dict:
        return self._json("GET", "/admin/zygotes")

    def doctor(self) -> dict:
        return self._json("GET", "/admin/doctor")

    # --- runtime --------------------------------------------------------------
    def invoke_raw(self, name: str, body: bytes, content_type: str = "application/json",
                   accept: str | None = None, custom_attributes: str | None = None,
                   target_model: str | None = None) -> tuple[dict, bytes]:
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        if custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        if target_model is not None:
            headers["X-Amzn-SageMaker-Target-Model"] = target_model
        _, hdrs, data = self._request("POST", f"/endpoints/{_q(name)}/invocations", body=body,
                                      headers=headers, admin=False)
        return hdrs, data

    def invoke_async(self, name: str, body: bytes | None = None, input_location: str | None = None,
                     content_type: str = "application/json", accept: str | None = None,
                     custom_attributes: str | None = None, inference_id: str | None = None,
                     ttl_s: int | None = None, timeout_s: int | None = None) -> dict:
        """InvokeEndpointAsync: the body inline (<= 128,000 bytes) or an S3 ``input_location``;
        {"RequestId", "InferenceId", "OutputLocation", "FailureLocation"}."""
        h = {"X-Amzn-SageMaker-Content-Type": content_type, "X-Amzn-SageMaker-Accept": accept,
             "X-Amzn-SageMaker-Custom-Attributes": custom_attributes, "X-Amzn-SageMaker-Inference-Id": inference_id,
             "X-Amzn-SageMaker-InputLocation": input_location,
             "X-Amzn-SageMaker-RequestTTLSeconds": None if ttl_s is None else str(ttl_s),
             "X-Amzn-SageMaker-InvocationTimeoutSeconds": None if timeout_s is None else str(timeout_s)}
        _, hdrs, data = self._request("POST", f"/endpoints/{_q(name)}/async-invocations", body=body or b"",
                                      headers={k: v for k, v in h.items() if v is not None}, admin=False)
        low = {k.lower(): v for k, v in hdrs.items()}
        return {"RequestId": low.get("x-amzn-requestid"), "InferenceId": json.loads(data)["InferenceId"],
                "OutputLocation": low.get("x-amzn-sagemaker-outputlocation"),
                "FailureLocation": low.get("x-amzn-sagemaker-failurelocation")}

    def async_request(self, request_id: str) -> dict:
        """An asynchronous request as the queue keeps it (state, attempts, error, locations)."""
        return self._json("GET", f"/admin/async/{_q(request_id)}")

    def async_output(self, request_id: str, sink, failure: bool = False) -> None:
        """Copy the request's output object (or its failure object) into the binary file ``sink``."""
        self._request("GET", f"/admin/async/{_q(request_id)}/output", query={"failure": "1" if failure else None},
                      sink=sink)

    def transform_create(self, request: dict) -> dict:
        """CreateTransformJob (the request members as the SageMaker API takes them)."""
        return self._json("POST", "/admin/transform-jobs", body=json.dumps(request).encode(),
                          headers={"Content-Type": "application/json"})

    def transform_job(self, name: str) -> dict:
        """DescribeTransformJob's answer, with "Progress" (objects and records done, what it waits for)."""
        return self._json("GET", f"/admin/transform-jobs/{_q(name)}")

    def transform_jobs(self) -> list[dict]:
        return self._json("GET", "/admin/transform-jobs")["TransformJobs"]

    def transform_stop(self, name: str) -> dict:
        return self._json("POST", f"/admin/transform-jobs/{_q(name)}/stop")

    def transform_logs(self, name: str) -> str:
        return self._request("GET", f"/admin/transform-jobs/{_q(name)}/logs")[2].decode(errors="replace")

    def invoke(self, name: str, payload, target_model: str | None = None):
        """Send ``payload`` as JSON and decode a JSON answer."""
        hdrs, data = self.invoke_raw(name, json.dumps(payload).encode(), target_model=target_model)
        ctype = {k.lower(): v for k, v in hdrs.items()}.get("content-type", "")
        return json.loads(data) if ctype.startswith("application/json") else data


__all__ = ["Client", "ClientError", "find_token", "model_tar", "pickle_model"]


def _remote(model) -> str | None:
    """An ``s3://`` URL given as the model: the gateway fetches it (a local path is uploaded)."""
    return model if isinstance(model, str) and model.startswith("s3://") else None
