"""Bills from a real SQLite ledger of synthetic usage: roll-ups, groupings, periods, prices, pruning."""
import asyncio
import json
import random
import sqlite3

import pytest

from gateway.domain import ProvisionedRecord, UsageRecord
from gateway.metering import billing
from gateway.metering.billing import BillingError, Prices
from gateway.store import ledger as ledger_sql
from gateway.store import rollup
from gateway.store.sqlite import Store

GROUPINGS = ["endpoint", "variant", "tier", "tag:team", "hour", "day", "tier,endpoint", "day,tag:team", "target_model",
             "endpoint,target_model"]
T0 = 1_790_000_000.0 - 1_790_000_000.0 % 3600      # an hour boundary


def _bill(conn, since, until, by, prices):
    """A bill straight from a SQLite connection: the store's reads, then the pure pricing."""
    (base,), tags = ledger_sql.read_bills(conn, since, until, [by])
    return billing.priced_bill(base, tags, since, until, by, prices)


def _records(n: int, seed: int = 1, span_s: float = 3 * 86400):
    rng = random.Random(seed)
    eps = [("fraud", 2048), ("search", 1024), ("vision", 6144), ("chat", 4096)]
    out = []
    for i in range(n):
        ep, mb = rng.choice(eps)
        ms = rng.uniform(0.1, 900)
        out.append(UsageRecord(
            request_id=f"r{seed}-{i}", endpoint=ep, variant="AllTraffic" if i % 5 else "Canary", memory_mb=mb,
            start=T0 + rng.uniform(0, span_s), billed_ms=UsageRecord.bill(ms), model_ms=ms, overhead_ms=0.5,
            cold_start=rng.random() < 0.05, init_ms=0.0, status="ok" if rng.random() < 0.97 else "ModelError",
            bytes_in=rng.randint(10, 5000), bytes_out=rng.randint(10, 5000),
            target_model=f"states/{rng.choice('ABC')}.tar.gz" if ep == "search" else None))
    return out


@pytest.fixture
def ledger(tmp_path):
    """A real store with three days of synthetic usage, provisioned time across hours, and idle time."""
    async def fill():
        store = Store(tmp_path / "ledger.db")
        await store.open()
        recs = _records(6000)
        for i in range(0, len(recs), 500):                    # batches, as the meter commits them
            await store.insert_usage(recs[i:i + 500])
        await store.insert_provisioned([
            ProvisionedRecord("fraud", "AllTraffic", 2048, T0 + 3000, T0 + 4200, 2, 2_400_000),
            ProvisionedRecord("chat", "AllTraffic", 4096, T0 + 7100, T0 + 7300, 1, 200_000)])
        await store.add_idle({(T0, "fraud", "AllTraffic", 2048): [0] * 7 + [3_600_000, 0],
                              (T0 + 3600, "vision", "AllTraffic", 6144): [0] * 7 + [1_800_000, 0],
                              (T0, "search", "AllTraffic", 1024): [0] * 8 + [3_600_000 * 64]})   # 64 MB, 1 h
        await store.close()
        return recs
    recs = asyncio.run(fill())
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.execute("INSERT INTO endpoints VALUES ('fraud', ?)", (json.dumps({"tags": {"team": "risk"}}),))
    conn.execute("INSERT INTO retired_endpoints VALUES ('vision', ?)", (json.dumps({"tags": {"team": "ml"}}),))
    conn.commit()
    return conn, recs


