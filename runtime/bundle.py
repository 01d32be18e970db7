"""Model bundles: what a sandbox loads and how it is called.

Two kinds, both loaded only inside a sandbox (loading runs user code):

* ``pickle`` -- a cloudpickled callable, or an object with ``predict``, in
  ``model.pkl``.  Called with the decoded body (see ``codec.decode_body``).
* ``sagemaker`` -- the SageMaker framework-container layout: artifacts at the
  top, ``code/inference.py`` with ``model_fn(model_dir)`` and optionally
  ``input_fn``/``predict_fn``/``output_fn`` or ``transform_fn``.  Missing
  handlers fall back to SageMaker's defaults (JSON, CSV, NPY).

A handler that declares one more positional parameter than the convention
(or a parameter named ``context``) receives an ``InvocationContext``, which
carries the request's custom attributes and lets the model set the response's.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runtime import codec

PICKLE = "pickle"
SAGEMAKER = "sagemaker"
MULTI_MODEL = "multi-model"            # a sandbox that starts with no model and is given models to load
PICKLE_FILE = "model.pkl"
ENTRY_SCRIPT = "inference.py"          # the handler module of a SageMaker-layout bundle, in code/
HANDLERS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


def entry_shim(module: str) -> str:
    """code/inference.py for a bundle whose entry script (SAGEMAKER_PROGRAM) is ``module``.py:
    it takes that module's handlers, so the handler is loaded under one name."""
    return (f"# written by slimserve: SAGEMAKER_PROGRAM names {module}.py, whose handlers these are\n"
            "import importlib as _importlib\n\n"
            f"_program = _importlib.import_module({module!r})\n"
            f"for _name in {HANDLERS!r}:\n"
            "    if hasattr(_program, _name):\n"
            "        globals()[_name] = getattr(_program, _name)\n")


class BundleError(Exception):
    """The bundle cannot be used: the message says why, in one line."""


@dataclass
class InvocationContext:
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    response_custom_attributes: str | None = None
    extra: dict = field(default_factory=dict)


def _accepts_context(fn, n_args: int) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    params = list(sig.parameters.values())
    if any(p.name == "context" for p in params):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > n_args


def _call(fn, args: tuple, ctx: InvocationContext):
    if _accepts_context(fn, len(args)):
        return fn(*args, ctx)
    return fn(*args)


class PickleHandler:
    def __init__(self, bundle_dir: Path):
        import cloudpickle

        path = bundle_dir / PICKLE_FILE
        with open(path, "rb") as fh:
            obj = cloudpickle.load(fh)
        self.estimator = hasattr(obj, "predict") and callable(obj.predict)
        if self.estimator:
            self.fn = obj.predict
        elif callable(obj):
            self.fn = obj
        else:
            raise BundleError(
                f"the pickled object is a {type(obj).__name__}, which is neither callable nor has predict()"
            )

    def invoke(self, body: bytes, ctx: InvocationContext) -> tuple[bytes, str]:
        if not self.estimator:
            return codec.encode_result(_call(self.fn, (codec.decode_body(body, ctx.content_type),), ctx), ctx.accept)
        # an estimator: features as SageMaker's scikit-learn container gives them, and CSV in
        # answers CSV unless the caller asks for something else
        result = _call(self.fn, (codec.decode_features(body, ctx.content_type),), ctx)
        accept = ctx.accept
        if codec.media_type(ctx.content_type) == codec.CSV and codec.media_type(accept) in ("", "*/*"):
            accept = codec.CSV
        return codec.encode_result(result, accept)


class SageMakerHandler:
    """``module_name``: what the entry script is imported as (several models in one process each
    need their own: ``runtime.multimodel``)."""

    def __init__(self, model_dir: Path, module_name: str = "inference"):
        code_dir = model_dir / "code"
        script = code_dir / "inference.py"
        if not script.exists():
            raise BundleError("code/inference.py is missing from the model directory")
        check_requirements(model_dir)
        self.code_dir = str(code_dir)
        sys.path.insert(0, self.code_dir)
        spec = importlib.util.spec_from_file_location(module_name, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        if not hasattr(module, "model_fn"):
            raise BundleError("code/inference.py does not define model_fn(model_dir)")
        self.module = module
        ctx = InvocationContext()
        self.model = _call(module.model_fn, (str(model_dir),), ctx)
        self.transform_fn = getattr(module, "transform_fn", None)
        self.input_fn = getattr(module, "input_fn", None) or codec.default_input_fn
        self.predict_fn = getattr(module, "predict_fn", None) or codec.default_predict_fn
        self.output_fn = getattr(module, "output_fn", None) or codec.default_output_fn

    def invoke(self, body: bytes, ctx: InvocationContext) -> tuple[bytes, str]:
        if self.transform_fn is not None:
            out = _call(self.transform_fn, (self.model, body, ctx.content_type, ctx.accept), ctx)
        else:
            data = _call(self.input_fn, (body, ctx.content_type), ctx)
            prediction = _call(self.predict_fn, (data, self.model), ctx)
            out = _call(self.output_fn, (prediction, ctx.accept), ctx)
        return _normalise_output(out, ctx.accept)


def _normalise_output(out, accept: str | None) -> tuple[bytes, str]:
    """output_fn may return a body, or (body, content type) as the toolkit allows."""
    content_type = None
    if isinstance(out, tuple) and len(out) == 2:
        out, content_type = out
    if isinstance(out, str):
        out = out.encode()
    if not isinstance(out, (bytes, bytearray, memoryview)):
        body, ct = codec.encode_result(out, accept)
        return body, content_type or ct
    mt = codec.media_type(accept)
    return bytes(out), content_type or (accept if mt not in ("", "*/*") else codec.JSON)


def load(bundle_dir: str | os.PathLike, kind: str, module_name: str = "inference"):
    bundle_dir = Path(bundle_dir)
    if kind == PICKLE:
        return PickleHandler(bundle_dir)
    if kind == SAGEMAKER:
        return SageMakerHandler(bundle_dir, module_name)
    if kind == MULTI_MODEL:
        from runtime.multimodel import ModelHost

        return ModelHost()
    raise BundleError(f"unknown bundle kind {kind!r}")


def check_requirements(model_dir: Path) -> None:
    """Refuse a ``code/requirements.txt`` whose packages are not installed.

    slimserve does not install packages at load time (sandboxes have no
    network); the operator installs them into the runtime environment.
    """
    req = Path(model_dir) / "code" / "requirements.txt"
    if not req.exists():
        return
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for raw in req.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            r = Requirement(line)
        except InvalidRequirement:
            raise BundleError(f"code/requirements.txt: cannot parse {line!r}") from None
        if r.marker is not None and not r.marker.evaluate():
            continue
        try:
            version = metadata.version(r.name)
        except metadata.PackageNotFoundError:
            missing.append(str(r))
            continue
        if r.specifier and not r.specifier.contains(version, prereleases=True):
            missing.append(f"{r} (installed: {version})")
    if missing:
        raise BundleError(
            "code/requirements.txt needs packages that are not installed in the runtime: "
            + ", ".join(missing)
            + " (sandboxes cannot install packages; install them next to slimserve)"
        )
