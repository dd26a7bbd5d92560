"""tokentrail chargeback: a real workload (the openai and anthropic SDKs over HTTP to the fake provider,
tokentrail's pipeline, the ledger exporter), the providers' bills stored by a real `tokentrail reconcile`
against the fake admin APIs, then the statement through the CLI: rows that add up to the invoice, the
residual allocated to the nano-dollar, cost centres, and the FOCUS 1.2 CSV checked against the spec."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from fractions import Fraction
from math import floor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokentrail
from tokentrail.cli import main
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.ledger.queries.chargeback import largest_remainder
from tokentrail.testing import admin_api, anthropic_api, openai_api
from tokentrail.testing.server import FakeResponse

D1, D2 = date(2026, 11, 3), date(2026, 11, 4)
MINI = "gpt-4o-mini-2024-07-18"  # the snapshot the API answers with, as the usage report names it
PRIVATE = "acme-private-model"  # on no rate card: unpriced in the ledger, billed by the provider
SONNET = "claude-sonnet-4-5-20250929"

# The ledger's cost of each call, from the rate card's prices per 1M tokens (worked by hand):
SUPPORT_MINI = 1_950_000  # gpt-4o-mini 10,000 in (2,000 cached) / 1,000 out: 8,000 x $0.15 + 2,000 x $0.075 + 1,000 x $0.60
SEARCH_MINI = 1_249_800  # gpt-4o-mini 7,000 in / 333 out: 7,000 x $0.15 + 333 x $0.60
CHAT_MINI = 2_100_000  # gpt-4o-mini 10,000 in / 1,000 out (no team: an unmapped owner)
CLAUDE = 6_000_000  # claude-sonnet-4.5 1,000 in / 200 out: 1,000 x $3 + 200 x $15
LEDGER_OPENAI = 2 * SUPPORT_MINI + SEARCH_MINI + CHAT_MINI  # 7,249,800 (the private model's call has no cost)
LEDGER_ANTHROPIC = 2 * CLAUDE

# The bills: OpenAI charged the ledger's gpt-4o-mini tokens at the card, one more support-sized call the
# ledger never saw, the private model ($0.0012) and web search ($0.0025); Anthropic 200 output tokens more on D2.
INVOICE_OPENAI = LEDGER_OPENAI + SUPPORT_MINI + 1_200_000 + 2_500_000  # 12,899,800
INVOICE_ANTHROPIC = LEDGER_ANTHROPIC + 3_000_000  # 15,000,000
CENTRES = """\
teams:
  support: CC-4100
  research: CC-4300
features:
  search: CC-4200
tenants:
  globex: CC-9000     # team research and feature search of globex are placed by team, then feature
