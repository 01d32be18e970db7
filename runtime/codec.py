"""Request decoding and response encoding inside a sandbox.

Two conventions live here:

* ``decode_body``/``encode_result`` serve pickled callables: JSON becomes Python
  objects, ``text/*`` becomes ``str``, anything else stays ``bytes``; results are
  serialised by the Accept type (JSON by default, numpy values become lists and
  numbers, ``bytes`` and ``str`` pass through).
* ``default_input_fn``/``default_output_fn`` are SageMaker's default handlers for
  framework containers: JSON, CSV and NPY in and out, arrays in the middle.
"""
from __future__ import annotations

import io
import json
import math

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
OCTET = "application/octet-stream"


class UnsupportedMediaType(Exception):
    """The body or the Accept type is one the handler cannot deal with."""


class OutputError(Exception):
    """The model returned a value that cannot be serialised as asked."""


def media_type(value: str | None) -> str:
    """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
    return (value or "").split(";", 1)[0].strip().lower()


def _wants(accept: str | None) -> str:
    mt = media_type(accept)
    return "" if mt in ("", "*/*") else mt


def decode_body(body: bytes, content_type: str | None):
    mt = media_type(content_type)
    if mt == JSON or mt.endswith("+json"):
        try:
            return json.loads(body) if body else None
        except ValueError as exc:
            raise UnsupportedMediaType(f"request body is not valid JSON: {exc}") from None
    if mt.startswith("text/"):
        return body.decode("utf-8", errors="replace")
    return body


def decode_features(body: bytes, content_type: str | None):
    """A request for an object with ``predict`` (a scikit-learn estimator, a pipeline): what
    SageMaker's scikit-learn container gives ``predict``: CSV as a 2-D float array (one row per
    line), a JSON list as an array, NPY as stored; other JSON values and other types as
    ``decode_body`` decodes them."""
    mt = media_type(content_type)
    if mt == CSV:
        return _csv_rows(body)
    if mt == NPY:
        import numpy as np

        try:
            return np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UnsupportedMediaType(f"request body is not an NPY array: {exc}") from None
    value = decode_body(body, content_type)
    if isinstance(value, list):
        import numpy as np

        try:
            arr = np.asarray(value)
        except ValueError:                    # ragged rows: left as they came
            return value
        return arr if arr.dtype != object else value
    return value


MAX_CSV_COLUMNS = 100_000       # features per row at most: a body of commas must not become a 2-M-column frame


def _csv_rows(body: bytes):
    """CSV of numbers as a 2-D float array, one row a line (a one-column CSV is N rows of one
    feature, not one row of N); an empty field is NaN, as SageMaker's decoder reads it.  pandas'
    C parser where it is installed (genfromtxt is pure Python: seconds for a few MB)."""
    import numpy as np

    first = body.split(b"\n", 1)[0]
    if first.count(b",") >= MAX_CSV_COLUMNS:
        raise UnsupportedMediaType(f"request CSV has more than {MAX_CSV_COLUMNS} columns")
    try:
        import pandas as pd
    except ImportError:
        pd = None
    try:
        if pd is not None:
            return pd.read_csv(io.BytesIO(body), header=None, dtype=float, skip_blank_lines=True).to_numpy()
        return np.genfromtxt(io.StringIO(body.decode("utf-8")), delimiter=",", dtype=float, ndmin=2)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnsupportedMediaType(f"request body is not CSV of numbers: {str(exc)[:200]}") from None


def _jsonable(obj):
    """Fallback for ``json.dumps``: numpy arrays, scalars and other array-likes."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", errors="replace")
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def dumps(value) -> bytes:
    """JSON that every parser reads: NaN and ±Infinity, which JSON has no words for (Python
    would write the non-JSON ``NaN``), are written as ``null``, as JavaScript's JSON.stringify
    and pandas do.  Only an answer holding one pays for the second pass."""
    try:
        return json.dumps(value, default=_jsonable, allow_nan=False).encode()
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        return json.dumps(_finite(value), default=_jsonable, allow_nan=False).encode()


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return _finite(obj.item())
    return obj


def encode_result(value, accept: str | None) -> tuple[bytes, str]:
    """Serialise a callable's return value; returns (body, content type)."""
    try:
        return _encode(value, accept)
    except (TypeError, ValueError) as exc:
        raise OutputError(
            f"the model returned a {type(value).__name__} that cannot be serialised"
            f" as {_wants(accept) or JSON}: {exc}"
        ) from None


def _encode(value, accept: str | None) -> tuple[bytes, str]:
    want = _wants(accept)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), want or OCTET
    if isinstance(value, str):
        return value.encode(), want or "text/plain; charset=utf-8"
    if want in ("", JSON) or want.endswith("+json"):
        return dumps(value), JSON
    if want == CSV:
        return _to_csv(value), CSV
    if want == NPY:
        return _to_npy(value), NPY
    raise UnsupportedMediaType(f"cannot serialise {type(value).__name__} as {want}")


def _to_csv(value) -> bytes:
    import numpy as np

    if isinstance(value, dict):
        raise TypeError("a mapping has no CSV form: return rows (a list of lists or an array), or ask for "
                        "application/json")
    arr = np.asarray(value)
    if arr.dtype == object and any(isinstance(v, (dict, list, tuple, set)) for v in arr.flat):
        raise TypeError("rows of mappings or of uneven length have no CSV form: return an array, or ask for "
                        "application/json")
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr.reshape(-1, 1) if arr.size else arr.reshape(0, 1)
    if arr.ndim == 2 and (arr.dtype.kind in "biu" or arr.dtype == np.float64):
        # The same text as savetxt's "%s" (Python's str of each value: tolist() gives Python ints,
        # bools and floats, whose str numpy's scalars share), without its per-row formatting:
        # a model's CSV answer of 250,000 labels is 40 ms here, 340 ms through savetxt.
        if arr.shape[1] == 1:
            text = "\n".join(map(str, arr.ravel().tolist()))
        else:
            text = "\n".join(",".join(map(str, row)) for row in arr.tolist())
        return (text + "\n").encode() if arr.shape[0] else b""
    buf = io.StringIO()
    np.savetxt(buf, arr, delimiter=",", fmt="%s")
    return buf.getvalue().encode()


def _to_npy(value) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


# --- SageMaker framework-container default handlers -------------------------

def default_input_fn(body: bytes, content_type: str | None):
    import numpy as np

    mt = media_type(content_type) or JSON
    if mt == JSON:
        return np.asarray(json.loads(body))
    if mt == CSV:
        return _csv_rows(body)
    if mt == NPY:
        return np.load(io.BytesIO(body), allow_pickle=False)
    raise UnsupportedMediaType(
        f"content type {mt} is not supported by the default input_fn (use {JSON}, {CSV} or {NPY})"
    )


def default_predict_fn(data, model):
    return model.predict(data) if hasattr(model, "predict") else model(data)


def default_output_fn(prediction, accept: str | None):
    want = _wants(accept) or JSON
    if want == JSON:
        return dumps(prediction), JSON
    if want == CSV:
        return _to_csv(prediction), CSV
    if want == NPY:
        return _to_npy(prediction), NPY
    raise UnsupportedMediaType(
        f"accept type {want} is not supported by the default output_fn (use {JSON}, {CSV} or {NPY})"
    )
