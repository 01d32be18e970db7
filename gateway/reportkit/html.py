"""Small pieces for self-contained HTML reports: escaping, axis ticks, scales, tables, CSS.

Shared by the load-test report and the bill; no scripts, fonts or anything fetched.
"""
from __future__ import annotations

import html
import math
import re

_NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?$")    # a formatted number: right-aligned in tables


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw - 1e-12:
            return m * mag
    return 10 * mag


def linear_ticks(hi: float, n: int = 5, whole: bool = False) -> list[float]:
    """0 to a round number >= hi, in about ``n`` round steps; ``whole``: steps of whole numbers
    (an axis of counts: sandboxes, requests), never 0.2 of a sandbox."""
    hi = hi if hi > 0 else 1.0
    step = nice_step(hi, n)
    if whole:
        step = max(1, math.ceil(step))
    count = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades covering [lo, hi] (both > 0), with 2 and 5 between them when there are few."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if b <= a:
        b = a + 1
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [m * 10.0 ** k for k in range(a, b) for m in mults] + [10.0 ** b]
    return [round(t, 12) for t in ticks]


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


class Scale:
    def __init__(self, ticks: list[float], log: bool, top: float, bottom: float):
        self.ticks, self.log, self.top, self.bottom = ticks, log, top, bottom
        self.lo, self.hi = ticks[0], ticks[-1]

    def __call__(self, v: float) -> float:
        if self.log:
            v = min(max(v, self.lo), self.hi)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / ((self.hi - self.lo) or 1.0)
        return self.bottom - f * (self.bottom - self.top)



CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:960px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
.chart{max-width:100%;height:auto;display:block;margin:8px 0}
.warn{color:#a40}
"""


def table(rows: list[tuple], head: tuple | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for v in row:
            num = (isinstance(v, (int, float)) and not isinstance(v, bool)) or \
                (isinstance(v, str) and _NUMBER.match(v) is not None)
            cells.append(f'<td class="n">{esc(v)}</td>' if num else f"<td>{esc('-' if v is None else v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


