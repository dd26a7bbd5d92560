"""``tokentrail view``: the ledger as one self-contained, offline HTML page (inline CSS and SVG, no
network), readable at a glance and printable; ``--png`` also takes its screenshot with headless Chromium."""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

from tokentrail.cli import _common as c
from tokentrail.ledger import LedgerError
from tokentrail.ledger.queries import Period
from tokentrail.ledger.queries.savings import load_config, savings

TOP_TENANTS_IN_CHART = 6
PALETTE = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#ca8a04", "#94a3b8")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view",
        help="write the ledger as one offline HTML page (spend over time, top owners, cache hits, costly traces)",
        description="Write one self-contained HTML page from the ledger (no CDN, no network): spend over time by"
        " tenant, top tenants and features, cache-hit dispersion across tenants, the most expensive traces and"
        " tasks with their reasons, the unattributed share.",
    )
    p.add_argument("--out", type=Path, default=Path("tokentrail.html"), help="the HTML file (default: tokentrail.html)")
    p.add_argument("--png", type=Path, metavar="PATH", help="also a screenshot of the page (needs chromium)")
    c.add_period_options(p)
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    period, where = c.period_and_where(args)
    if args.out.is_dir():
        raise c.CliError(f"--out {args.out} is a directory: give the HTML file to write")
    with c.open_ledger(args) as ledger:
        data = collect(ledger, period, where)
    try:
        args.out.write_text(render(data), encoding="utf-8")
    except OSError as exc:
        raise c.CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(args.out)
    if args.png:
        screenshot(args.out, args.png)
        print(args.png)
    return 0


def collect(ledger: Any, period: Period, where: Sequence = ()) -> dict:
    """Everything the page shows, as the ledger queries answer it."""
    return {
        "ledger": ledger.path,
        "by_tenant": ledger.report(["tenant"], period, where),
        "by_feature": ledger.report(["feature"], period, where),
        "by_day_tenant": ledger.report(["day", "tenant"], period, where),
        "tenants": ledger.tenants(period, where),
        "top": ledger.top(period, where, 8),
        "savings": _savings_data(ledger, period, where),
    }


# --- rendering -----------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _bars(rows: list[dict], key: str, what: str) -> str:
    """Horizontal bars of cost per row (rows without a cost say why, with no bar)."""
    top = max((r["cost_nano_usd"] or 0 for r in rows), default=0) or 1
    out, net = [], _net_cell if any("net_cost_nano_usd" in r for r in rows) else None
    for r in rows[:10]:
        nano = r["cost_nano_usd"]
        width = 0 if nano is None else max(0.5, 100 * nano / top)
        out.append(
            f'<tr data-{what}="{_e(r[key])}"><th>{_e(r[key])}</th>'
            f'<td class="bar"><span style="width:{width:.1f}%"></span></td>'
            f'<td class="num" data-testid="{what}-cost" data-nano="{"" if nano is None else nano}">{_e(c.cost(nano, r))}</td>'
            f'{net(r, what) if net else ""}'
            f'<td class="num">{_e(c.pct(r["share"], 1))}</td><td class="num">{_e(c.count(r["calls"]))}</td></tr>'
        )
    return (f'<table class="bars"><tr><th>{what}</th><th></th><th>cost</th>{"<th>net</th>" if net else ""}<th>share</th>'
            f'<th>calls</th></tr>{"".join(out)}</table>')


def _net_cell(row: dict, what: str) -> str:
    """A re-priced row's net cost (original + adjustments), beside its original cost."""
    nano = row.get("net_cost_nano_usd")
    return (f'<td class="num" data-testid="{what}-net" data-nano="{"" if nano is None else nano}"'
            f' title="adjustments {_e(c.usd(row.get("adjustment_nano_usd", 0)))}">{_e(c.cost(nano, row))}</td>')