"""


def _noon_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()) * 10**9


def _chat(client, model, **usage):
    return lambda: client.chat.completions.create(
        model=model.split("-2024")[0], messages=[{"role": "user", "content": "hi"}],
        extra_headers={openai_api.HEADER: json.dumps({"model": model, **usage})})


@pytest.fixture
def workload(tmp_path, server, pipeline, openai_client, anthropic_client) -> str:
    """The ledger: each call through the real SDK and pipeline, its span then placed at noon of its day."""
    def claude():
        server.enqueue(FakeResponse(json=anthropic_api.message(model=SONNET,
                                                               usage=anthropic_api.usage_block(1_000, 200))))
        anthropic_client.messages.create(model=SONNET, max_tokens=100, messages=[{"role": "user", "content": "hi"}])

    support = _chat(openai_client, MINI, prompt_tokens=10_000, cached_tokens=2_000, completion_tokens=1_000)
    calls = [
        (D1, dict(team="support", tenant="acme", feature="summarize"), support),
        (D1, dict(team="support", tenant="acme", feature="summarize"), support),
        (D1, dict(team="support", tenant="acme", feature="summarize"),
         _chat(openai_client, PRIVATE, prompt_tokens=1_000, completion_tokens=100)),
        (D2, dict(team="search", tenant="globex", feature="search"),
         _chat(openai_client, MINI, prompt_tokens=7_000, completion_tokens=333)),
        (D2, dict(tenant="initech", feature="chat"),
         _chat(openai_client, MINI, prompt_tokens=10_000, completion_tokens=1_000)),
        (D1, dict(team="support", tenant="acme", feature="triage"), claude),
        (D2, dict(team="research", tenant="globex", feature="triage"), claude),
    ]
    days = {}
    for day, owner, call in calls:
        with tokentrail.attribute(**owner):
            call()
        days[pipeline.llm_spans()[-1].context.span_id] = day
    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(pipeline.spans()).name == "SUCCESS"
    with sqlite3.connect(path) as conn:
        for span_id, day in days.items():
            conn.execute("UPDATE spans SET start_ns = ? WHERE span_id = ?", (_noon_ns(day), format(span_id, "016x")))
    (tmp_path / "centres.yaml").write_text(CENTRES)
    return path


def _mini_costs(day, uncached, cached, output):
    return [{"day": day, "line_item": f"{MINI}, input", "usd": str(Decimal("0.15") * uncached / 10**6)},
            {"day": day, "line_item": f"{MINI}, cached input", "usd": str(Decimal("0.075") * cached / 10**6)},
            {"day": day, "line_item": f"{MINI}, output", "usd": str(Decimal("0.6") * output / 10**6)}]


def _claude_costs(day, output):
    return [{"day": day, "model": SONNET, "cost_type": "tokens", "service_tier": "standard", "token_type": t,
             "cents": str(Decimal(cents) * n / 10**6)}
            for t, cents, n in (("uncached_input_tokens", 300, 1_000), ("output_tokens", 1500, output))]


BOOK = admin_api.AdminBook(
    openai_usage=[
        {"day": D1, "model": MINI, "input_tokens": 30_000, "input_cached_tokens": 6_000, "output_tokens": 3_000},
        {"day": D1, "model": PRIVATE, "input_tokens": 1_000, "output_tokens": 100},
        {"day": D2, "model": MINI, "input_tokens": 17_000, "output_tokens": 1_333},
    ],
    openai_costs=[
        *_mini_costs(D1, 24_000, 6_000, 3_000), *_mini_costs(D2, 17_000, 0, 1_333),
        {"day": D1, "line_item": f"{PRIVATE}, input", "usd": "0.001"},
        {"day": D1, "line_item": f"{PRIVATE}, output", "usd": "0.0002"},
        {"day": D2, "line_item": "web search tool calls", "usd": "0.0025"},
    ],
    anthropic_usage=[{"day": d, "model": SONNET, "uncached_input_tokens": 1_000, "output_tokens": out}
                     for d, out in ((D1, 200), (D2, 400))],
    anthropic_costs=[*_claude_costs(D1, 200), *_claude_costs(D2, 400)],
)



def _reconcile(capsys, monkeypatch, provider, ledger, since="2026-11-01", until="2026-12-01"):
    monkeypatch.setenv("OPENAI_ADMIN_KEY", admin_api.OPENAI_ADMIN_KEY)
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", admin_api.ANTHROPIC_ADMIN_KEY)
    book = admin_api.AdminBook(**{k: getattr(BOOK, k) for k in
                                  ("openai_usage", "openai_costs", "anthropic_usage", "anthropic_costs")},
                               page_size=31)
    with admin_api.admin_server(book) as admin:
        base = admin.url + ("/v1" if provider == "openai" else "")
        code = main(["reconcile", provider, "--ledger", ledger, "--base-url", base, "--since", since, "--until", until,
                     "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def reconciled(workload, capsys, monkeypatch) -> str:
    """The workload with both providers' November bills stored, as `tokentrail reconcile` stores them."""
    runs = [_reconcile(capsys, monkeypatch, p, workload) for p in ("openai", "anthropic")]
    assert [r["total"]["provider"]["cost_nano"] for r in runs] == [INVOICE_OPENAI, INVOICE_ANTHROPIC]
    assert [r["total"]["ledger"]["cost_nano"] for r in runs] == [LEDGER_OPENAI, LEDGER_ANTHROPIC]
    return workload


def _chargeback(capsys, ledger, *args, code=0):
    assert main(["chargeback", "--ledger", ledger, "--month", "2026-11", *args]) == code
    return capsys.readouterr()


def _json(capsys, ledger, *args):
    return json.loads(_chargeback(capsys, ledger, *args, "--format", "json").out)


