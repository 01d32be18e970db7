"""``kill -9`` of the gateway loses no usage record and leaves no sandbox behind."""
import signal
import sqlite3
import threading
import time

import psutil

from tests import models
from tests.helpers import answered_until_killed, wait_until


def test_kill9_loses_no_usage_record(fresh_gateway):
    gw = fresh_gateway()
    gw.client().deploy("ledger", models.echo, memory_mb=1024, max_concurrency=50)
    got = answered_until_killed(gw, "ledger", clients=6, at_least=200, timeout=60)
    db = sqlite3.connect(gw.state_dir / "slimserve.db")
    ids = [row[0] for row in db.execute("SELECT request_id FROM usage WHERE endpoint = 'ledger'")]
    counts = {}
    for rid in ids:
        counts[rid] = counts.get(rid, 0) + 1
    assert len(got) >= 200
    missing = [rid for rid in got if rid not in counts]
    doubled = [rid for rid, n in counts.items() if n > 1]
    assert missing == [] and doubled == []

    # the sandboxes died with the gateway (PR_SET_PDEATHSIG), none is left running
    def orphans():
        return [p for p in psutil.process_iter(["cmdline"])
                if "runtime.worker" in " ".join(p.info["cmdline"] or []) and str(gw.state_dir) in
                " ".join(p.info["cmdline"] or [])]
    assert wait_until(lambda: not orphans(), timeout=10)

    # and a restarted gateway serves the endpoint again, adding to the same ledger
    gw2 = fresh_gateway()
    r = gw2.boto().invoke_endpoint(EndpointName="ledger", Body=b"2", ContentType="application/json")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(gw2.client().usage(endpoint="ledger")) == len(ids) + 1


def test_the_first_signal_waits_for_in_flight_requests_and_a_second_exits_at_once(fresh_gateway):
    gw = fresh_gateway()
    gw.client().deploy("slow", models.sleeps, memory_mb=1024)
    boto = gw.boto()
    answers: list = []

    def invoke():
        try:
            answers.append(boto.invoke_endpoint(EndpointName="slow", Body=b"30", ContentType="application/json"))
        except Exception as exc:  # noqa: BLE001 - the gateway is made to exit under it
            answers.append(exc)

    caller = threading.Thread(target=invoke, daemon=True)
    caller.start()
    busy = wait_until(lambda: any(v["pool"] and v["pool"]["states"].get("busy")
                                  for v in gw.client().describe("slow")["variants"]), timeout=30)
    assert busy
    gw.proc.send_signal(signal.SIGINT)
    time.sleep(1.5)
    assert gw.proc.poll() is None          # draining: the request has 28 s to go
    gw.proc.send_signal(signal.SIGINT)
    assert gw.proc.wait(10) == 130
    assert "second signal, exiting now" in "".join(gw.output)