def _spend_over_time(report: dict) -> str:
    """Stacked SVG bars: spend per day, by the top tenants (the rest as 'other')."""
    rows = [r for r in report["rows"] if r["cost_nano_usd"]]
    if not rows:
        return '<p class="empty">No priced spend in this period.</p>'
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["tenant"]] = totals.get(r["tenant"], 0) + r["cost_nano_usd"]
    named = sorted(totals, key=lambda t: -totals[t])[:TOP_TENANTS_IN_CHART]
    series = named + (["other"] if len(totals) > len(named) else [])
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(series)}
    days = sorted({r["day"] for r in rows})
    per_day: dict[str, dict[str, int]] = {d: {} for d in days}
    for r in rows:
        name = r["tenant"] if r["tenant"] in named else "other"
        per_day[r["day"]][name] = per_day[r["day"]].get(name, 0) + r["cost_nano_usd"]
    peak = max(sum(v.values()) for v in per_day.values())
    width, height, left, bottom = 1100, 260, 70, 30
    step = (width - left) / len(days)
    parts = [f'<svg viewBox="0 0 {width} {height + bottom}" role="img" aria-label="spend per day by tenant">']
    for frac in (0, 0.5, 1):
        y = height - frac * (height - 10)
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{_e(c.usd(int(peak * frac)))}</text>')
    for i, day in enumerate(days):
        x, y = left + i * step + step * 0.12, float(height)
        for name in series:
            nano = per_day[day].get(name, 0)
            if not nano:
                continue
            h = nano / peak * (height - 10)
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.76:.1f}" height="{h:.1f}" fill="{colour[name]}">'
                         f'<title>{_e(day)} {_e(name)}: {_e(c.usd(nano))}</title></rect>')
        if i % max(1, len(days) // 7) == 0:
            parts.append(f'<text x="{x + step * 0.38:.1f}" y="{height + 18}" class="axis" text-anchor="middle">{_e(day[5:])}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{colour[t]}"></i>{_e(t)}</span>' for t in series)
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _cache_dispersion(tenants: list[dict]) -> str:
    """Per tenant: the 10th-percentile to median cache-hit range of its requests, on one 0-100% scale."""
    rows = []
    for t in sorted(tenants, key=lambda t: -(t["cache_hit_median"] or 0)):
        if t["cache_hit_median"] is None:
            continue
        p10, med = (t["cache_hit_p10"] or 0) * 100, t["cache_hit_median"] * 100
        rows.append(
            f'<tr data-tenant="{_e(t["tenant"])}"><th>{_e(t["tenant"])}</th><td class="range">'
            f'<span class="span" style="left:{p10:.1f}%;width:{max(med - p10, 0.6):.1f}%"></span>'
            f'<span class="dot" style="left:{med:.1f}%"></span></td>'
            f'<td class="num" data-testid="cache-median">{_e(c.pct(t["cache_hit_median"]))}</td>'
            f'<td class="num">{_e(c.pct(t["cache_hit_p10"]))}</td>'
            f'<td class="num" data-testid="cost-per-request">{_e(c.usd(t["cost_per_request_nano_usd"]))}</td></tr>'
        )
    return ('<table class="bars"><tr><th>tenant</th><th>p10 .. median of requests (0-100%)</th><th>median</th>'
            f'<th>p10</th><th>cost/request</th></tr>{"".join(rows)}</table>')


def _expensive(items: list[dict], kind: str) -> str:
    if not items:
        return f'<p class="empty">No {kind} in this period.</p>'
    rows, net = [], _net_cell if any("net_cost_nano_usd" in t for t in items) else None
    for t in items:
        owner = "/".join(t["owner"][k] for k in ("tenant", "feature") if k in t["owner"]) or "(unattributed)"
        name = t["trace_id"][:12] if kind == "traces" else f'{t["task"] or ""} {t["task_id"]}'
        rows.append(f'<tr><td class="mono">{_e(name)}</td><td>{_e(owner)}</td><td class="num">{_e(c.count(t["calls"]))}</td>'
                    f'<td class="num" data-testid="{kind}-cost">{_e(c.cost(t["cost_nano_usd"], t))}</td>'
                    f'{net(t, kind) if net else ""}<td>{_e("; ".join(t["reasons"]) or "-")}</td></tr>')
    first = "trace" if kind == "traces" else "task"
    return (f'<table class="list"><tr><th>{first}</th><th>owner</th><th>calls</th><th>cost</th>'
            f'{"<th>net</th>" if net else ""}<th>why</th></tr>'
            f'{"".join(rows)}</table>')


def _savings_data(ledger: Any, period: Period, where: Sequence) -> dict:
    """``tokentrail savings`` for the page's period (its config as the command finds it); a bad config is said."""
    try:
        return savings(ledger, period, load_config(None, ledger.path), where)
    except LedgerError as exc:
        return {"error": str(exc), "opportunities": []}


def _savings_section(data: dict, limit: int = 8) -> str:
    """The largest savings opportunities (tokentrail savings), each a what-if: alternatives, not a sum."""
    if data.get("error"):
        body = f'<p class="warn">{_e(data["error"])}</p>'
    elif not data["opportunities"]:
        body = '<p class="empty">No savings opportunity in this period.</p>'
    else:
        rows = "".join(
            f'<tr><td class="num">{o["rank"]}</td><td>{_e(o["kind"])}: {_e(o["what"])}</td>'
            f'<td>{_e(" ".join(o["where"]))}</td><td class="num">{_e(c.count(o["calls"]))}</td>'
            f'<td class="num" data-testid="savings-saving">{_e(c.usd(o["saving_nano_usd"]))}</td>'
            f'<td>{_e(o["detail"])}</td></tr>' for o in data["opportunities"][:limit])
        body = ('<table class="list"><tr><th>#</th><th>opportunity</th><th>owner</th><th>calls</th><th>saving</th>'
                f'<th>how</th></tr>{rows}</table><p class="empty">Alternatives that overlap, not a sum;'
                ' every figure and its rows: <code>tokentrail savings --format json</code>.</p>')
    return f'<section><h2>Savings opportunities</h2>{body}</section>'


_CSS = """
*{box-sizing:border-box} body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#0f172a;
margin:0;background:#f8fafc} main{max-width:1180px;margin:0 auto;padding:24px} h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:0 0 10px} .sub{color:#475569;margin-bottom:18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin-bottom:16px}
.card,section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:14px 16px}
.card b{display:block;font-size:22px;font-variant-numeric:tabular-nums} .card span{color:#475569}
section{margin-bottom:16px} .two{display:grid;grid-template-columns:1fr 1fr;gap:16px} .two section{margin:0}
table{width:100%;border-collapse:collapse} th,td{padding:4px 6px;text-align:left;vertical-align:middle}
tr+tr{border-top:1px solid #f1f5f9} th{font-weight:600;color:#334155;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} .mono{font-family:ui-monospace,monospace}
.bar{width:40%} .bar span{display:block;height:12px;background:#2563eb;border-radius:2px}
.range{width:45%;position:relative;height:22px} .range:before{content:"";position:absolute;left:0;right:0;top:10px;
border-top:1px solid #cbd5e1} .range .span{position:absolute;top:6px;height:10px;background:#93c5fd;border-radius:2px}
.range .dot{position:absolute;top:4px;width:14px;height:14px;margin-left:-7px;border-radius:50%;background:#1d4ed8}
svg{width:100%;height:auto} .grid{stroke:#e2e8f0} .axis{font-size:11px;fill:#64748b}
.legend span{margin-right:14px;color:#334155} .legend i{display:inline-block;width:10px;height:10px;margin-right:4px;
border-radius:2px} .empty{color:#64748b} .warn{color:#b45309} footer{color:#64748b;font-size:12px}
@media print{body{background:#fff} main{padding:0} section,.card{break-inside:avoid;border-color:#cbd5e1}}
"""

# Re-adds the per-tenant costs in the browser and shows the sum beside the total: the page checks itself.
_JS = """
const data = JSON.parse(document.getElementById('data').textContent);
const sum = data.tenant_costs.reduce((a, b) => a + BigInt(b), 0n);
const el = document.getElementById('check');
el.dataset.nano = sum.toString();
el.textContent = sum.toString() === data.total_nano ? 'tenant rows add up to the total' : 'tenant rows do NOT add up';
"""


def render(data: dict) -> str:
    total = data["by_tenant"]["total"]
    period = data["by_tenant"]["period"]
    no_cost = total["calls"] - total["priced_calls"]
    known = [r["cost_nano_usd"] for r in data["by_tenant"]["rows"] if r["cost_nano_usd"] is not None]
    check = {"tenant_costs": [str(n) for n in known], "total_nano": str(total["cost_nano_usd"] or 0)}
    cards = [
        ("total", "spend", c.cost(total["cost_nano_usd"], total)),
        ("calls", "LLM calls", c.count(total["calls"])),
        ("unattributed", "unattributed (no tenant)",
         f'{c.usd(total["unattributed_cost_nano_usd"])} = {c.pct(total["unattributed_share"], 1)}'),
        ("no-cost", "calls without a cost" + (f': {c.no_cost_why(total)}' if no_cost else ""), c.count(no_cost)),
    ]
    if "net_cost_nano_usd" in total:  # re-priced (tokentrail reprice): the net beside the original
        cards.insert(1, ("net", f'net after re-pricing (adjustments {c.usd(total["adjustment_nano_usd"])})',
                         c.cost(total["net_cost_nano_usd"], total)))
    card_html = "".join(f'<div class="card"><b data-testid="card-{k}">{_e(v)}</b><span>{_e(label)}</span></div>'
                        for k, label, v in cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>tokentrail: LLM spend</title><style>{_CSS}</style></head>
<body><main>
<h1>Who spent the LLM money</h1>
<div class="sub">{_e(period["since"] or "all time")} .. {_e(period["until"])} · ledger {_e(os.path.basename(data["ledger"]))}
 · <span id="check" data-testid="check"></span></div>
<div class="cards">{card_html}</div>
<section><h2>Spend per day, by tenant</h2>{_spend_over_time(data["by_day_tenant"])}</section>
<div class="two"><section><h2>Top tenants</h2>{_bars(data["by_tenant"]["rows"], "tenant", "tenant")}</section>
<section><h2>Top features</h2>{_bars(data["by_feature"]["rows"], "feature", "feature")}</section></div>
<section style="margin-top:16px"><h2>Cache hits across tenants</h2>{_cache_dispersion(data["tenants"])}</section>
<section><h2>Most expensive traces</h2>{_expensive(data["top"]["traces"], "traces")}</section>
<section><h2>Most expensive tasks</h2>{_expensive(data["top"]["tasks"], "tasks")}</section>
{_savings_section(data["savings"])}
<footer>tokentrail {_e(_version())} · costs in USD from the ledger's integer nano-dollars · "no cost" = could not be
priced (unpriced, no usage or blocked), never $0 · open a trace: <code>tokentrail trace &lt;id&gt;</code></footer>
</main>
<script type="application/json" id="data">{html.escape(json.dumps(check), quote=False)}</script>
<script>{_JS}</script>
</body></html>
"""


def _version() -> str:
    from tokentrail.cli import _version as version

    return version()


# --- screenshot ------------------------------------------------------------------------------------
def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def run_chromium(page: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, with its own throw-away profile and no network."""
    exe = chromium()
    if exe is None:
        raise c.CliError("--png needs Chromium: apt-get install chromium (or give no --png)")
    with tempfile.TemporaryDirectory(prefix="tokentrail-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)


def screenshot(page: Path, png: Path, size: str = "1280,2000") -> None:
    proc = run_chromium(page, f"--screenshot={png.resolve()}", f"--window-size={size}")
    if proc.returncode != 0 or not png.exists():
        raise c.CliError(f"chromium could not take the screenshot: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
