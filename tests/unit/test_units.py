"""Unit tests: codecs, bundle checks, specs, the store and group commit."""
import asyncio
import io
import json
import pickle
import sqlite3
import tarfile

import numpy as np
import pytest

from gateway.domain import EndpointSpec, UsageRecord, VariantSpec, parse_tags
from gateway.errors import Invalid
from gateway.metering.meter import Meter
from gateway.serving import bundles
from gateway.store.sqlite import Store
from runtime import codec
from runtime.bundle import BundleError, check_requirements


def test_decode_by_content_type():
    assert codec.decode_body(b'{"a": 1}', "application/json; charset=utf-8") == {"a": 1}
    assert codec.decode_body(b"hi", "text/plain") == "hi"
    assert codec.decode_body(b"\x00", None) == b"\x00"
    with pytest.raises(codec.UnsupportedMediaType):
        codec.decode_body(b"{", "application/json")


def test_encode_results():
    assert codec.encode_result(np.float32(1.5), None) == (b"1.5", "application/json")
    assert codec.encode_result(np.array([[1, 2]]), "*/*") == (b"[[1, 2]]", "application/json")
    assert codec.encode_result(b"\x01", None) == (b"\x01", "application/octet-stream")
    assert codec.encode_result("x", None)[0] == b"x"
    body, ctype = codec.encode_result([1, 2], "application/x-npy")
    assert ctype == "application/x-npy" and np.load(io.BytesIO(body)).tolist() == [1, 2]
    with pytest.raises(codec.OutputError):
        codec.encode_result(object(), None)
    with pytest.raises(codec.UnsupportedMediaType):
        codec.encode_result({1, 2}, "image/png")


def test_default_handlers_roundtrip_csv():
    arr = codec.default_input_fn(b"1,2\n3,4\n", "text/csv")
    assert arr.shape == (2, 2)
    body, ctype = codec.default_output_fn(arr, "text/csv")
    assert ctype == "text/csv" and body.decode().split() == ["1.0,2.0", "3.0,4.0"]
    with pytest.raises(codec.UnsupportedMediaType):
        codec.default_input_fn(b"x", "image/png")


def test_requirements_check(tmp_path):
    (tmp_path / "code").mkdir()
    req = tmp_path / "code" / "requirements.txt"
    req.write_text("numpy\n# comment\npytest>=1\n")
    check_requirements(tmp_path)
    req.write_text("numpy<1.0\n")
    with pytest.raises(BundleError, match="numpy<1.0 \\(installed"):
        check_requirements(tmp_path)


def test_bundle_unpack_kinds_and_hoisting(tmp_path):
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(pickle.dumps([1]))
    assert bundles.unpack(pkl, tmp_path / "p") == "pickle"
    src = tmp_path / "src" / "model"
    (src / "code").mkdir(parents=True)
    (src / "code" / "inference.py").write_text("def model_fn(d):\n    return 1\n")
    tgz = tmp_path / "m.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src, arcname="model")           # an archive of the directory, not its contents
    assert bundles.unpack(tgz, tmp_path / "s") == "sagemaker"
    assert (tmp_path / "s" / "code" / "inference.py").exists()


def test_bundle_rejects_path_escape(tmp_path):
    tgz = tmp_path / "evil.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(bundles.BundleRejected):
        bundles.unpack(tgz, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_spec_validation_messages():
    EndpointSpec("ok-name", [VariantSpec(memory_mb=6144, max_concurrency=200, provisioned=200)]).validate()
    with pytest.raises(Invalid, match="1024, 2048"):
        VariantSpec(memory_mb=512).validate()
    with pytest.raises(Invalid):
        EndpointSpec("-bad", [VariantSpec()]).validate()
    assert parse_tags(["a=b", "c=d=e"]) == {"a": "b", "c": "d=e"}
    with pytest.raises(Invalid):
        parse_tags(["novalue"])


def test_billing_rounds_up_to_the_next_millisecond():
    assert UsageRecord.bill(0.0) == 0
    assert UsageRecord.bill(0.001) == 1
    assert UsageRecord.bill(12.0) == 12
    assert UsageRecord.bill(12.0001) == 13


def _rec(i):
    return UsageRecord(request_id=f"r{i}", endpoint="e", variant="v", memory_mb=1024, start=1.0 + i,
                       billed_ms=1, model_ms=0.5, overhead_ms=0.1, cold_start=False, init_ms=0.0, status="ok")


async def test_group_commit_batches_and_every_waiter_is_durable(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    batches = []
    real_insert = store.insert_usage

    async def counting(records):
        batches.append(len(records))
        await real_insert(records)

    store.insert_usage = counting
    meter = Meter(store)
    await meter.start()
    await asyncio.gather(*(meter.record(_rec(i)) for i in range(100)))
    assert sum(batches) == 100 and len(batches) < 100          # shared transactions
    rows = await store.query_usage()
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(100)]
    with pytest.raises(sqlite3.IntegrityError):
        await meter.record(_rec(0))                              # a duplicate is refused, not doubled
    assert len(await store.query_usage()) == 100
    await meter.stop()
    await store.close()
    assert json.dumps(rows)
