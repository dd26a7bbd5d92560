"""tokentrail reprice: a real workload (the openai SDK over HTTP to the fake provider, the pipeline, the
ledger exporter) priced again with a corrected rate card, as adjustment entries; the original rows never
change, a batch is undone by its opposite, the numbers per owner to the nano-dollar."""

from __future__ import annotations

import json
import re
import sqlite3
from html.parser import HTMLParser

import pytest

import tokentrail
from tokentrail.cli import main
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.testing import openai_api

CARD = """\
discounts:
  - provider: openai
    model: gpt-4o-mini*
    percent: 10
    source: negotiated discount, contract of 2026-10
models:
  - provider: openai
    model: acme-private-model
    prices: {input: 1, output: 2}
"""


def _chat(client, model, **usage):
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={openai_api.HEADER: json.dumps(usage)})


@pytest.fixture
def ledger(tmp_path, pipeline, openai_client) -> str:
    mini = {"prompt_tokens": 10_000, "cached_tokens": 2_000, "completion_tokens": 1_000}  # $0.00195
    with tokentrail.attribute(tenant="acme"), tokentrail.task("digest", id="digest-1"):  # one trace, one task
        _chat(openai_client, "gpt-4o-mini", **mini)
        _chat(openai_client, "gpt-4o-mini", **mini)
    with tokentrail.attribute(tenant="globex"):
        _chat(openai_client, "gpt-4o-mini", **mini)
        _chat(openai_client, "acme-private-model", prompt_tokens=1_000, completion_tokens=100)  # unpriced
    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(pipeline.spans()).name == "SUCCESS"
    (tmp_path / "corrected.yaml").write_text(CARD)
    return path


