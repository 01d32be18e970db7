"""Bundles: scikit-learn models, the SageMaker layout (directory and model.tar.gz), and bad bundles."""
import io
import json
import pickle
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import pytest

from gateway.client import ClientError
from tests import models
from tests.helpers import ROOT

INFERENCE_PY = textwrap.dedent('''
    import json
    import os
    import pickle

    def model_fn(model_dir):
        with open(os.path.join(model_dir, "model.pickle"), "rb") as fh:
            return pickle.load(fh)

    def predict_fn(data, model):
        return model.predict_proba(data)
''')

TRANSFORM_PY = textwrap.dedent('''
    import json

    def model_fn(model_dir):
        return {"scale": 3}

    def transform_fn(model, body, content_type, accept, context):
        context.response_custom_attributes = "transformed"
        values = json.loads(body)
        return json.dumps([v * model["scale"] for v in values]), "application/json"
''')


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    return model, X


def _model_dir(tmp_path, model, script=INFERENCE_PY, requirements=None):
    d = tmp_path / "model"
    (d / "code").mkdir(parents=True)
    (d / "model.pickle").write_bytes(pickle.dumps(model))
    (d / "code" / "inference.py").write_text(script)
    if requirements is not None:
        (d / "code" / "requirements.txt").write_text(requirements)
    return d


def test_sklearn_estimator_pickled_by_the_client(gateway, iris):
    model, X = iris
    gateway.client().deploy("rf", model, memory_mb=2048)
    r = gateway.boto().invoke_endpoint(EndpointName="rf", Body=json.dumps(X[:5].tolist()),
                                       ContentType="application/json")
    assert json.loads(r["Body"].read()) == model.predict(X[:5]).tolist()


def test_an_estimator_takes_csv_as_sagemakers_sklearn_container_gives_it(gateway, iris):
    """CSV rows become the 2-D float array predict() expects, and the answer is CSV back."""
    from sklearn.linear_model import LogisticRegression

    _, X = iris
    y = (X[:, 0] > 5.8).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    gateway.client().deploy("lr-csv", model, memory_mb=2048)
    boto = gateway.boto()
    csv = "\n".join(",".join(str(v) for v in row) for row in X[:4]).encode()
    r = boto.invoke_endpoint(EndpointName="lr-csv", Body=csv, ContentType="text/csv")
    assert r["ContentType"] == "text/csv"
    assert r["Body"].read().decode().split() == [str(v) for v in model.predict(X[:4])]
    r = boto.invoke_endpoint(EndpointName="lr-csv", Body=csv, ContentType="text/csv", Accept="application/json")
    assert json.loads(r["Body"].read()) == model.predict(X[:4]).tolist()


def test_sagemaker_directory_with_default_io_handlers(gateway, iris, tmp_path):
    model, X = iris
    gateway.client().deploy("sm-dir", _model_dir(tmp_path, model, requirements="scikit-learn\nnumpy>=1.20\n"),
                            memory_mb=2048)
    boto = gateway.boto()
    r = boto.invoke_endpoint(EndpointName="sm-dir", Body=json.dumps(X[:3].tolist()), ContentType="application/json")
    assert np.allclose(json.loads(r["Body"].read()), model.predict_proba(X[:3]))
    csv = "\n".join(",".join(str(v) for v in row) for row in X[:2])
    r = boto.invoke_endpoint(EndpointName="sm-dir", Body=csv, ContentType="text/csv", Accept="text/csv")
    assert r["ContentType"] == "text/csv"
    got = np.loadtxt(io.StringIO(r["Body"].read().decode()), delimiter=",")
    assert np.allclose(got, model.predict_proba(X[:2]))
    buf = io.BytesIO()
    np.save(buf, X[:4])
    r = boto.invoke_endpoint(EndpointName="sm-dir", Body=buf.getvalue(), ContentType="application/x-npy",
                             Accept="application/x-npy")
    assert np.allclose(np.load(io.BytesIO(r["Body"].read())), model.predict_proba(X[:4]))


def test_sagemaker_model_tar_gz_with_transform_fn(gateway, tmp_path):
    d = _model_dir(tmp_path, {"unused": True}, TRANSFORM_PY)
    tgz = tmp_path / "model.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for child in d.iterdir():
            tar.add(child, arcname=child.name)
    gateway.client().deploy("sm-tgz", str(tgz), memory_mb=1024)
    r = gateway.boto().invoke_endpoint(EndpointName="sm-tgz", Body=b"[1, 2]", ContentType="application/json")
    assert json.loads(r["Body"].read()) == [3, 6]
    assert r["CustomAttributes"] == "transformed"


