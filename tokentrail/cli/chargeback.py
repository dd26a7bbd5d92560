"""``tokentrail chargeback``: a period's spend per team, tenant, feature or cost centre, summing to the invoice.

Formats: a table, plain CSV and JSON of the statement, and ``focus``: the FinOps Foundation's FOCUS 1.2
CSV at the grain day x provider x model x owner (docs/chargeback.md says how each column is filled).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import date, datetime, timezone
from decimal import Decimal

from tokentrail import costcentres
from tokentrail.cli import _common as c
from tokentrail.ledger.queries.chargeback import ALLOCATE, BY, chargeback, month_period
from tokentrail.ledger.queries.common import MISSING, UNATTRIBUTED

#: The reconcilable providers (``tokentrail reconcile``), named in the hint when a period is not reconciled.
_RECONCILE = ("openai", "anthropic")
#: Ledger provider id (gen_ai.provider.name) -> FOCUS ProviderName and ServiceName.
_PROVIDERS = {
    "openai": ("OpenAI", "OpenAI API"),
    "anthropic": ("Anthropic", "Claude API"),
    "gcp.gemini": ("Google", "Gemini API"),
    "gcp.vertex_ai": ("Google Cloud", "Vertex AI"),
    "aws.bedrock": ("AWS", "Amazon Bedrock"),
    "mistral_ai": ("Mistral AI", "Mistral AI API"),
    "azure.ai.openai": ("Microsoft", "Azure OpenAI"),
}
#: FOCUS 1.2 columns written, in the specification's (alphabetical) order; custom columns (x_) after them.
FOCUS_COLUMNS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd",
    "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "EffectiveCost", "InvoiceIssuerName",
    "ListCost", "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName",
    "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuPriceId", "Tags", "x_Calls",
)
_CSV_COLUMNS = ("kind", "provider", "calls", "input_tokens", "cache_read_tokens", "cache_write_tokens",
                "output_tokens", "cost_nano_usd", "adjustment_nano_usd", "net_cost_nano_usd", "residual_nano_usd",
                "total_nano_usd", "total_usd", "share", "unpriced_calls", "no_usage_calls", "blocked_calls")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "chargeback",
        help="a month's spend per team, tenant, feature or cost centre, adding up to the provider's invoice",
        description="A chargeback statement: per owner the measured cost (net of re-pricing adjustments), calls and"
        " tokens, plus the provider's unexplained residual from a stored reconciliation (tokentrail reconcile),"
        " kept as its own row (--allocate none) or allocated proportionally to the owners' cost (--allocate"
        " proportional, exact to the nano-dollar). The statement says whether its total is the invoice."
        " Cost centres come from a YAML file (--cost-centres or TOKENTRAIL_COST_CENTRES): docs/chargeback.md.",
    )
    p.add_argument("--month", metavar="YYYY-MM", help="the UTC calendar month (default: the current one, so far)")
    p.add_argument("--by", choices=BY, default="team", help="one row per team (default), tenant, feature or cost_centre")
    p.add_argument("--allocate", choices=ALLOCATE, default="none",
                   help="the invoice's unexplained residual: its own row (none, default) or shared by cost (proportional)")
    p.add_argument("--cost-centres", metavar="FILE", help="cost centres YAML (default: $TOKENTRAIL_COST_CENTRES)")
    c.add_period_options(p)
    c.add_format_option(p, ("table", "csv", "json", "focus"))
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.month and (args.since or args.until):
        raise c.CliError("give either --month or --since/--until, not both")
    if args.until and not args.since and not args.month:
        raise c.CliError("--until needs --since (or use --month 2026-11)")
    try:
        centres = costcentres.configured(args.cost_centres)
    except costcentres.CostCentreError as exc:
        raise c.CliError(str(exc)) from None
    month = args.month
    if month or not args.since:
        month = month or datetime.now(timezone.utc).strftime("%Y-%m")
        period, where = c.query(month_period, month), c.query(c.parse_where, args.where)
    else:
        period, where = c.period_and_where(args)
    with c.open_ledger(args) as ledger:
        data = c.query(chargeback, ledger, args.by, period, where, args.allocate, centres, month,
                       lines=args.format == "focus")
    if args.format == "json":
        c.print_json(data)
    elif args.format == "csv":
        write_csv(data)
        _notes_to_stderr(data)
    elif args.format == "focus":
        write_focus(data, sys.stdout)
        _notes_to_stderr(data)
    else:
        print(render(data))
    return 0


# --- table ------------------------------------------------------------------------------------------
def render(data: dict) -> str:
    by = data["by"]
    rows, total = data["rows"], data["total"]
    adjusted = any(r["adjustment_nano_usd"] for r in rows)
    residual = any(r["residual_nano_usd"] for r in rows)
    headers = [by, "calls", "tokens", "measured"] + (["adjustment", "net"] if adjusted else [])
    headers += (["residual"] if residual else []) + ["total", "share"]

    def cells(row: dict, name: str, is_total: bool = False) -> list[str]:
        own = row.get("kind") != "residual"
        out = [name, c.count(row["calls"]) if own else "-",
               c.count(row["input_tokens"] + row["output_tokens"]) if own else "-",
               c.cost(row["cost_nano_usd"], row) if own else "-"]
        if adjusted:
            out += [c.usd(row["adjustment_nano_usd"]) if own else "-", c.usd(row["net_cost_nano_usd"])]
        if residual:  # allocated to owners, or on the residual rows only
            shown = not own or is_total or data["allocate"] != "none"
            out.append(c.usd(row["residual_nano_usd"]) if shown else "-")
        return out + [c.cost(row["total_nano_usd"], row), c.pct(row.get("share"), 1)]

    table_rows = [cells(r, r[by]) for r in rows]
    table_rows.append(cells({**total, "share": 1.0 if total["total_nano_usd"] else None}, "TOTAL", True))
    period = data["period"]
    when = (f"{data['month']} ({period['since'][:10]} .. {period['until'][:10]}, UTC)" if data["month"]
            else f"{period['since']} .. {period['until']}")
    residual_how = {"none": "the invoice's unexplained residual on its own row",
                    "proportional": "the invoice's unexplained residual allocated by cost"}[data["allocate"]]
    head = f"Chargeback {when} by {by}; {residual_how}"
    if data["where"]:
        head += "  where " + ", ".join(f"{k}={v if v is not None else MISSING.get(k, UNATTRIBUTED)}"
                                      for k, v in data["where"].items())
    lines = [head, "", c.table(headers, table_rows, [False] + [True] * (len(headers) - 1)), ""]
    lines += invoice_lines(data)
    unmapped = next((r for r in rows if r.get(by) == costcentres.NO_COST_CENTRE), None) if by == "cost_centre" else None
    if unmapped:
        owners = [f"team {o['team']} / feature {o['feature']} / tenant {o['tenant']}" for o in unmapped["owners"]]
        more = f", and {len(owners) - 5} more" if len(owners) > 5 else ""
        lines.append(f"{costcentres.NO_COST_CENTRE}: {'; '.join(owners[:5])}{more} (map them in"
                     f" {data['cost_centres']})")
    no_cost = total["unpriced_calls"] + total["no_usage_calls"] + total["blocked_calls"]
    if no_cost:
        lines.append(f"{no_cost:,} call{'s' if no_cost != 1 else ''} without a measured cost (counted, not $0): "
                     f"{c.no_cost_why(total)}; a reconciled invoice bills them in the residual")
    lines += data["notes"]
    return "\n".join(lines)


def invoice_lines(data: dict) -> list[str]:
    """Whether the total is the invoice, and per provider why (not) in plain words."""
    invoice, total = data["invoice"], c.usd(data["total"]["total_nano_usd"])
    providers = invoice["providers"]
    if data["where"]:
        return [f"Total {total} is the measured cost of the selected calls, not an invoice."]
    if not providers:
        return ["No calls in this period."]
    if invoice["matched"]:
        runs = ", ".join(f"{p['provider']} #{', #'.join(map(str, p['runs']))}" for p in providers)
        return [f"Total {total} equals the provider invoice{'s' if len(providers) > 1 else ''} for the period"
                f" (reconciliation {runs})."]
    reconciled = [p["provider"] for p in providers if p["status"] == "reconciled"]
    if not any(p["status"] != "none" for p in providers):
        out = [f"Total {total} is the measured cost, NOT the invoice: no reconciliation covers this period."]
    elif reconciled:
        out = [f"Total {total} is NOT the invoice: only {', '.join(reconciled)} of {len(providers)} providers is"
               " reconciled for the whole period."]
    else:
        out = [f"Total {total} is NOT the invoice: reconciliations cover only part of the period."]
    since, until = data["period"]["since"][:10], data["period"]["until"][:10]
    for p in providers:
        if p["status"] == "reconciled":
            out.append(f"  {p['provider']}: invoice {c.usd(p['invoice_nano_usd'])} for the period (reconciliation"
                       f" #{', #'.join(map(str, p['runs']))}), measured {c.usd(p['measured_nano_usd'])}, residual"
                       f" {c.usd(p['residual_nano_usd'])}")
        elif p["status"] == "partial":
            cut = "" if invoice["whole_days"] else ", the period starting or ending inside a day"
            out.append(f"  {p['provider']}: reconciled on {p['reconciled_days']} of {p['period_days']} whole days"
                       f" ({p['first_day']} .. {p['last_day']}){cut}: the residual of those days is included, the rest"
                       " is measured cost only")
        else:
            hint = (f": `tokentrail reconcile {p['provider']} --since {since} --until {until}`"
                    if p["provider"] in _RECONCILE else " (tokentrail reconciles openai and anthropic)")
            out.append(f"  {p['provider']}: no reconciliation, measured cost only{hint}")
    return out


def _notes_to_stderr(data: dict) -> None:
    notes = [] if data["invoice"]["matched"] else [invoice_lines(data)[0]]
    skipped = data.get("lines", {}).get("calls_without_cost")
    if skipped:
        notes.append(f"{skipped:,} call{'s' if skipped != 1 else ''} without any cost (unpriced, no usage or blocked)"
                     f" {'are not FOCUS rows' if skipped != 1 else 'is not a FOCUS row'}: FOCUS has no row without"
                     " a cost (a reconciled invoice bills them in the residual)")
    for note in notes + data["notes"]:
        print(f"tokentrail: note: {note}", file=sys.stderr)


# --- csv ----------------------------------------------------------------------------------------------
def write_csv(data: dict) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([data["by"], *_CSV_COLUMNS])
    for row in data["rows"]:
        writer.writerow([row[data["by"]], *("" if row.get(k) is None else row.get(k) for k in _CSV_COLUMNS)])


# --- FOCUS ----------------------------------------------------------------------------------------------
def decimal(nano: int) -> str:
    """nano-USD as a FOCUS Numeric Format decimal in USD: exact, no exponent, no sign for a positive value."""
    return format(Decimal(nano).scaleb(-9), "f")


def _instant(day: str) -> str:
    return f"{day}T00:00:00Z"


def _next_day(day: str) -> str:
    return date.fromordinal(date.fromisoformat(day).toordinal() + 1).isoformat()


def _billing_period(day: str) -> tuple[str, str]:
    """The calendar month of a charge (the providers bill monthly)."""
    d = date.fromisoformat(day)
    after = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return _instant(d.replace(day=1).isoformat()), _instant(after.isoformat())


def _common(provider: str, day: str) -> dict:
    name, service = _PROVIDERS.get(provider, (provider, provider))
    start, end = _billing_period(day)
    return {"BillingAccountId": provider, "BillingAccountName": name, "BillingCurrency": "USD",
            "BillingPeriodStart": start, "BillingPeriodEnd": end, "ChargePeriodStart": _instant(day),
            "ChargePeriodEnd": _instant(_next_day(day)), "ChargeFrequency": "Usage-Based",
            "InvoiceIssuerName": name, "ProviderName": name, "PublisherName": name,
            "ServiceCategory": "AI and Machine Learning", "ServiceName": service,
            "ServiceSubcategory": "Generative AI"}


def focus_rows(data: dict) -> list[dict]:
    """The statement's lines as FOCUS 1.2 rows (None: a null cell)."""
    out = []
    for line in data["lines"]["usage"]:
        tokens = line["input_tokens"] + line["output_tokens"]
        tags = {"tenant": line["tenant"], "feature": line["feature"], "team": line["team"]}
        if data["cost_centres"]:
            centre = line["cost_centre"]
            tags["cost_centre"] = None if centre == costcentres.NO_COST_CENTRE else centre
        model = line["model"] or "(unknown model)"
        out.append({
            **_common(line["provider"], line["day"]),
            "BilledCost": decimal(line["billed_nano_usd"]), "EffectiveCost": decimal(line["billed_nano_usd"]),
            "ContractedCost": decimal(line["net_nano_usd"]), "ListCost": decimal(line["list_nano_usd"]),
            "ChargeCategory": "Usage", "ChargeClass": None,
            "ChargeDescription": f"{model}: {line['calls']:,} call{'s' if line['calls'] != 1 else ''},"
                                 f" {line['input_tokens']:,} input"
                                 f" ({line['cache_read_tokens']:,} cached) and {line['output_tokens']:,} output tokens",
            "ConsumedQuantity": str(tokens), "ConsumedUnit": "Tokens", "PricingQuantity": str(tokens),
            "PricingUnit": "Tokens", "PricingCategory": "Standard", "SkuId": model, "SkuPriceId": model,
            "Tags": json.dumps(tags, separators=(",", ":"), sort_keys=True), "x_Calls": str(line["calls"]),
        })
    for line in data["lines"]["residual"]:
        amount = decimal(line["residual_nano_usd"])
        out.append({
            **_common(line["provider"], line["day"]),
            "BilledCost": amount, "EffectiveCost": amount, "ContractedCost": amount, "ListCost": amount,
            "ChargeCategory": "Adjustment", "ChargeClass": None,
            "ChargeDescription": f"Unexplained residual of the {line['provider']} invoice for {line['day']}: billed"
                                 " minus measured by tokentrail (tokentrail reconcile explains it)",
            "ConsumedQuantity": None, "ConsumedUnit": None, "PricingQuantity": None, "PricingUnit": None,
            "PricingCategory": None, "SkuId": None, "SkuPriceId": None, "Tags": None, "x_Calls": None,
        })
    return out


def write_focus(data: dict, out) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FOCUS_COLUMNS)
    for row in focus_rows(data):
        writer.writerow(["" if row[k] is None else row[k] for k in FOCUS_COLUMNS])