def _largest_remainder(total: int, weights: dict[str, int]) -> dict[str, int]:
    """The test's own allocation: exact quotas as fractions, floors, then the largest remainders get a unit."""
    quotas = {k: Fraction(total * w, sum(weights.values())) for k, w in weights.items()}
    shares = {k: floor(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - shares[k]), -weights[k], k))[:total - sum(shares.values())]:
        shares[k] += 1
    return shares


@settings(max_examples=300, deadline=None)
@given(total=st.integers(-10**12, 10**12), weights=st.lists(st.integers(0, 10**12), min_size=1, max_size=12)
       .filter(lambda w: sum(w) > 0))
def test_largest_remainder_sums_exactly_and_each_share_is_its_quota_within_a_nano(total, weights):
    shares = largest_remainder(total, weights)
    assert sum(shares) == total
    for share, weight in zip(shares, weights):
        quota = Fraction(total * weight, sum(weights))
        assert floor(quota) <= share <= floor(quota) + 1 and (weight or share == 0)
    assert shares == list(_largest_remainder(total, dict(enumerate(weights))).values())


# --- the statement ---------------------------------------------------------------------------------------
def test_residual_on_its_own_row_and_the_total_is_the_invoice(reconciled, capsys):
    data = _json(capsys, reconciled, "--by", "team")
    rows = {r["team"]: r for r in data["rows"]}
    assert set(rows) == {"support", "search", "research", "(no team)", "(unexplained: openai)",
                         "(unexplained: anthropic)"}
    assert rows["support"]["cost_nano_usd"] == 2 * SUPPORT_MINI + CLAUDE
    assert rows["support"]["unpriced_calls"] == 1 and rows["support"]["calls"] == 4
    assert rows["(no team)"]["total_nano_usd"] == CHAT_MINI  # the unattributed-team call is listed, not dropped
    assert rows["(unexplained: openai)"]["total_nano_usd"] == INVOICE_OPENAI - LEDGER_OPENAI == 5_650_000
    assert rows["(unexplained: anthropic)"]["total_nano_usd"] == 3_000_000
    assert sum(r["total_nano_usd"] for r in data["rows"]) == data["total"]["total_nano_usd"] \
        == INVOICE_OPENAI + INVOICE_ANTHROPIC
    assert data["invoice"]["matched"] is True
    assert {p["provider"]: p["status"] for p in data["invoice"]["providers"]} == {"openai": "reconciled",
                                                                                  "anthropic": "reconciled"}
    text = _chargeback(capsys, reconciled, "--by", "team").out
    assert "Total $0.027900 equals the provider invoices for the period (reconciliation anthropic #2, openai #1)." in text
    assert re.search(r"^support\s+4\s+24,300\s+\$0\.009900\s+-\s+\$0\.009900\s+35\.5%$", text, re.M), text
    assert re.search(r"^\(unexplained: openai\)\s+-\s+-\s+-\s+\$0\.005650\s+\$0\.005650\s+20\.3%$", text, re.M), text
    assert "1 call without a measured cost (counted, not $0): 1 unpriced" in text


def test_proportional_allocation_to_the_nano_dollar(reconciled, capsys):
    data = _json(capsys, reconciled, "--by", "team", "--allocate", "proportional")
    rows = {r["team"]: r for r in data["rows"]}
    assert set(rows) == {"support", "search", "research", "(no team)"}  # no residual row left
    # each provider's residual is shared by the teams' cost with that provider
    openai = _largest_remainder(INVOICE_OPENAI - LEDGER_OPENAI,
                                {"support": 2 * SUPPORT_MINI, "search": SEARCH_MINI, "(no team)": CHAT_MINI})
    anthropic = _largest_remainder(INVOICE_ANTHROPIC - LEDGER_ANTHROPIC, {"support": CLAUDE, "research": CLAUDE})
    # worked by hand: the quotas of 5,650,000 by 3,900,000 / 1,249,800 / 2,100,000 of 7,249,800 are
    # 3,039,394.19, 974,008.94 and 1,636,596.87; the floors leave 2 nano, to the two largest remainders
    assert openai == {"support": 3_039_394, "search": 974_009, "(no team)": 1_636_597}
    for team in rows:
        expected = openai.get(team, 0) + anthropic.get(team, 0)
        assert rows[team]["residual_nano_usd"] == expected, team
        assert rows[team]["total_nano_usd"] == rows[team]["net_cost_nano_usd"] + expected
    assert rows["support"]["total_nano_usd"] == 2 * SUPPORT_MINI + CLAUDE + 3_039_394 + 1_500_000
    assert sum(r["total_nano_usd"] for r in data["rows"]) == data["total"]["total_nano_usd"] \
        == INVOICE_OPENAI + INVOICE_ANTHROPIC
    assert data["invoice"]["matched"] is True