def _json(capsys, *argv):
    assert main([*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _originals(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, cost_nano, cost_status FROM spans WHERE llm = 1 ORDER BY id").fetchall()


def test_dry_run_shows_per_owner_and_writes_nothing(ledger, tmp_path, capsys):
    card = str(tmp_path / "corrected.yaml")
    result = _json(capsys, "reprice", "--ledger", ledger, "--rate-card", card, "--dry-run")
    groups = {g["tenant"]: g for g in result["groups"]}
    # acme: 2 x $0.00195, 10% off
    assert groups["acme"] == {"tenant": "acme", "calls": 2, "before_nano": 3_900_000, "adjustment_nano": -390_000,
                              "after_nano": 3_510_000}
    # globex: $0.00195 10% off, and the private model now priced: 1,000 x $1/M + 100 x $2/M = $0.0012
    assert groups["globex"] == {"tenant": "globex", "calls": 2, "before_nano": 1_950_000,
                                "adjustment_nano": -195_000 + 1_200_000, "after_nano": 2_955_000}
    assert result["batch"] is None and "+user." in result["rate_card_version"]
    with sqlite3.connect(ledger) as conn:
        assert conn.execute("SELECT COUNT(*) FROM adjustments").fetchone()[0] == 0


def test_apply_is_auditable_idempotent_and_reversible(ledger, tmp_path, capsys):
    card = str(tmp_path / "corrected.yaml")
    before = _originals(ledger)
    applied = _json(capsys, "reprice", "--ledger", ledger, "--rate-card", card, "--reason", "contract 2026-10")
    assert applied["total"] == {"calls": 4, "adjustment_nano": -585_000 + 1_200_000}
    assert _originals(ledger) == before  # the original rows are never rewritten
    with sqlite3.connect(ledger) as conn:
        entries = conn.execute("SELECT batch, delta_nano, rate_card_version, reason FROM adjustments ORDER BY id").fetchall()
    assert sorted(e[1] for e in entries) == [-195_000, -195_000, -195_000, 1_200_000]
    assert {(e[0], e[2], e[3]) for e in entries} == {(applied["batch"], applied["rate_card_version"], "contract 2026-10")}

    report = _json(capsys, "report", "--ledger", ledger, "--by", "tenant")
    rows = {r["tenant"]: r for r in report["rows"]}
    assert (rows["acme"]["cost_nano_usd"], rows["acme"]["adjustment_nano_usd"], rows["acme"]["net_cost_nano_usd"]) \
        == (3_900_000, -390_000, 3_510_000)
    assert (report["total"]["cost_nano_usd"], report["total"]["net_cost_nano_usd"]) == (5_850_000, 6_465_000)
    assert main(["report", "--ledger", ledger]) == 0
    assert ("re-priced (tokentrail reprice --list): original $0.005850, adjustments $0.000615, net $0.006465"
            in capsys.readouterr().out)

    again = _json(capsys, "reprice", "--ledger", ledger, "--rate-card", card)
    assert again["total"] == {"calls": 0, "adjustment_nano": 0} and again["batch"] is None  # already net

    assert main(["reprice", "--ledger", ledger, "--revert", applied["batch"]]) == 0
    assert f"reverted {applied['batch']}: 4 opposite entries" in capsys.readouterr().out
    [reverted, first] = _json(capsys, "reprice", "--ledger", ledger, "--list")
    assert first["batch"] == applied["batch"] and first["delta_nano"] == 615_000
    assert reverted["reason"] == f"revert {applied['batch']}" and reverted["delta_nano"] == -615_000
    # net is the original again: the same card changes the same calls by the same amounts
    assert _json(capsys, "reprice", "--ledger", ledger, "--rate-card", card, "--dry-run")["total"]["adjustment_nano"] \
        == 615_000


def test_errors_are_one_line(ledger, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("discounts: [{percent: 150}]\n")
    assert main(["reprice", "--ledger", ledger, "--rate-card", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tokentrail: error: cannot use rate card {bad}: ") and err.count("\n") == 1
    assert main(["reprice", "--ledger", ledger, "--revert", "rp-nope"]) == 2
    assert capsys.readouterr().err == ("tokentrail: error: no adjustment batch 'rp-nope': `tokentrail reprice --list`"
                                       " shows them\n")
    assert main(["reprice", "--ledger", ledger]) == 2
    assert "--rate-card is required" in capsys.readouterr().err


class _Cells(HTMLParser):
    """data-testid -> [(the row's and the cell's attributes, text)] of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, list[tuple[dict, str]]] = {}
        self.row: dict = {}
        self.open: tuple[str, dict] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.row = attrs if tag == "tr" else self.row
        self.open = (attrs["data-testid"], {**self.row, **attrs}) if "data-testid" in attrs else None

    def handle_data(self, data):
        if self.open and data.strip():
            self.found.setdefault(self.open[0], []).append((self.open[1], data.strip()))
            self.open = None


def _page(ledger, tmp_path) -> dict[str, list[tuple[dict, str]]]:
    out = tmp_path / "view.html"
    assert main(["view", "--ledger", ledger, "--out", str(out)]) == 0
    cells = _Cells()
    cells.feed(out.read_text())
    return cells.found


def test_top_tenants_and_view_show_original_adjustments_and_net(ledger, tmp_path, capsys):
    top = _json(capsys, "top", "--ledger", ledger)
    assert not any("net_cost_nano_usd" in t for t in top["traces"] + top["tasks"])  # nothing re-priced yet
    assert "tenant-net" not in _page(ledger, tmp_path)
    capsys.readouterr()
    _json(capsys, "reprice", "--ledger", ledger, "--rate-card", str(tmp_path / "corrected.yaml"))

    top = _json(capsys, "top", "--ledger", ledger)
    [task] = top["tasks"]
    # acme's digest task: 2 x $0.00195, 10% off each
    assert (task["task_id"], task["cost_nano_usd"], task["adjustment_nano_usd"], task["net_cost_nano_usd"]) == (
        "digest-1", 3_900_000, -390_000, 3_510_000)
    traces = {(t["owner"].get("tenant"), t["cost_nano_usd"]): t for t in top["traces"]}
    assert traces[("acme", 3_900_000)]["net_cost_nano_usd"] == 3_510_000
    assert traces[("globex", 1_950_000)]["net_cost_nano_usd"] == 1_755_000
    private = traces[("globex", None)]  # the private model: no cost at first, priced by the new card
    assert (private["adjustment_nano_usd"], private["net_cost_nano_usd"]) == (1_200_000, 1_200_000)
    assert main(["top", "--ledger", ledger]) == 0
    text = capsys.readouterr().out
    assert "adjustment" in text and "$-0.000390" in text and "$0.003510" in text
    assert re.search(r"no cost \(1 unpriced\) +\$0\.001200 +\$0\.001200", text)  # no cost, never $0; then priced

    tenants = {t["tenant"]: t for t in _json(capsys, "tenants", "--ledger", ledger)["tenants"]}
    assert (tenants["acme"]["cost_nano_usd"], tenants["acme"]["adjustment_nano_usd"],
            tenants["acme"]["net_cost_nano_usd"]) == (3_900_000, -390_000, 3_510_000)
    assert (tenants["globex"]["cost_nano_usd"], tenants["globex"]["adjustment_nano_usd"],
            tenants["globex"]["net_cost_nano_usd"]) == (1_950_000, -195_000 + 1_200_000, 2_955_000)
    assert main(["tenants", "--ledger", ledger]) == 0
    header, _, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["adjustment", "net"]
    assert any(r.startswith("acme") and r.endswith("$-0.000390  $0.003510") for r in rows)

    page = _page(ledger, tmp_path)
    assert page["card-total"][0][1] == "$0.005850"  # the original stays
    assert page["card-net"][0][1] == "$0.006465"  # 5,850,000 - 585,000 + 1,200,000
    assert {a["data-tenant"]: int(a["data-nano"]) for a, _ in page["tenant-net"]} == {"acme": 3_510_000,
                                                                                       "globex": 2_955_000}
    assert [text for _, text in page["tasks-net"]] == ["$0.003510"]
    assert sorted(int(a["data-nano"]) for a, _ in page["traces-net"]) == [1_200_000, 1_755_000, 3_510_000]


def test_a_batch_call_over_the_context_tier_is_repriced_at_batch():
    """The ledger's pricing_tier is 'batch,context>200k': the service tier priced is its first part."""
    from tokentrail.ledger.adjustments import price_row

    row = dict(id=1, start_ns=1_790_000_000 * 10**9, provider="anthropic", operation="chat",
               request_model="claude-sonnet-4-20250514", response_model=None, pricing_tier="batch,context>200k",
               input_tokens=250_000, output_tokens=1_000, cache_read_tokens=0, cache_write_tokens=0,
               cache_write_1h_tokens=0, reasoning_tokens=None, cost_nano=None, cost_fees_nano=None)
    # Sonnet 4 over 200k input: $6 / $22.50 per million, batch half: 250k x $3 + 1k x $11.25 per million
    assert price_row(row) == 750_000_000 + 11_250_000
    assert price_row({**row, "pricing_tier": "standard,context>200k"}) == 1_500_000_000 + 22_500_000
