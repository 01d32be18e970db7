"""Behaviour without cgroups (RLIMIT_AS + RSS watchdog) and during a graceful stop."""
import json
import threading
from concurrent.futures import ThreadPoolExecutor

from tests import models
from tests.helpers import wait_until


def test_without_cgroups_the_rss_watchdog_enforces_the_tier(fresh_gateway):
    gw = fresh_gateway("--cgroup", "none")
    c = gw.client()
    assert c.doctor()["memory_cap"]["mechanism"] == "rlimit_as+rss_watchdog"
    c.deploy("bomb", models.allocates, memory_mb=1024)
    boto = gw.boto()
    with_err = None
    try:
        boto.invoke_endpoint(EndpointName="bomb", Body=b"1536", ContentType="application/json")
    except boto.exceptions.ModelError as exc:
        with_err = exc.response
    assert with_err is not None and "1024 MB" in with_err["Error"]["Message"]
    assert c.usage(endpoint="bomb")[-1]["error_kind"] == "out_of_memory"
    r = boto.invoke_endpoint(EndpointName="bomb", Body=b"64", ContentType="application/json")
    assert json.loads(r["Body"].read()) == 64 << 20
    sandboxes = c.describe("bomb")["variants"][0]["pool"]["sandboxes"]
    assert sandboxes[0]["protections"]["applied"] == ["pdeathsig", "netns", "rlimit_as", "view", "uid", "seccomp"]


def test_graceful_stop_finishes_in_flight_requests(fresh_gateway):
    gw = fresh_gateway()
    gw.client().deploy("slow", models.sleeps, memory_mb=1024)
    boto = gw.boto()
    started = threading.Event()

    def call():
        started.set()
        return boto.invoke_endpoint(EndpointName="slow", Body=b"1.5", ContentType="application/json")

    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(call)
        started.wait()
        wait_until(lambda: gw.client().describe("slow")["variants"][0]["pool"]["in_flight"] == 1)
        assert gw.stop() == 0
        r = fut.result()
    assert json.loads(r["Body"].read()) == 1.5
    gw2 = fresh_gateway()
    assert [u["status"] for u in gw2.client().usage(endpoint="slow")] == ["ok"]