def test_every_grouping_has_the_same_totals_and_rows_add_up(ledger):
    conn, recs = ledger
    prices = Prices.load()
    docs = [_bill(conn, None, None, billing.parse_by(by), prices) for by in GROUPINGS]
    first = docs[0]["total"]
    assert first["invocations"] == len(recs)
    assert first["billed_ms"] == sum(r.billed_ms for r in recs)
    assert first["gb_s"] == pytest.approx(sum(r.billed_ms * r.memory_mb / 1024 / 1000 for r in recs))
    assert first["cold_starts"] == sum(r.cold_start for r in recs)
    assert first["data_in_bytes"] == sum(r.bytes_in for r in recs)
    assert first["provisioned_gb_s"] == pytest.approx(2400 * 2 + 200 * 4)
    assert first["idle_gb_s"] == pytest.approx(3600 * 2 + 1800 * 6)
    for doc in docs:
        for key, value in first.items():
            assert doc["total"][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (doc["by"], key)
            assert sum(r[key] for r in doc["rows"]) == pytest.approx(value, rel=1e-6, abs=1e-6), (doc["by"], key)
    by_tag = {r["tag:team"]: r for r in docs[3]["rows"]}
    assert set(by_tag) == {"risk", "ml", "(untagged)"}            # a deleted endpoint keeps its team
    assert by_tag["ml"]["invocations"] == sum(r.endpoint == "vision" for r in recs)


def test_cost_follows_the_price_table(ledger, tmp_path):
    conn, recs = ledger
    table = {"currency": "EUR", "compute_per_gb_s": {str(m): 0.001 * (m // 1024) for m in (1024, 2048, 4096, 6144)},
             "data_per_gb": 2.0, "provisioned_per_gb_s": 0.5}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    doc = _bill(conn, None, None, ["tier"], Prices.load(path))
    assert doc["currency"] == "EUR"
    for row in doc["rows"]:
        mine = [r for r in recs if r.memory_mb == row["tier"]]
        gb_s = sum(r.billed_ms for r in mine) / 1000 * row["tier"] / 1024
        data = sum(r.bytes_in + r.bytes_out for r in mine) / 1024 ** 3 * 2.0
        assert row["compute_cost"] == pytest.approx(gb_s * 0.001 * (row["tier"] // 1024), rel=1e-6)
        assert row["cost"] == pytest.approx(row["compute_cost"] + data + row["provisioned_gb_s"] * 0.5, rel=1e-6)


def test_partial_hours_at_the_edges_are_exact(ledger):
    conn, recs = ledger
    prices = Prices.load()
    since, until = T0 + 5000.5, T0 + 2 * 86400 + 1234.25        # both inside an hour
    doc = _bill(conn, since, until, ["endpoint"], prices)
    inside = [r for r in recs if since <= r.start < until]
    assert doc["total"]["invocations"] == len(inside)
    assert doc["total"]["billed_ms"] == sum(r.billed_ms for r in inside)
    # the provisioned interval T0+3000..T0+4200 lies before `since`; the chat one (7100..7300) inside
    assert doc["total"]["provisioned_gb_s"] == pytest.approx(200 * 4)
    same_hour = _bill(conn, T0 + 100, T0 + 200, ["endpoint"], prices)
    assert same_hour["total"]["invocations"] == sum(T0 + 100 <= r.start < T0 + 200 for r in recs)
    assert _bill(conn, until, since, ["endpoint"], prices)["total"]["invocations"] == 0


def test_rollups_written_live_equal_a_rebuild_from_raw_records(ledger):
    conn, _ = ledger
    live = sorted(conn.execute("SELECT hour, endpoint, variant, memory_mb, invocations, billed_ms, cold_starts, "
                               "errors, bytes_in, bytes_out FROM rollup_hourly WHERE invocations > 0"))
    conn.execute("CREATE TEMP TABLE check_rollup AS SELECT * FROM rollup_hourly WHERE 0")
    sql = rollup.REBUILD_SQL[1].replace("INSERT INTO rollup_hourly", "INSERT INTO check_rollup")
    conn.execute(sql)
    rebuilt = sorted(conn.execute("SELECT hour, endpoint, variant, memory_mb, invocations, billed_ms, cold_starts, "
                                  "errors, bytes_in, bytes_out FROM check_rollup"))
    assert live == rebuilt and len(live) > 100


def test_provisioned_time_splits_across_hours_to_the_millisecond():
    parts = rollup.split_by_hour(T0 + 3000, T0 + 4200, 2_400_000)
    assert parts == [(T0, 1_200_000), (T0 + 3600, 1_200_000)]
    odd = rollup.split_by_hour(T0 + 1.0, T0 + 3 * 3600 + 7.0, 10_000_003)
    assert [h for h, _ in odd] == [T0, T0 + 3600, T0 + 7200, T0 + 10800] and sum(ms for _, ms in odd) == 10_000_003


def test_periods_groupings_and_price_tables_refuse_bad_input(tmp_path):
    now = 1_800_000_000.0
    assert billing.parse_time("24h", now) == now - 86400
    assert billing.parse_time("7d", now) == now - 7 * 86400
    assert billing.parse_time("1790000000", now) == 1_790_000_000.0
    assert billing.parse_time("2026-11-27T10:00Z", now) == billing.parse_time("2026-11-27T10:00:00+00:00", now)
    with pytest.raises(BillingError, match="ISO 8601"):
        billing.parse_time("last tuesday", now)
    with pytest.raises(BillingError, match="tag:KEY"):
        billing.parse_by("endpoint,colour")
    bad = tmp_path / "p.json"
    bad.write_text('{"compute_per_gb_s": {"1024": "free"}}')
    with pytest.raises(BillingError, match="malformed"):
        Prices.load(bad)
    with pytest.raises(BillingError, match="not found"):
        Prices.load(tmp_path / "missing.json")
    assert "EXAMPLE" in Prices.load().note




def test_pruned_raw_records_leave_every_bill_unchanged(tmp_path):
    async def run():
        store = Store(tmp_path / "l.db")
        await store.open()
        recs = _records(3000, seed=9)
        await store.insert_usage(recs)
        conn = sqlite3.connect(tmp_path / "l.db")
        prices = Prices.load()
        before = {by: _bill(conn, None, None, billing.parse_by(by), prices) for by in ("endpoint", "day")}
        cut = T0 + 86400 + 1800                                   # pruning keeps whole hours: from T0 + 86400
        gone = await store.prune_usage(cut, batch=500)
        assert gone == sum(r.start < T0 + 86400 for r in recs) > 0
        assert conn.execute("SELECT MIN(start) FROM usage").fetchone()[0] >= T0 + 86400
        assert ledger_sql.raw_kept_from(conn) == T0 + 86400
        for by, doc in before.items():
            after = _bill(conn, None, None, billing.parse_by(by), prices)
            assert after["total"] == doc["total"] and after["rows"] == doc["rows"]
        # a period that starts inside a pruned hour takes that hour's roll-up pro rata
        part = _bill(conn, T0 + 1800, T0 + 3600, ["endpoint"], prices)["total"]["invocations"]
        hour = sum(T0 <= r.start < T0 + 3600 for r in recs)
        assert abs(part - hour / 2) <= 1
        # raw records after the cut are still exact at the edges
        exact = _bill(conn, T0 + 86400 + 100, T0 + 86400 + 700, ["endpoint"], prices)["total"]
        assert exact["invocations"] == sum(T0 + 86400 + 100 <= r.start < T0 + 86400 + 700 for r in recs)
        await store.close()
    asyncio.run(run())


def test_client_pages_follow_the_cursor_in_any_header_case_and_a_broken_answer_is_a_clear_error():
    import http.server
    import threading

    from gateway.client import Client, ClientError

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if "broken" in self.path:                  # a chunked answer that stops part way
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"5\r\nhel")
                self.wfile.flush()
                self.connection.close()
                return
            after = int(self.path.split("after=")[1].split("&")[0])
            self.send_response(200)
            if after < 2:
                self.send_header("x-slimserve-next-after", str(after + 1))    # as a proxy may write it
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(f'[{{"seq": {after + 1}}}]'.encode())

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = Client(f"http://127.0.0.1:{server.server_address[1]}")
        c.token = "t"
        assert [r["seq"] for r in c.usage_pages(page=1)] == [1, 2, 3]
        with pytest.raises(ClientError, match="broke off"):
            c._request("GET", "/broken")
    finally:
        server.shutdown()


def test_transform_jobs_are_priced_by_instance_hour_and_old_price_files_still_load(tmp_path):
    import json

    from gateway.metering.billing import Prices, transform_bill

    old = tmp_path / "old.json"                    # a price file from before the instance-hour section
    old.write_text(json.dumps({"compute_per_gb_s": {"1024": 0.00002}, "data_per_gb": 0.016,
                               "provisioned_per_gb_s": 0.000005}))
    p = Prices.load(old)
    assert p.instance_per_hour == {}
    assert abs(p.instance_hour("ml.m5.large") - 8 * 0.000005 * 3600) < 1e-12      # its memory, provisioned price
    new = Prices.load()
    assert new.instance_hour("ml.m5.large") == 0.115
    usage = [{"job": "j", "instance_type": "ml.m5.large", "instance_count": 2, "billed_ms": 7_200_000,
              "start": 0.0, "end": 3600.0}]
    doc = transform_bill(usage, new)
    assert doc["rows"] == [{"job": "j", "instance_type": "ml.m5.large", "instance_count": 2, "seconds": 7200.0,
                            "cost": 0.23}]
    assert doc["seconds"] == 7200.0 and doc["cost"] == 0.23
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"compute_per_gb_s": {"1024": 1}, "data_per_gb": 0, "provisioned_per_gb_s": 0,
                               "instance_per_hour": {"ml.m5.large": -1}}))
    with pytest.raises(Exception, match="negative"):
        Prices.load(bad)


def test_a_multi_model_endpoints_calls_are_billed_by_target_model_to_the_millisecond(ledger):
    conn, recs = ledger
    doc = _bill(conn, None, None, ["endpoint", "target_model"], Prices.load())
    rows = {(r["endpoint"], r["target_model"]): r for r in doc["rows"]}
    for state in "ABC":
        mine = [r for r in recs if r.target_model == f"states/{state}.tar.gz"]
        row = rows[("search", f"states/{state}.tar.gz")]
        assert row["invocations"] == len(mine) and row["billed_ms"] == sum(r.billed_ms for r in mine)
    assert ("fraud", "(none)") in rows                               # search's calls are all multi-model:
    assert rows[("search", "(none)")]["invocations"] == 0           # its (none) row is its model zygote's time


def test_roll_ups_written_before_target_models_are_rekeyed_once_and_keep_their_sums(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""CREATE TABLE rollup_hourly (hour INTEGER NOT NULL, endpoint TEXT NOT NULL,
        variant TEXT NOT NULL, memory_mb INTEGER NOT NULL, invocations INTEGER NOT NULL DEFAULT 0,
        billed_ms INTEGER NOT NULL DEFAULT 0, cold_starts INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,
        bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0,
        provisioned_ms INTEGER NOT NULL DEFAULT 0, idle_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, endpoint, variant, memory_mb)) WITHOUT ROWID;""")
    conn.execute("INSERT INTO rollup_hourly VALUES (?, 'fraud', 'AllTraffic', 2048, 7, 700, 1, 0, 10, 20, 0, 5)", (T0,))
    conn.commit()
    conn.close()

    async def reopen():
        store = Store(path)
        await store.open()
        await store.insert_usage([UsageRecord("r1", "fraud", "AllTraffic", 2048, T0 + 1, 3, 2.5, 0.1, False, 0.0,
                                              "ok", target_model="a.pkl")])
        await store.close()
        store = Store(path)                                  # a second open changes nothing more
        await store.open()
        await store.close()
    asyncio.run(reopen())
    conn = sqlite3.connect(path)
    got = sorted(conn.execute("SELECT target_model, invocations, billed_ms, idle_ms FROM rollup_hourly"))
    assert got == [("", 7, 700, 5), ("a.pkl", 1, 3, 0)]


def test_model_zygotes_are_booked_at_what_they_hold_in_their_own_column(ledger):
    conn, _ = ledger
    doc = _bill(conn, None, None, ["endpoint"], Prices.load())
    rows = {r["endpoint"]: r for r in doc["rows"]}
    assert rows["search"]["zygote_gb_s"] == pytest.approx(64 / 1024 * 3600)      # not at the 1 GB tier
    assert rows["fraud"]["zygote_gb_s"] == 0 and doc["total"]["zygote_gb_s"] == pytest.approx(225.0)
    half = _bill(conn, T0, T0 + 1800, ["endpoint"], Prices.load())               # pro rata within the hour
    assert {r["endpoint"]: r for r in half["rows"]}["search"]["zygote_gb_s"] == pytest.approx(112.5)
