"""A multi-model sandbox's side (runtime.multimodel.ModelHost), in this process: models loaded from
the tars the gateway sends, kept apart, unloaded."""
import io
import json
import sys
import tarfile

import cloudpickle

from runtime.bundle import InvocationContext
from runtime.multimodel import ModelHost


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def call(host, key, body=b"1"):
    ctx = InvocationContext(content_type="application/json")
    ctx.extra["model"] = key
    return json.loads(host.invoke(body, ctx)[0])


def scripted(name: str) -> bytes:
    return tar_of({"code/inference.py": b"import helper\n\ndef model_fn(d):\n    return helper.NAME\n\n"
                                        b"def predict_fn(x, m):\n    return {'model': m, 'helper': helper.NAME}\n",
                   "code/helper.py": f"NAME = {name!r}\n".encode()})


def test_models_with_helpers_of_the_same_name_each_import_their_own():
    host = ModelHost()
    assert host.load("m1", "sagemaker", scripted("A"))["ok"]
    assert host.load("m2", "sagemaker", scripted("B"))["ok"]
    assert call(host, "m1") == {"model": "A", "helper": "A"}
    assert call(host, "m2") == {"model": "B", "helper": "B"}
    host.unload("m1")
    host.unload("m2")
    assert not any(n.startswith("inference_m") for n in sys.modules)
    assert not any(p.startswith(host.root) for p in sys.path)


def test_a_failed_load_reports_why_and_leaves_nothing_behind():
    host = ModelHost()
    got = host.load("m3", "pickle", tar_of({"model.pkl": b"not a pickle"}))
    assert got["ok"] is False and got["error_kind"] == "load_failed" and "UnpicklingError" in got["message"]
    assert host.load("../x", "pickle", b"")["ok"] is False            # only the gateway's own keys
    assert host.load("m4", "pickle", tar_of({"model.pkl": cloudpickle.dumps(lambda x: {"y": x})}))["ok"]
    assert call(host, "m4", b"5") == {"y": 5}