def test_cost_centres_with_precedence_and_the_unmapped_owner(reconciled, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_COST_CENTRES", str(tmp_path / "centres.yaml"))
    data = _json(capsys, reconciled, "--by", "cost_centre", "--allocate", "proportional")
    rows = {r["cost_centre"]: r for r in data["rows"]}
    # support -> CC-4100 by team; team search is not mapped, its feature search is (CC-4200) although its
    # tenant globex is too; research -> CC-4300 by team, before its tenant globex; initech: nothing maps it
    assert set(rows) == {"CC-4100", "CC-4200", "CC-4300", "(no cost centre)"}
    assert rows["(no cost centre)"]["owners"] == [{"team": "(no team)", "feature": "chat", "tenant": "initech"}]
    assert rows["(no cost centre)"]["net_cost_nano_usd"] == CHAT_MINI
    assert rows["CC-4200"]["net_cost_nano_usd"] == SEARCH_MINI
    by_team = {r["team"]: r["total_nano_usd"] for r in _json(capsys, reconciled, "--by", "team", "--allocate",
                                                                  "proportional")["rows"]}
    assert {k: r["total_nano_usd"] for k, r in rows.items()} == {
        "CC-4100": by_team["support"], "CC-4200": by_team["search"], "CC-4300": by_team["research"],
        "(no cost centre)": by_team["(no team)"]}
    assert sum(r["total_nano_usd"] for r in rows.values()) == INVOICE_OPENAI + INVOICE_ANTHROPIC
    text = _chargeback(capsys, reconciled, "--by", "cost_centre").out
    assert "(no cost centre): team (no team) / feature chat / tenant initech (map them in" in text


def test_repriced_history_is_net_and_the_total_still_the_invoice(reconciled, tmp_path, capsys):
    card = tmp_path / "discount.yaml"
    card.write_text("discounts:\n  - provider: openai\n    model: gpt-4o-mini*\n    percent: 10\n"
                    "    source: contract 2026-10\n")
    assert main(["reprice", "--ledger", reconciled, "--rate-card", str(card), "--since", "2026-11-01",
                 "--until", "2026-12-01", "--format", "json"]) == 0
    capsys.readouterr()
    data = _json(capsys, reconciled, "--by", "team")
    rows = {r["team"]: r for r in data["rows"]}
    assert rows["search"]["adjustment_nano_usd"] == -SEARCH_MINI // 10 == -124_980
    assert rows["search"]["net_cost_nano_usd"] == rows["search"]["total_nano_usd"] == SEARCH_MINI - 124_980
    net_openai = LEDGER_OPENAI - LEDGER_OPENAI // 10
    assert rows["(unexplained: openai)"]["total_nano_usd"] == INVOICE_OPENAI - net_openai
    assert data["total"]["total_nano_usd"] == INVOICE_OPENAI + INVOICE_ANTHROPIC
    text = _chargeback(capsys, reconciled, "--by", "team").out
    assert "adjustment" in text.splitlines()[2] and "net" in text.splitlines()[2]


def test_no_reconciliation_says_the_total_is_only_measured(workload, capsys):
    data = _json(capsys, workload, "--by", "tenant", "--allocate", "proportional")
    assert data["invoice"]["matched"] is False
    assert data["total"]["total_nano_usd"] == LEDGER_OPENAI + LEDGER_ANTHROPIC
    assert {r["tenant"] for r in data["rows"]} == {"acme", "globex", "initech"}
    text = _chargeback(capsys, workload, "--by", "tenant").out
    assert "Total $0.019250 is the measured cost, NOT the invoice: no reconciliation covers this period." in text
    assert ("  openai: no reconciliation, measured cost only: `tokentrail reconcile openai --since 2026-11-01"
            " --until 2026-12-01`") in text


def test_partial_and_one_of_two_providers(workload, capsys, monkeypatch):
    _reconcile(capsys, monkeypatch, "openai", workload, since="2026-11-03", until="2026-11-04")  # D1 only
    data = _json(capsys, workload, "--by", "team")
    providers = {p["provider"]: p for p in data["invoice"]["providers"]}
    assert providers["openai"]["status"] == "partial" and providers["openai"]["reconciled_days"] == 1
    assert providers["anthropic"]["status"] == "none"
    # D1's bill: 3 support-sized calls, the private model; the ledger measured 2 support calls that day
    d1_residual = 3 * SUPPORT_MINI + 1_200_000 - 2 * SUPPORT_MINI
    rows = {r["team"]: r for r in data["rows"]}
    assert rows["(unexplained: openai)"]["total_nano_usd"] == providers["openai"]["residual_nano_usd"] == d1_residual
    assert data["total"]["total_nano_usd"] == LEDGER_OPENAI + LEDGER_ANTHROPIC + d1_residual
    text = _chargeback(capsys, workload, "--by", "team").out
    assert "is NOT the invoice: reconciliations cover only part of the period." in text
    assert ("  openai: reconciled on 1 of 30 whole days (2026-11-03 .. 2026-11-03): the residual of those days is"
            " included, the rest is measured cost only") in text
    assert "  anthropic: no reconciliation, measured cost only" in text
    _reconcile(capsys, monkeypatch, "openai", workload)  # now the whole month: openai matched, anthropic not
    text = _chargeback(capsys, workload, "--by", "team").out
    assert "is NOT the invoice: only openai of 2 providers is reconciled for the whole period." in text


def test_where_keeps_the_residual_out(reconciled, capsys):
    data = _json(capsys, reconciled, "--by", "team", "--where", "tenant=acme")
    assert [r["team"] for r in data["rows"]] == ["support"]
    assert data["total"]["total_nano_usd"] == 2 * SUPPORT_MINI + CLAUDE and data["invoice"]["matched"] is False
    assert "no residual is shown" in data["notes"][0]


# --- FOCUS --------------------------------------------------------------------------------------------
# FOCUS 1.2 columns: (feature level, allows nulls, data type), from the specification's column files at
# its v1.2 tag (github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, specification/columns/*.md,
# "Content constraints" tables). The FinOps Foundation's `focus-validator` (1.0.0, its only PyPI release)
# was tried: it does not import as installed (pandera 0.17 against multimethod 2), and its rules predate
# FOCUS 1.0's column names (it requires Provider, ChargeType...), so the spec is checked here as data.
FOCUS_1_2 = {
    "AvailabilityZone": ("Recommended", True, "String"), "BilledCost": ("Mandatory", False, "Decimal"),
    "BillingAccountId": ("Mandatory", False, "String"), "BillingAccountName": ("Mandatory", True, "String"),
    "BillingAccountType": ("Conditional", False, "String"), "BillingCurrency": ("Mandatory", False, "String"),
    "BillingPeriodEnd": ("Mandatory", False, "DateTime"), "BillingPeriodStart": ("Mandatory", False, "DateTime"),
    "CapacityReservationId": ("Conditional", True, "String"),
    "CapacityReservationStatus": ("Conditional", True, "String"),
    "ChargeCategory": ("Mandatory", False, "String"), "ChargeClass": ("Mandatory", True, "String"),
    "ChargeDescription": ("Mandatory", True, "String"), "ChargeFrequency": ("Recommended", False, "String"),
    "ChargePeriodEnd": ("Mandatory", False, "DateTime"), "ChargePeriodStart": ("Mandatory", False, "DateTime"),
    "CommitmentDiscountCategory": ("Conditional", True, "String"),
    "CommitmentDiscountId": ("Conditional", True, "String"),
    "CommitmentDiscountName": ("Conditional", True, "String"),
    "CommitmentDiscountQuantity": ("Conditional", True, "Decimal"),
    "CommitmentDiscountStatus": ("Conditional", True, "String"),
    "CommitmentDiscountType": ("Conditional", True, "String"),
    "CommitmentDiscountUnit": ("Conditional", True, "String"),
    "ConsumedQuantity": ("Conditional", True, "Decimal"), "ConsumedUnit": ("Conditional", True, "String"),
    "ContractedCost": ("Mandatory", False, "Decimal"), "ContractedUnitPrice": ("Conditional", True, "Decimal"),
    "EffectiveCost": ("Mandatory", False, "Decimal"), "InvoiceId": ("Recommended", True, "String"),
    "InvoiceIssuerName": ("Mandatory", False, "String"), "ListCost": ("Mandatory", False, "Decimal"),
    "ListUnitPrice": ("Conditional", True, "Decimal"), "PricingCategory": ("Conditional", True, "String"),
    "PricingCurrency": ("Conditional", True, "String"),
    "PricingCurrencyContractedUnitPrice": ("Conditional", True, "Decimal"),
    "PricingCurrencyEffectiveCost": ("Conditional", True, "Decimal"),
    "PricingCurrencyListUnitPrice": ("Conditional", True, "Decimal"),
    "PricingQuantity": ("Mandatory", True, "Decimal"), "PricingUnit": ("Mandatory", True, "String"),
    "ProviderName": ("Mandatory", False, "String"), "PublisherName": ("Mandatory", False, "String"),
    "RegionId": ("Conditional", True, "String"), "RegionName": ("Conditional", True, "String"),
    "ResourceId": ("Conditional", True, "String"), "ResourceName": ("Conditional", True, "String"),
    "ResourceType": ("Conditional", True, "String"), "ServiceCategory": ("Mandatory", False, "String"),
    "ServiceName": ("Mandatory", False, "String"), "ServiceSubcategory": ("Recommended", False, "String"),
    "SkuId": ("Conditional", True, "String"), "SkuMeter": ("Conditional", True, "String"),
    "SkuPriceDetails": ("Conditional", True, "JSON"), "SkuPriceId": ("Conditional", True, "String"),
    "SubAccountId": ("Conditional", True, "String"), "SubAccountName": ("Conditional", True, "String"),
    "SubAccountType": ("Conditional", True, "String"), "Tags": ("Conditional", True, "JSON"),
}
# Allowed values (same source); ServiceSubcategory is given with its parent ServiceCategory.
ALLOWED = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeClass": {"Correction"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {"AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
                        "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
                        "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
                        "Storage", "Web", "Other"},
}
AI_SUBCATEGORIES = {"AI Platforms", "Bots", "Generative AI", "Machine Learning", "Natural Language Processing",
                    "Other (AI and Machine Learning)"}
