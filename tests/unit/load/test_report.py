"""The load report (summary, series, text and HTML) from a synthetic run."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from gateway.load import command as loadtest
from gateway.load import report as loadreport
from gateway.load import report_html
from gateway.reportkit.html import linear_ticks, log_ticks


def synthetic_doc(endpoint="ep"):
    reqs, usage = [], []
    for i in range(40):
        t = i * 0.1
        r = {"seq": i, "endpoint": endpoint, "scheduled_s": t, "sent_s": t + 0.001, "latency_ms": 10.0 + i,
             "status": 200, "error": None, "request_id": f"r{i}", "dropped": False}
        if i % 10 == 3:
            r.update(status=429, error="ThrottlingException", latency_ms=1.0)
        if i == 7:
            r.update(status=424, error="ModelError")
        if i == 8:
            r.update(status=None, error="ConnectionError", request_id=None)
        if i == 9:
            r.update(sent_s=None, latency_ms=None, status=None, request_id=None, dropped=True)
        reqs.append(r)
        if r["request_id"]:
            usage.append({"request_id": r["request_id"], "start": 1000.0 + t, "billed_ms": 100 if not r["error"] else 0,
                          "memory_mb": 2048, "cold_start": i == 0})
    usage.append({"request_id": "someone-else", "start": 1001.0, "billed_ms": 1000, "memory_mb": 1024,
                  "cold_start": False})
    config = {"pattern": "constant", "rate": 10.0, "duration_s": 4.0, "targets": [endpoint], "concurrency": 8,
              "price_per_gb_s": loadtest.EXAMPLE_PRICE_PER_GB_S, "url": "http://127.0.0.1:1"}
    samples = [(0.0, 0, 0), (1.01, 1, 1), (2.02, None, None), (3.0, 2, 0)]
    return loadreport.build(config, reqs, samples, usage, started_at=1000.0, ended_at=1004.5, elapsed_s=4.2)


def test_summary_counts_every_request_once_and_bills_this_run():
    s = synthetic_doc()["summary"]
    assert s["planned"] == 40 and s["sent"] == 39 and s["dropped_client_cap"] == 1
    assert s["completed"] == 38 and s["no_response"] == 1
    assert s["throttled"] == 4 and s["errors_by_kind"] == {"ConnectionError": 1, "ModelError": 1}
    assert s["ok"] == 40 - 1 - 4 - 2 == s["completed"] - s["throttled"] - 1
    assert s["cold_starts"] == 1
    ok_lat = [10.0 + i for i in range(40) if i % 10 != 3 and i not in (7, 8, 9)]
    assert s["latency_ms"]["p50"] == pytest.approx(loadreport.percentile(ok_lat, 50))
    assert s["latency_ms"]["max"] == 49.0
    assert s["usage"]["gb_s"] == pytest.approx(33 * 0.1 * 2)            # 33 ok requests x 100 ms x 2 GB
    assert s["usage"]["window_gb_s"] == pytest.approx(33 * 0.2 + 1.0)    # plus the other client's record
    assert s["cost"]["usd"] == pytest.approx(6.6 * 0.00002)
    assert s["warm_sandboxes"] == {"max": 2, "last": 2}


def test_series_is_one_row_a_second():
    series = synthetic_doc()["series"]
    assert [r["t"] for r in series] == [0, 1, 2, 3, 4]
    assert sum(r["offered"] for r in series) == 40 and series[0]["offered"] == 10
    assert series[0]["throttled"] == 1 and series[0]["dropped"] == 1 and series[0]["cold_starts"] == 1
    assert sum(r["ok"] for r in series) == 33 and sum(r["errors"] for r in series) == 2
    assert [r["warm"] for r in series] == [0, 1, 1, 2, 2]                 # a failed poll carries the last value
    assert series[4]["p50_ms"] is None


def test_text_report_names_the_figures():
    text = loadreport.format_text(synthetic_doc())
    for needle in ("40 planned, 39 sent, 1 dropped", "throttled     4 (ThrottlingException)",
                   "ConnectionError 1, ModelError 1", "cold starts   1", "GB-s", "(example price)"):
        assert needle in text
    assert len([ln for ln in text.splitlines() if re.match(r"^\s+\d+\s+\d+", ln)]) == 5


class TagBalance(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "rect", "line", "path", "circle"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.refs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_is_self_contained_and_escapes_user_strings(tmp_path):
    evil = '<script>alert(1)</script>"><img src="https://evil.example/x.png">'
    doc = synthetic_doc(endpoint=evil)
    doc["summary"]["errors_by_kind"]['<a href="http://x">k</a>'] = 1
    page = report_html.render_html(doc)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3 and page.count("</svg>") == 3
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<a " not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(", page)
    assert html_escaped(evil) in page
    checker = TagBalance()
    checker.feed(page)
    assert checker.errors == [] and checker.stack == [] and checker.refs == []
    paths = report_html.write(doc, tmp_path / "out")
    assert [p.name for p in paths] == ["load.json", "report.html"]
    again = json.loads(paths[0].read_text())
    assert again["summary"] == json.loads(json.dumps(doc["summary"]))
    assert report_html.render_html(again) == paths[1].read_text()


def html_escaped(s):
    import html

    return html.escape(s, quote=True)


def test_chart_ticks_are_round():
    assert linear_ticks(47) == [0, 10, 20, 30, 40, 50]
    assert linear_ticks(0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert log_ticks(3, 800) == [1, 10, 100, 1000]
    assert log_ticks(12, 300) == [10, 20, 50, 100, 200, 500, 1000]


# --- against a real gateway ---------------------------------------------------------------------------------


def test_an_axis_of_counts_has_whole_ticks():
    assert linear_ticks(2, whole=True) == [0, 1, 2]
    assert linear_ticks(3, whole=True) == [0, 1, 2, 3]
    assert linear_ticks(0, whole=True) == [0, 1]
    assert linear_ticks(47, whole=True) == [0, 10, 20, 30, 40, 50]
    assert all(float(t).is_integer() for t in linear_ticks(7, whole=True))
    doc = synthetic_doc()
    page = report_html.render_html(doc)
    chart = page[page.index("Warm sandboxes against offered load"):]
    chart = chart[:chart.index("</svg>")]
    labels = [m for m in re.findall(r">([0-9.]+)</text>", chart)]
    assert labels and all(float(v).is_integer() for v in labels), labels