def test_missing_requirements_are_refused(gateway, iris, tmp_path):
    d = _model_dir(tmp_path, iris[0], requirements="scikit-learn\nno-such-package-xyz==1.0\n")
    with pytest.raises(ClientError) as exc:
        gateway.client().deploy("needs-pkg", d, memory_mb=1024)
    assert exc.value.status == 400
    assert "no-such-package-xyz==1.0" in exc.value.message and "not installed" in exc.value.message


def test_bundle_that_fails_to_import_is_refused_at_deploy(gateway, tmp_path):
    d = _model_dir(tmp_path, None, "import definitely_not_a_module\n\ndef model_fn(d):\n    return 1\n")
    with pytest.raises(ClientError) as exc:
        gateway.client().deploy("bad-import", d, memory_mb=1024)
    assert "ModuleNotFoundError" in exc.value.message and "definitely_not_a_module" in exc.value.message
    assert "bad-import" not in [e["name"] for e in gateway.client().endpoints()]


def test_pickle_of_unimportable_code_is_refused_at_deploy(gateway, tmp_path):
    # A pickle made in another interpreter, referring by name to a module only it had.
    script = textwrap.dedent('''
        import sys, types, cloudpickle
        mod = types.ModuleType("vanishing_module")
        exec("def f(x):\\n    return x", mod.__dict__)
        mod.f.__module__ = "vanishing_module"
        sys.modules["vanishing_module"] = mod
        sys.stdout.buffer.write(cloudpickle.dumps(mod.f))
    ''')
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, cwd=ROOT).stdout
    path = tmp_path / "f.pkl"
    path.write_bytes(data)
    with pytest.raises(ClientError) as exc:
        gateway.client().deploy("bad-pickle", str(path), memory_mb=1024)
    assert "vanishing_module" in exc.value.message


def test_garbage_bundles_are_refused_with_a_reason(gateway, tmp_path):
    c = gateway.client()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world")
    with pytest.raises(ClientError) as exc:
        c.deploy("junk", str(junk), memory_mb=1024)
    assert "neither a pickle" in exc.value.message
    truncated = tmp_path / "t.pkl"
    truncated.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
    with pytest.raises(ClientError) as exc:
        c.deploy("truncated", str(truncated), memory_mb=1024)
    assert "not a valid pickle" in exc.value.message
    nomodel = tmp_path / "m"
    (nomodel / "code").mkdir(parents=True)
    (nomodel / "code" / "inference.py").write_text("def predict_fn(d, m):\n    return d\n")
    with pytest.raises(ClientError) as exc:
        c.deploy("no-model-fn", nomodel, memory_mb=1024)
    assert "model_fn" in exc.value.message


def test_model_that_blows_its_tier_while_loading(gateway, tmp_path):
    script = "def model_fn(d):\n    b = bytearray(1600 << 20)\n    b[::4096] = b'1' * len(b[::4096])\n    return b\n"
    d = _model_dir(tmp_path, None, script)
    with pytest.raises(ClientError) as exc:
        gateway.client().deploy("fat-load", d, memory_mb=1024)
    assert "memory" in exc.value.message and "1024 MB" in exc.value.message


def test_a_slow_deploy_holds_up_no_other_endpoints_deploy(gateway):
    """Unpacking and trial-loading happen outside any lock another endpoint's change needs."""
    import threading

    c = gateway.client()
    done = {}

    def slow():
        c.deploy("slow-loader", models.SlowToLoad(6), memory_mb=1024)
        done["slow"] = True

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)                                   # the slow deploy is loading its model now
    c.deploy("quick-after-slow", models.echo, memory_mb=1024)
    assert "slow" not in done and t.is_alive()        # the quick one did not wait for it
    t.join(60)
    assert done == {"slow": True}
    assert c.invoke("slow-loader", 3) == 3


def test_a_bundle_over_the_flag_is_refused_with_the_reason(tmp_path):
    from tests.helpers import running_gateway

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"\0" * (12 << 20)
        info = tarfile.TarInfo("weights.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        script = b"def model_fn(d):\n    return None\n"
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(script)
        tar.addfile(info, io.BytesIO(script))
    with running_gateway("--max-bundle-mb", "8") as gw:
        with pytest.raises(ClientError) as err:
            gw.client().deploy("too-big", archive, memory_mb=1024)
        assert err.value.status == 400 and "larger than 8 MB unpacked" in err.value.message
