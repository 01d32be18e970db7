"""The invocation use case on fakes: every outcome a caller can meet, each known-variant
invocation with exactly one usage record of the right status and kind, none for a refusal."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway import errors
from gateway.clock import FakeClock
from gateway.config import Settings
from gateway.domain import EndpointSpec, VariantSpec
from gateway.pools.admission import HostBudget
from gateway.pools.manager import PoolManager
from gateway.pools.policy import FixedKeepAlive
from gateway.serving.invoker import Invocation, Invoker
from runtime import sandbox as sbx
from tests.fakes import FakeBackend, FakeSandbox


class ScriptedSandbox(FakeSandbox):
    async def invoke(self, request, timeout_s):
        self._move(sbx.State.BUSY)
        self._move(sbx.State.IDLE)
        return self.script(request)


class ScriptedBackend(FakeBackend):
    def __init__(self):
        super().__init__()
        self.script = lambda req: sbx.InvokeResult(True, body=req.body, content_type="application/json",
                                                   model_ms=2.4)
        self.start_error: sbx.StartError | None = None

    async def start(self, spec):
        if self.start_error is not None:
            raise self.start_error
        sb = ScriptedSandbox(spec, self.listeners)
        sb.facts = sbx.StartFacts(path="zygote", timings={"fork_ms": 1.25})
        sb.script = self.script
        self.started.append(sb)
        return sb


class Ledger:
    def __init__(self):
        self.records, self.fail = [], False

    async def record(self, rec):
        if self.fail:
            raise OSError("disk full")
        self.records.append(rec)


class Counted:
    def __init__(self):
        self.rejected = []

    def request_rejected(self, code):
        self.rejected.append(code)


@pytest.fixture
def rig(tmp_path):
    backend, clock = ScriptedBackend(), FakeClock()
    manager = PoolManager(backend, HostBudget(8192), clock, tmp_path, policy=FixedKeepAlive(600))
    backend.listeners.append(manager.on_sandbox_event)
    variants = [VariantSpec(name="A", memory_mb=1024, max_concurrency=1, bundle_kind="pickle", bundle_dir="/x",
                            bundle_version=1, weight=1.0),
                VariantSpec(name="B", memory_mb=2048, bundle_kind="pickle", bundle_dir="/y", bundle_version=1,
                            weight=0.0)]
    endpoints = SimpleNamespace(specs={"ep": EndpointSpec(name="ep", variants=variants)})
    ledger, metrics = Ledger(), Counted()
    invoker = Invoker(Settings(), clock, endpoints, manager, ledger, metrics)
    return SimpleNamespace(invoker=invoker, backend=backend, manager=manager, ledger=ledger, metrics=metrics)


async def _call(rig, body=b"[1]", **kw):
    await rig.manager.configure("ep", rig.invoker.endpoints.specs["ep"].variants)
    return await rig.invoker.invoke(Invocation(endpoint="ep", body=body, **kw))


async def test_a_cold_then_a_warm_invocation_each_get_one_record(rig):
    first = await _call(rig)
    second = await _call(rig)
    assert first.ok and first.result.body == b"[1]" and first.variant == "A"
    a, b = rig.ledger.records
    assert (a.status, a.cold_start, a.start_path, a.billed_ms, a.bytes_in, a.bytes_out) == ("ok", True, "zygote",
                                                                                             3, 3, 3)
    assert set(a.init_detail) == {"fork_ms", "first_predict_ms", "total_ms"} and a.init_detail["fork_ms"] == 1.25
    assert not b.cold_start and b.start_path is None and b.init_detail is None
    assert a.request_id == first.request_id != second.request_id == b.request_id


async def test_refusals_before_routing_are_counted_but_not_billed(rig):
    out = await rig.invoker.invoke(Invocation(endpoint="nope", body=b"1"))
    assert isinstance(out.error, errors.NotFound) and out.variant is None
    bad = await _call(rig, target_variant="C")
    assert isinstance(bad.error, errors.Invalid) and "Variant C not found" in bad.error.message
    assert rig.ledger.records == [] and rig.metrics.rejected == ["ValidationError", "ValidationError"]


async def test_target_variant_reaches_a_zero_weight_variant(rig):
    out = await _call(rig, target_variant="B")
    assert out.ok and out.variant == "B" and rig.ledger.records[0].memory_mb == 2048


async def test_a_model_failure_is_a_model_error_record_with_its_kind(rig):
    rig.backend.script = lambda req: sbx.InvokeResult(False, error_kind=sbx.MODEL_RAISED, message="boom",
                                                      original_status=500, model_ms=1.0)
    out = await _call(rig)
    assert isinstance(out.error, errors.ModelFailed) and out.error.kind == sbx.MODEL_RAISED
    assert out.error.log_stream.endswith("/aws/sagemaker/Endpoints/ep") and out.result is None
    rec = rig.ledger.records[0]
    assert (rec.status, rec.error_kind, rec.billed_ms, rec.bytes_out) == ("ModelError", "model_raised", 1, 0)


@pytest.mark.parametrize("kind, error, code", [
    (sbx.SPAWN_FAILED, errors.Unavailable, "ServiceUnavailable"),
    (sbx.OUT_OF_MEMORY, errors.ModelFailed, "ModelError"),
    (sbx.EXITED, errors.ModelFailed, "ModelError"),
])
async def test_a_start_that_fails_is_recorded_as_what_failed(rig, kind, error, code):
    rig.backend.start_error = sbx.StartError(kind, "no")
    out = await _call(rig)
    assert type(out.error) is error
    rec = rig.ledger.records[0]
    assert rec.status == code and rec.billed_ms == 0
    if error is errors.ModelFailed:          # a load that failed, or ran out of memory, is the model's
        assert out.error.kind == (sbx.OUT_OF_MEMORY if kind == sbx.OUT_OF_MEMORY else sbx.LOAD_FAILED)


async def test_over_max_concurrency_is_throttled_and_recorded(rig):
    await rig.manager.configure("ep", rig.invoker.endpoints.specs["ep"].variants)
    pool = rig.manager.pool("ep", "A")
    lease = await pool.acquire()                       # A's one slot is taken
    out = await rig.invoker.invoke(Invocation(endpoint="ep", body=b"1"))
    await pool.release(lease)
    assert isinstance(out.error, errors.Throttled)
    assert (rig.ledger.records[0].status, rig.ledger.records[0].error_kind) == ("ThrottlingException", "throttled")


async def test_a_sandbox_gone_under_the_request_is_not_ready(rig):
    rig.backend.script = lambda req: sbx.InvokeResult(False, error_kind=sbx.DEAD_HANDLE, message="gone")
    out = await _call(rig)
    assert isinstance(out.error, errors.NotReady)
    assert rig.ledger.records[0].status == "ModelNotReadyException"


async def test_a_gateway_bug_still_gets_a_record_and_an_internal_error(rig):
    def broken(req):
        raise KeyError("bug")
    rig.backend.script = broken
    out = await _call(rig)
    assert isinstance(out.error, errors.Internal) and "KeyError" in out.error.message
    assert rig.ledger.records[0].status == "InternalFailure"


async def test_a_record_that_cannot_be_made_durable_is_never_answered_ok(rig):
    rig.ledger.fail = True
    out = await _call(rig)
    assert isinstance(out.error, errors.Internal) and "usage could not be recorded" in out.error.message
    assert out.result is None
