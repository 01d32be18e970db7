"""Endpoint lifecycle, admission and persistence, against a real gateway."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.client import ClientError
from tests import models
from tests.helpers import wait_until


def _body(r):
    return json.loads(r["Body"].read())


def test_memory_sizes_and_limits_are_validated(gateway):
    c = gateway.client()
    with pytest.raises(ClientError) as exc:
        c.deploy("bad-mem", models.echo, memory_mb=1000)
    assert exc.value.status == 400 and "1024, 2048, 3072, 4096, 5120, 6144" in exc.value.message
    with pytest.raises(ClientError) as exc:
        c.deploy("bad-conc", models.echo, memory_mb=1024, max_concurrency=201)
    assert "1..200" in exc.value.message
    with pytest.raises(ClientError) as exc:
        c.deploy("bad-prov", models.echo, memory_mb=1024, max_concurrency=2, provisioned=3)
    assert "provisioned" in exc.value.message
    with pytest.raises(ClientError) as exc:
        c.deploy("bad name!", models.echo, memory_mb=1024)
    assert exc.value.status == 400
    assert all(e["name"] not in ("bad-mem", "bad-conc", "bad-prov") for e in c.endpoints())


def test_no_sandbox_until_first_request(gateway):
    c = gateway.client()
    c.deploy("lazy", models.echo, memory_mb=1024, tags={"team": "fraud"})
    d = c.describe("lazy")
    assert d["tags"] == {"team": "fraud"}
    assert d["variants"][0]["pool"]["sandboxes"] == []
    gateway.boto().invoke_endpoint(EndpointName="lazy", Body=b"1", ContentType="application/json")
    assert [s["state"] for s in c.describe("lazy")["variants"][0]["pool"]["sandboxes"]] == ["idle"]


def test_duplicate_deploy_is_refused(gateway):
    c = gateway.client()
    c.deploy("dup", models.echo, memory_mb=1024)
    with pytest.raises(ClientError) as exc:
        c.deploy("dup", models.echo, memory_mb=1024)
    assert exc.value.status == 409


def test_beyond_max_concurrency_is_throttled_at_once(gateway):
    c = gateway.client()
    c.deploy("narrow", models.sleeps, memory_mb=1024, max_concurrency=1)
    boto = gateway.boto()
    started = threading.Event()

    def slow():
        started.set()
        return _body(boto.invoke_endpoint(EndpointName="narrow", Body=b"2", ContentType="application/json"))

    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(slow)
        started.wait()
        wait_until(lambda: c.describe("narrow")["variants"][0]["pool"]["in_flight"] == 1)
        t0 = time.monotonic()
        with pytest.raises(boto.exceptions.ClientError) as exc:
            boto.invoke_endpoint(EndpointName="narrow", Body=b"0", ContentType="application/json")
        assert time.monotonic() - t0 < 1.0          # refused at once, not queued
        assert exc.value.response["Error"]["Code"] == "ThrottlingException"
        assert fut.result() == 2
    statuses = [u["status"] for u in c.usage(endpoint="narrow")]
    assert sorted(statuses) == ["ThrottlingException", "ok"]


def test_update_bundle_under_load_drops_nothing(gateway):
    c = gateway.client()
    c.deploy("rolling", models.echo, memory_mb=1024, max_concurrency=50)
    boto = gateway.boto()
    stop = threading.Event()
    results = []

    def hammer():
        while not stop.is_set():
            try:
                results.append(_body(boto.invoke_endpoint(EndpointName="rolling", Body=b"[1,2]",
                                                          ContentType="application/json")))
            except Exception as exc:  # noqa: BLE001 - every failure is a test failure below
                results.append(exc)

    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(hammer) for _ in range(4)]
        wait_until(lambda: len(results) > 20)
        c.update("rolling", models.Doubler())
        n_at_update = len(results)
        wait_until(lambda: len(results) > n_at_update + 20)
        stop.set()
        for f in futs:
            f.result()
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert {"echo": [1, 2]} in results and [2, 4] in results
    assert results.index([2, 4]) > results.index({"echo": [1, 2]})
    assert c.describe("rolling")["variants"][0]["bundle_version"] == 2


def test_update_settings_and_delete(gateway):
    c = gateway.client()
    c.deploy("tuned", models.echo, memory_mb=1024)
    d = c.update("tuned", max_concurrency=7, tags={"env": "prod"})
    assert d["variants"][0]["max_concurrency"] == 7 and d["tags"]["env"] == "prod"
    d = c.update("tuned", memory_mb=2048)
    assert d["variants"][0]["memory_mb"] == 2048
    c.delete("tuned")
    assert "tuned" not in [e["name"] for e in c.endpoints()]
    with pytest.raises(ClientError) as exc:
        c.describe("tuned")
    assert exc.value.status == 404


def test_admin_api_needs_the_token(gateway):
    from gateway.client import Client

    with pytest.raises(ClientError) as exc:
        Client(gateway.url, token="wrong").endpoints()
    assert exc.value.status == 401
    mode = (gateway.state_dir / "admin-token").stat().st_mode & 0o777
    assert mode == 0o600


def test_provisioned_sandboxes_are_warm_and_metered(fresh_gateway):
    gw = fresh_gateway()
    c = gw.client()
    c.deploy("prov", models.echo, memory_mb=1024, provisioned=2)
    pool = wait_until(lambda: (p := c.describe("prov")["variants"][0]["pool"])["states"].get("idle") == 2 and p)
    assert pool["states"]["idle"] == 2
    r = gw.boto().invoke_endpoint(EndpointName="prov", Body=b"1", ContentType="application/json")
    assert _body(r) == {"echo": 1}
    assert c.usage(endpoint="prov")[-1]["cold_start"] is False
    gw.stop()                          # a graceful stop writes the last provisioned checkpoint
    gw = fresh_gateway()
    rows = gw.client().usage(endpoint="prov", kind="provisioned")
    assert rows and rows[0]["sandboxes"] == 2 and rows[0]["billed_ms"] > 0
    # the restarted gateway warms provisioned sandboxes again
    assert wait_until(lambda: gw.client().describe("prov")["variants"][0]["pool"]["states"].get("idle") == 2)


def test_endpoints_survive_restart(fresh_gateway):
    gw = fresh_gateway()
    gw.client().deploy("keep", models.Doubler(), memory_mb=2048, max_concurrency=3, tags={"a": "b"})
    gw.stop()
    gw = fresh_gateway()
    d = gw.client().describe("keep")
    assert d["variants"][0]["memory_mb"] == 2048 and d["variants"][0]["max_concurrency"] == 3
    assert d["tags"] == {"a": "b"}
    r = gw.boto().invoke_endpoint(EndpointName="keep", Body=b"[5]", ContentType="application/json")
    assert _body(r) == [10]


def test_host_budget_evicts_lru_idle_sandbox_of_other_endpoints(fresh_gateway):
    gw = fresh_gateway("--memory-budget-mb", "2048")
    c = gw.client()
    for name in ("a", "b", "c"):
        c.deploy(name, models.echo, memory_mb=1024)
    boto = gw.boto()
    for name in ("a", "b", "c"):       # c does not fit until a (least recently used) is evicted
        assert _body(boto.invoke_endpoint(EndpointName=name, Body=b"1", ContentType="application/json"))
    live = {e["name"]: len(e["variants"][0]["pool"]["sandboxes"]) for e in c.endpoints()}
    assert live == {"a": 0, "b": 1, "c": 1}


def test_host_budget_throttles_when_nothing_can_be_evicted(fresh_gateway):
    gw = fresh_gateway("--memory-budget-mb", "1024")
    c = gw.client()
    c.deploy("slow", models.sleeps, memory_mb=1024)
    c.deploy("other", models.echo, memory_mb=1024)
    boto = gw.boto()
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lambda: boto.invoke_endpoint(EndpointName="slow", Body=b"2", ContentType="application/json"))
        wait_until(lambda: c.describe("slow")["variants"][0]["pool"]["in_flight"] == 1)
        with pytest.raises(boto.exceptions.ClientError) as exc:
            boto.invoke_endpoint(EndpointName="other", Body=b"1", ContentType="application/json")
        assert exc.value.response["Error"]["Code"] == "ThrottlingException"
        assert "memory budget" in exc.value.response["Error"]["Message"]
        assert _body(fut.result()) == 2
    # once the busy sandbox is idle it can be evicted, and "other" is served
    assert _body(boto.invoke_endpoint(EndpointName="other", Body=b"1", ContentType="application/json")) == {"echo": 1}
