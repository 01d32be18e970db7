"""Bills from the usage ledger: roll-ups, groupings, periods, prices, and the HTML page."""
import json
import shutil
import subprocess

import pytest

from tests import models


# --- against a real gateway -----------------------------------------------------------------
def test_billed_ms_brackets_the_sandbox_run_time_on_real_invocations(gateway):
    client = gateway.client()
    client.deploy("bill-sleep", models.sleeps, memory_mb=3072, tags={"team": "billing"})
    for secs in (0.0, 0.0004, 0.003, 0.0125, 0.05):
        client.invoke("bill-sleep", secs)
    usage = client.usage(endpoint="bill-sleep")
    assert len(usage) == 5
    for u in usage:
        assert u["model_ms"] <= u["billed_ms"] <= u["model_ms"] + 1.0, u
    assert usage[-1]["billed_ms"] >= 50
    doc = client.bill(by="endpoint")
    row = next(r for r in doc["rows"] if r["endpoint"] == "bill-sleep")
    assert row["invocations"] == 5 and row["billed_ms"] == sum(u["billed_ms"] for u in usage)
    assert row["gb_s"] == pytest.approx(row["billed_ms"] / 1000 * 3, abs=1e-6)
    assert row["data_in_bytes"] == sum(u["bytes_in"] for u in usage) > 0
    team = next(r for r in client.bill(by="tag:team")["rows"] if r["tag:team"] == "billing")
    assert team["cost"] == pytest.approx(row["cost"])
    csv_text = client.usage_csv(endpoint="bill-sleep")
    assert csv_text.splitlines()[0].startswith("request_id,endpoint") and len(csv_text.splitlines()) == 6
    assert client.bill(by="hour", format="csv").splitlines()[0].startswith("group,hour,invocations")


def test_usage_export_streams_every_record_in_pages(gateway, tmp_path):
    from tests.integration.test_cli import run

    client = gateway.client()
    client.deploy("bill-pages", models.echo, memory_mb=1024)
    for i in range(23):
        client.invoke("bill-pages", i)
    whole = client.usage(endpoint="bill-pages")
    assert len(whole) == 23
    # pages of 5 by cursor: every record once, oldest first, the last page without a next cursor
    paged = list(client.usage_pages(endpoint="bill-pages", page=5))
    assert [r["request_id"] for r in paged] == [r["request_id"] for r in whole]
    assert [r["seq"] for r in paged] == sorted({r["seq"] for r in paged})
    # the CSV export streams in pages too (7 at a time here) and has one header
    status, headers, body = client._request("GET", "/admin/usage", query=dict(endpoint="bill-pages", format="csv",
                                                                             page=7))
    lines = body.decode().splitlines()
    assert lines[0].startswith("request_id,endpoint") and lines.count(lines[0]) == 1 and len(lines) == 24
    assert [ln.split(",")[0] for ln in lines[1:]] == [r["request_id"] for r in whole]
    # the CLI writes the same export to stdout
    out = run(gateway, "usage", "--format", "csv", "--endpoint", "bill-pages").stdout.splitlines()
    assert out == lines
    # without a limit JSON is streamed too, with the same records; a limit gives the last N
    assert client.usage(endpoint="bill-pages") == whole
    last4 = [r["request_id"] for r in client.usage(endpoint="bill-pages", limit=4)]
    assert last4 == [r["request_id"] for r in whole[-4:]]
    for bad in ("0", "50001", "x"):
        with pytest.raises(Exception, match="page"):
            client._request("GET", "/admin/usage", query=dict(format="csv", page=bad))
    with pytest.raises(Exception, match="limit must be 1 to 100000"):
        client.usage(limit=100_001)
    with pytest.raises(Exception, match="format must be json or csv"):
        client._request("GET", "/admin/usage", query=dict(format="xml"))


def test_bill_html_is_self_contained_and_renders_in_chromium(gateway, tmp_path):
    client = gateway.client()
    client.deploy("bill-echo", models.echo, memory_mb=1024, tags={"team": "<b>web</b>"})
    for i in range(3):
        client.invoke("bill-echo", {"i": i})
    page = client.bill(format="html", by="tag:team")
    assert page.count("<svg") == 3 and "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "&lt;b&gt;web&lt;/b&gt;" in page and "<b>web</b>" not in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    html_path, png = tmp_path / "bill.html", tmp_path / "bill.png"
    html_path.write_text(page)
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                           "--window-size=1000,1600", html_path.as_uri()], capture_output=True, timeout=120,
                          cwd=tmp_path)
    assert png.exists() and png.stat().st_size > 20_000, proc.stderr[-500:]


def test_bill_cli_writes_each_format(gateway, tmp_path):
    from tests.integration.test_cli import run

    out = tmp_path / "bill.html"
    run(gateway, "bill", "--format", "html", "--output", str(out))
    assert out.read_text().startswith("<!DOCTYPE html>")
    table = run(gateway, "bill", "--by", "tier").stdout
    assert table.splitlines()[0].split()[:2] == ["GROUP", "INVOCATIONS"] and "TOTAL" in table
    assert json.loads(run(gateway, "bill", "--format", "json", "--since", "1h").stdout)["rows"] is not None
    bad = run(gateway, "bill", "--by", "colour", check=False)
    assert bad.returncode != 0 and "tag:KEY" in bad.stderr