# Numeric Format (attributes/numeric_format.md): an integer, a decimal or E notation, no "+", no commas.
NUMERIC = re.compile(r"^-?\d+(\.\d+)?(E-?\d+)?$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")  # Date/Time Format: ISO 8601 UTC with Z


def _check_focus(text: str) -> list[dict]:
    """Every FOCUS 1.2 rule the export can be held to, cell by cell; the rows (None for a null cell)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    focus = [h for h in header if not h.startswith("x_")]
    assert header[:len(focus)] == focus, "custom (x_) columns come after every FOCUS column"
    assert set(focus) <= set(FOCUS_1_2), set(focus) - set(FOCUS_1_2)
    assert {k for k, (level, _, _) in FOCUS_1_2.items() if level == "Mandatory"} <= set(focus)
    rows = [{k: (v if v != "" else None) for k, v in zip(header, line)} for line in reader]
    assert rows
    for row in rows:
        for column in focus:
            _, nullable, kind = FOCUS_1_2[column]
            value = row[column]
            if value is None:
                assert nullable, f"{column} must not be null"
                continue
            if kind == "Decimal":
                assert NUMERIC.match(value), (column, value)
            elif kind == "DateTime":
                assert DATETIME.match(value), (column, value)
                datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
            elif kind == "JSON":
                tags = json.loads(value)
                assert isinstance(tags, dict) and all(v is None or isinstance(v, (str, int, float, bool))
                                                      for v in tags.values())
            if column in ALLOWED:
                assert value in ALLOWED[column], (column, value)
        assert re.fullmatch(r"[A-Z]{3}", row["BillingCurrency"])
        assert row["ServiceCategory"] != "AI and Machine Learning" or row["ServiceSubcategory"] in AI_SUBCATEGORIES
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"]
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"] and row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        if row["ChargeCategory"] == "Usage":  # SkuId, SkuPriceId, PricingQuantity, PricingCategory: not null
            assert all(row[k] is not None for k in ("SkuId", "SkuPriceId", "PricingQuantity", "PricingCategory"))
        else:  # ConsumedQuantity is null when not Usage; an unrelated charge's List/Contracted = Billed
            assert row["ConsumedQuantity"] is None
            assert row["ListCost"] == row["ContractedCost"] == row["BilledCost"]
    return rows


def test_focus_export_validates_and_sums_to_the_invoice(reconciled, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_COST_CENTRES", str(tmp_path / "centres.yaml"))
    result = _chargeback(capsys, reconciled, "--by", "team", "--allocate", "proportional", "--format", "focus")
    rows = _check_focus(result.out)
    assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal(INVOICE_OPENAI + INVOICE_ANTHROPIC) / 10**9
    assert {r["ChargeCategory"] for r in rows} == {"Usage"}  # all of the residual is allocated
    # one row per day x provider x model x owner; its tags carry the owner and the cost centre
    search = [r for r in rows if json.loads(r["Tags"]).get("team") == "search"]
    [line] = search
    assert json.loads(line["Tags"]) == {"team": "search", "feature": "search", "tenant": "globex",
                                        "cost_centre": "CC-4200"}
    assert (line["ChargePeriodStart"], line["ChargePeriodEnd"]) == ("2026-11-04T00:00:00Z", "2026-11-05T00:00:00Z")
    assert (line["BillingPeriodStart"], line["BillingPeriodEnd"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert (line["ProviderName"], line["SkuId"], line["ConsumedQuantity"], line["ConsumedUnit"]) == (
        "OpenAI", MINI, "7333", "Tokens")
    assert Decimal(line["ListCost"]) == Decimal(SEARCH_MINI) / 10**9
    assert Decimal(line["BilledCost"]) == Decimal(SEARCH_MINI + 974_009) / 10**9  # its share of the residual
    unmapped = [json.loads(r["Tags"]) for r in rows if json.loads(r["Tags"]).get("tenant") == "initech"]
    assert unmapped == [{"team": None, "feature": "chat", "tenant": "initech", "cost_centre": None}]
    # per team, the FOCUS rows add up to the statement's rows
    statement = {r["team"]: r["total_nano_usd"] for r in _json(capsys, reconciled, "--by", "team", "--allocate",
                                                                   "proportional")["rows"]}
    per_team: dict = {}
    for r in rows:
        team = json.loads(r["Tags"])["team"] or "(no team)"
        per_team[team] = per_team.get(team, 0) + Decimal(r["BilledCost"])
    assert per_team == {k: Decimal(v) / 10**9 for k, v in statement.items()}
    assert "1 call without any cost (unpriced, no usage or blocked) is not a FOCUS row" in result.err


def test_focus_residual_rows_when_kept_apart(reconciled, capsys):
    rows = _check_focus(_chargeback(capsys, reconciled, "--format", "focus").out)
    residual = [r for r in rows if r["ChargeCategory"] == "Adjustment"]
    # per provider and reconciled day: the bill minus what the ledger measured that day
    assert {(r["ProviderName"], r["ChargePeriodStart"][:10], Decimal(r["BilledCost"])) for r in residual} == {
        ("OpenAI", "2026-11-03", Decimal(SUPPORT_MINI + 1_200_000) / 10**9),
        ("OpenAI", "2026-11-04", Decimal("0.0025")),
        ("Anthropic", "2026-11-04", Decimal("0.003")),
    }
    assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal(INVOICE_OPENAI + INVOICE_ANTHROPIC) / 10**9


# --- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("teams:\n  support: CC-1\n  support: CC-2\n", "'support' is given twice (line 3): each owner has one cost centre"),
    ("team:\n  support: CC-1\n", "unknown section 'team': use teams:, features:, tenants:"),
    ("teams:\n  support: [CC-1, CC-2]\n", "teams.support: the cost centre must be a name or a number, not list"),
    ("teams:\n  support:\n", "teams.support: the cost centre must be a name or a number, not nothing"),
    ("features:\n  has space: CC-1\n", "features.has space: a feature is 1-128 characters of A-Za-z0-9._:@/+-"),
    ("teams: [support]\n", "teams: expected a mapping of team -> cost centre"),
    ("- support\n", "expected a mapping with teams:, features: and/or tenants:"),
    ("teams:\n  support: CC-1\n bad: : x\n", "not valid YAML at line 3"),
])
def test_bad_cost_centres_file_is_one_line_exit_2(workload, tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    err = _chargeback(capsys, workload, "--by", "cost_centre", "--cost-centres", str(bad), code=2).err
    assert err.startswith(f"tokentrail: error: cost centres file {bad}: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_other_bad_input_is_one_line_exit_2(workload, tmp_path, capsys, monkeypatch):
    for args, message in [
        (["--by", "cost_centre"], "--by cost_centre needs a cost centres file: --cost-centres FILE or"
                                  " TOKENTRAIL_COST_CENTRES"),
        (["--cost-centres", str(tmp_path / "missing.yaml")], f"cost centres file {tmp_path / 'missing.yaml'}:"
                                                            " cannot read it (No such file or directory)"),
        (["--since", "2026-11-01"], "give either --month or --since/--until, not both"),
    ]:
        assert _chargeback(capsys, workload, *args, code=2).err == f"tokentrail: error: {message}\n"
    assert main(["chargeback", "--ledger", workload, "--month", "2026-13"]) == 2
    assert capsys.readouterr().err == "tokentrail: error: bad --month '2026-13': use a year and month, e.g. 2026-11\n"
    monkeypatch.setenv("TOKENTRAIL_COST_CENTRES", str(tmp_path / "nope.yaml"))  # from the environment too
    assert main(["chargeback", "--ledger", workload, "--month", "2026-11"]) == 2
    assert "tokentrail: error: cost centres file" in capsys.readouterr().err


_WORDS = st.sampled_from(["2026-11", "2026-13", "9999-12", "0001-01", "2262-03", "7d", "0001-01-01", "2300-01-01",
                          "now", "", " ", "tenant=", "team=support", "colour=red", "=x", "team", "cost_centre",
                          "proportional", "none", "focus", "csv", "json", "table", "\x00", "nan", "∞"])
_CHARGEBACK = ["--month", "--since", "--until", "--where", "--by", "--allocate", "--format", "--cost-centres"]
_FILES = {"good.yaml": CENTRES, "binary.yaml": b"\xff\xfe\x00teams", "unhashable.yaml": "teams:\n  ? [a, b]\n  : x\n",
          "alias.yaml": "teams: &a\n  support: *a\n", "number.yaml": "teams:\n  4100: 4100\n  x: 1.5\n"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(st.tuples(st.sampled_from(_CHARGEBACK), st.one_of(_WORDS, st.text(max_size=10),
                                                                        st.sampled_from(sorted(_FILES)))),
                        max_size=5))
def test_every_command_line_is_exit_0_or_2_and_one_line(workload, tmp_path, options):
    for name, content in _FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = ["chargeback", "--ledger", workload]
    for option, value in options:
        argv += [option, str(tmp_path / value) if option == "--cost-centres" and value in _FILES else value]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse's own usage error (an unknown --by choice)
        code = exc.code
        assert code == 2 and "usage:" in err.getvalue()
        return
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        assert err.getvalue().startswith("tokentrail: error: ") and err.getvalue().count("\n") == 1, (argv, err)


@pytest.mark.slow
def test_the_command_in_a_real_process(reconciled, tmp_path):
    env = {**os.environ, "TOKENTRAIL_COST_CENTRES": str(tmp_path / "centres.yaml")}
    done = subprocess.run([sys.executable, "-m", "tokentrail.cli", "chargeback", "--ledger", reconciled, "--month",
                           "2026-11", "--by", "cost_centre", "--allocate", "proportional", "--format", "csv"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["cost_centre"]: r["kind"] for r in rows} == {"CC-4100": "owner", "CC-4200": "owner", "CC-4300": "owner",
                                                          "(no cost centre)": "owner"}
    assert sum(int(r["total_nano_usd"]) for r in rows) == INVOICE_OPENAI + INVOICE_ANTHROPIC
    assert done.stderr == ""  # the total is the invoice: nothing to warn about
    bad = tmp_path / "bad.yaml"
    bad.write_text("teams:\n  support: {cc: 1}\n")
    done = subprocess.run([sys.executable, "-m", "tokentrail.cli", "chargeback", "--ledger", reconciled, "--month",
                           "2026-11", "--cost-centres", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"tokentrail: error: cost centres file {bad}: teams.support: the cost centre must be a name"
                           " or a number, not dict\n")
