"""Prometheus alert rules for LLM spend, and their ``promtool test rules`` unit tests, as code.

    python -m tokentrail.dashboards.alerts            # regenerate dashboards/alerts/*.yaml
    python -m tokentrail.dashboards.alerts --check    # exit 1 if the committed files are stale

The rule file loads into Prometheus (``rule_files``) for Alertmanager, or into Grafana as a
data-source-managed rule group. Names come from the semconv registry via ``queries``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tokentrail.dashboards import queries as q

ALERTS_DIR = Path(__file__).resolve().parent / "alerts"
RULES_FILE = "tokentrail-rules.yaml"
TESTS_FILE = "tokentrail-rules.test.yaml"

#: Tunables (edit here, regenerate).
UNATTRIBUTED_MAX_SHARE = 0.10
SPIKE_FACTOR = 3
SPIKE_MIN_USD_PER_HOUR = 1.0
TASK_P95_FACTOR = 2
CACHE_DROP_FACTOR = 0.5
CACHE_MIN_INPUT_TOKENS_PER_HOUR = 10_000
RUNAWAY_CALLS_P95 = 20

TASK_P95_1H = "tokentrail:task_cost_usd:p95_1h"
TENANT_CACHE_HIT_1H = "tokentrail:tenant_cache_hit_ratio:1h"


def _budget_ratio(owner: str) -> str:
    keep = f"{owner},{q.BUDGET_WINDOW}"
    sel = "{" + f'{owner}!=""' + "}"
    return (f"max by ({keep}) ({q.BUDGET_SPENT}{sel}) / max by ({keep}) ({q.BUDGET_LIMIT}{sel} > 0)")


def _plan_burn() -> str:
    # max, not sum: every instance of a fleet reports the same shared counter
    keep = f"{q.TENANT},{q.BUDGET_WINDOW}"
    return f'max by ({keep}) ({q.PLAN_BURN}{{{q.TENANT}!=""}})'


def rules() -> dict:
    budget_rules = []
    for owner, who in ((q.TENANT, "tenant"), (q.TEAM, "team")):
        for pct, severity in ((50, "info"), (80, "warning"), (100, "critical")):
            budget_rules.append({
                "alert": f"TokentrailBudget{who.title()}{pct}",
                "expr": f"{_budget_ratio(owner)} >= {pct / 100}",
                "labels": {"severity": severity},
                "annotations": {
                    "summary": f"{who.title()} {{{{ $labels.{owner} }}}} used {pct}% of its "
                               f"{{{{ $labels.{q.BUDGET_WINDOW} }}}} LLM budget",
                    "description": f"Spend reached {pct}% of the {who} budget in its current window. "
                                   + ("Check the Owner drill-down for who is spending." if pct < 100 else
                                      "Hard limits now block further calls; raise the budget or stop the spender."),
                },
            })
    margin_rules = []
    for pct, severity in ((50, "info"), (80, "warning"), (100, "critical")):
        margin_rules.append({
            "alert": f"TokentrailMarginBurn{pct}",
            "expr": f"{_plan_burn()} >= {pct / 100}",
            "labels": {"severity": severity},
            "annotations": {
                "summary": f"Tenant {{{{ $labels.{q.TENANT} }}}} spent {pct}% of its plan revenue on LLM calls "
                           f"this {{{{ $labels.{q.BUDGET_WINDOW} }}}}",
                "description": (f"The tenant's LLM spend in the current window reached {pct}% of what its plan "
                                "brings in for that window: its AI gross margin is at most "
                                f"{100 - pct}%. Compare plans in `tokentrail margin` and find the spender in the "
                                "Owner drill-down." if pct < 100 else
                                "The tenant costs more in LLM calls than its plan brings in: it is losing money. "
                                "Enforce its margin budget (limit: N% of plan, enforce: true) or move it to a "
                                "bigger plan."),
            },
        })
    task_cost = f"{q.TASK_COST}_bucket"
    cost_sum = f"{q.COST}_sum"
    return {"groups": [
        {"name": "tokentrail-budgets", "interval": "1m", "rules": budget_rules + margin_rules},
        {"name": "tokentrail-recording", "interval": "1m", "rules": [
            {"record": TASK_P95_1H,
             "expr": f"histogram_quantile(0.95, sum by (le, {q.TASK_NAME}) (rate({task_cost}[1h])))"},
            {"record": TENANT_CACHE_HIT_1H,
             "expr": f'sum by ({q.TENANT}) (rate({q.TOKENS}{{{q.TOKEN_TYPE}="cache_read"}}[1h]))'
                     f' / sum by ({q.TENANT}) (rate({q.TOKENS}{{{q.TOKEN_TYPE}=~"{q.INPUT_TYPES}"}}[1h]))'},
        ]},
        {"name": "tokentrail-spend", "interval": "1m", "rules": [
            {"alert": "TokentrailTaskCostP95AboveBaseline",
             # 7-day baseline from an hourly subquery: 168 points, cheap to evaluate every minute.
             "expr": f"{TASK_P95_1H} > {TASK_P95_FACTOR} * quantile_over_time(0.5, {TASK_P95_1H}[7d:1h] offset 1h)",
             "for": "15m", "labels": {"severity": "warning"},
             "annotations": {
                 "summary": f"Task {{{{ $labels.{q.TASK_NAME} }}}}: p95 cost is over {TASK_P95_FACTOR}x its "
                            "7-day baseline",
                 "description": "The p95 cost of this task over the last hour is far above its usual. A loop or a growing "
                                "context: open the most expensive tasks in 'Expensive requests'."}},
            {"alert": "TokentrailTaskRunaway",
             "expr": f"histogram_quantile(0.95, sum by (le, {q.TASK_NAME}) (rate({q.TASK_ITERATIONS}_bucket[15m])))"
                     f" > {RUNAWAY_CALLS_P95}",
             "for": "5m", "labels": {"severity": "critical"},
             "annotations": {
                 "summary": f"Task {{{{ $labels.{q.TASK_NAME} }}}}: p95 runs make over {RUNAWAY_CALLS_P95} LLM calls",
                 "description": "Runs of this task keep calling the model (an agent retrying its own output with "
                                "the full context). Set max_calls/budget_usd on the task so the breaker stops it, "
                                "and open its most expensive runs in 'Expensive requests'."}},
            {"alert": "TokentrailSpendRateSpike",
             "expr": f"sum(rate({cost_sum}[15m])) > {SPIKE_FACTOR} * sum(rate({cost_sum}[1d] offset 15m))"
                     f" and sum(rate({cost_sum}[15m])) * 3600 > {SPIKE_MIN_USD_PER_HOUR}",
             "for": "10m", "labels": {"severity": "warning"},
             "annotations": {
                 "summary": f"LLM spend rate is over {SPIKE_FACTOR}x its daily average",
                 "description": "Spend per second over 15 minutes is well above the last day's. Find the owner in 'Top tenants' and "
                                "the requests in 'Expensive requests'."}},
            {"alert": "TokentrailUnattributedShareHigh",
             "expr": f'sum(rate({cost_sum}{{{q.ATTRIBUTED}="false"}}[1h])) / sum(rate({cost_sum}[1h]))'
                     f" > {UNATTRIBUTED_MAX_SHARE}",
             "for": "30m", "labels": {"severity": "warning"},
             "annotations": {
                 "summary": f"Over {UNATTRIBUTED_MAX_SHARE:.0%} of LLM spend has no owner",
                 "description": "Much of the last hour's spend has no tenant: wrap the callers "
                                "(scripts, CI, staging) in tokentrail.attribute(...)."}},
            {"alert": "TokentrailUnpricedCalls",
             # delta_in, not increase(): the first unpriced call creates the series, and increase() reads 0.
             "expr": f"sum by ({q.PROVIDER}, {q.MODEL}) ({q.delta_in(q.UNPRICED, '1h')}) > 0",
             "labels": {"severity": "warning"},
             "annotations": {
                 "summary": f"Unpriced LLM calls to {{{{ $labels.{q.MODEL} }}}}",
                 "description": "Calls in the last hour used a model not on the rate card; their "
                                "cost is missing from every total. Add it to the price overlay."}},
            {"alert": "TokentrailTenantCacheHitDrop",
             "expr": f"{TENANT_CACHE_HIT_1H} < {CACHE_DROP_FACTOR} * avg_over_time({TENANT_CACHE_HIT_1H}[7d:1h] offset 1h)"
                     f" and on ({q.TENANT}) sum by ({q.TENANT}) (rate({q.TOKENS}{{{q.TOKEN_TYPE}=~\"{q.INPUT_TYPES}\"}}"
                     f"[1h])) * 3600 > {CACHE_MIN_INPUT_TOKENS_PER_HOUR}",
             "for": "30m", "labels": {"severity": "warning"},
             "annotations": {
                 "summary": f"Tenant {{{{ $labels.{q.TENANT} }}}}: cache-hit ratio fell below "
                            f"{CACHE_DROP_FACTOR:.0%} of its 7-day average",
                 "description": "Something in this tenant's "
                                "prompt prefix started varying; every miss is billed as fresh input."}},
        ]},
    ]}


# --- promtool unit tests ------------------------------------------------------------------------------
def _rule(name: str) -> dict:
    return next(r for g in rules()["groups"] for r in g["rules"] if r.get("alert") == name)


def _expect(name: str, labels: dict) -> dict:
    """An expected alert: its labels plus its annotations rendered for those labels (promtool compares both)."""
    rule = _rule(name)
    annotations = {}
    for key, template in rule["annotations"].items():
        for lbl, val in labels.items():
            template = template.replace(f"{{{{ $labels.{lbl} }}}}", val)
        annotations[key] = template
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def _case(at: str, name: str, *alerts: dict) -> dict:
    return {"eval_time": at, "alertname": name, "exp_alerts": [_expect(name, labels) for labels in alerts]}


def unit_tests() -> dict:
    tenant, team, window, ttype = q.TENANT, q.TEAM, q.BUDGET_WINDOW, q.TOKEN_TYPE
    cost_sum, task_bucket = f"{q.COST}_sum", f"{q.TASK_COST}_bucket"
    tests = []

    # Budgets: acme goes 40% -> 55% -> 85% -> 105% of $100/month; team core stays at 30%; team growth is at
    # 90%, reported by two app instances (a shared budget must not count twice); team ops overspends.
    acme = {tenant: "acme", window: "month"}
    growth = {team: "growth", window: "day"}
    ops = {team: "ops", window: "day"}
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": f'{q.BUDGET_LIMIT}{{{tenant}="acme",{window}="month",instance="a"}}', "values": "100x30"},
            {"series": f'{q.BUDGET_SPENT}{{{tenant}="acme",{window}="month",instance="a"}}',
             "values": "40x6 55x6 85x6 105x12"},
            {"series": f'{q.BUDGET_LIMIT}{{{team}="core",{window}="day",instance="a"}}', "values": "500x30"},
            {"series": f'{q.BUDGET_SPENT}{{{team}="core",{window}="day",instance="a"}}', "values": "150x30"},
            {"series": f'{q.BUDGET_SPENT}{{{team}="growth",{window}="day",instance="a"}}', "values": "100x10 450x20"},
            {"series": f'{q.BUDGET_SPENT}{{{team}="growth",{window}="day",instance="b"}}', "values": "100x10 450x20"},
            {"series": f'{q.BUDGET_LIMIT}{{{team}="growth",{window}="day",instance="a"}}', "values": "500x30"},
            {"series": f'{q.BUDGET_LIMIT}{{{team}="growth",{window}="day",instance="b"}}', "values": "500x30"},
            {"series": f'{q.BUDGET_LIMIT}{{{team}="ops",{window}="day",instance="a"}}', "values": "50x30"},
            {"series": f'{q.BUDGET_SPENT}{{{team}="ops",{window}="day",instance="a"}}', "values": "20x10 61x20"},
        ],
        "alert_rule_test": [
            _case("5m", "TokentrailBudgetTenant50"),
            _case("10m", "TokentrailBudgetTenant50", acme),
            _case("10m", "TokentrailBudgetTenant80"),
            _case("15m", "TokentrailBudgetTenant80", acme),
            _case("15m", "TokentrailBudgetTenant100"),
            _case("25m", "TokentrailBudgetTenant100", acme),
            _case("5m", "TokentrailBudgetTeam50"),
            _case("5m", "TokentrailBudgetTeam80"),
            _case("5m", "TokentrailBudgetTeam100"),
            _case("25m", "TokentrailBudgetTeam50", growth, ops),
            _case("25m", "TokentrailBudgetTeam80", growth, ops),
            _case("25m", "TokentrailBudgetTeam100", ops),
        ],
    })

    # Margin burn: acme (starter) goes 20% -> 55% -> 85% -> 105% of its plan's monthly revenue; globex stays at
    # 30%; umbrella's day burn goes 40% -> 60%, reported by two app instances (the max counts, not the sum).
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": f'{q.PLAN_BURN}{{{tenant}="acme",{window}="month",instance="a"}}',
             "values": "0.2x6 0.55x6 0.85x6 1.05x12"},
            {"series": f'{q.PLAN_BURN}{{{tenant}="globex",{window}="month",instance="a"}}', "values": "0.3x30"},
            {"series": f'{q.PLAN_BURN}{{{tenant}="umbrella",{window}="day",instance="a"}}', "values": "0.4x10 0.6x20"},
            {"series": f'{q.PLAN_BURN}{{{tenant}="umbrella",{window}="day",instance="b"}}', "values": "0.4x10 0.6x20"},
        ],
        "alert_rule_test": [
            _case("5m", "TokentrailMarginBurn50"),
            _case("10m", "TokentrailMarginBurn50", acme),
            _case("15m", "TokentrailMarginBurn50", acme, {tenant: "umbrella", window: "day"}),
            _case("10m", "TokentrailMarginBurn80"),
            _case("15m", "TokentrailMarginBurn80", acme),
            _case("15m", "TokentrailMarginBurn100"),
            _case("25m", "TokentrailMarginBurn100", acme),
        ],
    })

    # Per-task p95 above its 7-day baseline: 8 days of $0.02 tasks (bucket le=0.025), then two hours of $0.40
    # tasks (bucket le=0.5); one task a minute, sampled every 5 minutes.
    samples = 8 * 24 * 12  # 5-minute samples in 8 days
    cheap = f"0+5x{samples} {samples * 5}x24"
    dear = f"0+5x{samples} {samples * 5}+5x24"
    tests.append({
        "interval": "5m",
        "input_series": [
            {"series": f'{task_bucket}{{{q.TASK_NAME}="research",le="0.025"}}', "values": cheap},
            {"series": f'{task_bucket}{{{q.TASK_NAME}="research",le="0.5"}}', "values": dear},
            {"series": f'{task_bucket}{{{q.TASK_NAME}="research",le="+Inf"}}', "values": dear},
        ],
        "alert_rule_test": [
            _case(f"{samples * 5 - 10}m", "TokentrailTaskCostP95AboveBaseline"),
            _case(f"{samples * 5 + 90}m", "TokentrailTaskCostP95AboveBaseline", {q.TASK_NAME: "research"}),
        ],
    })

    # Runaway task: "triage" runs take 3 calls, then start looping at 40 calls; "search" stays at 2.
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": f'{q.TASK_ITERATIONS}_bucket{{{q.TASK_NAME}="triage",le="5"}}', "values": "0+2x30 60x30"},
            {"series": f'{q.TASK_ITERATIONS}_bucket{{{q.TASK_NAME}="triage",le="55"}}', "values": "0+2x60"},
            {"series": f'{q.TASK_ITERATIONS}_bucket{{{q.TASK_NAME}="triage",le="+Inf"}}', "values": "0+2x60"},
            {"series": f'{q.TASK_ITERATIONS}_bucket{{{q.TASK_NAME}="search",le="5"}}', "values": "0+1x60"},
            {"series": f'{q.TASK_ITERATIONS}_bucket{{{q.TASK_NAME}="search",le="55"}}', "values": "0+1x60"},
            {"series": f'{q.TASK_ITERATIONS}_bucket{{{q.TASK_NAME}="search",le="+Inf"}}', "values": "0+1x60"},
        ],
        "alert_rule_test": [
            _case("25m", "TokentrailTaskRunaway"),
            _case("55m", "TokentrailTaskRunaway", {q.TASK_NAME: "triage"}),
        ],
    })

    # Spend-rate spike: a day at $0.50/hour, then $10/hour.
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": f'{cost_sum}{{{tenant}="acme"}}',
             "values": f"0+{0.5 / 60:.10f}x1500 {1500 * 0.5 / 60:.10f}+{10 / 60:.10f}x40"},
        ],
        "alert_rule_test": [
            _case("1490m", "TokentrailSpendRateSpike"),
            _case("1535m", "TokentrailSpendRateSpike", {}),
        ],
    })

    # Unattributed share: 5% for two hours, then 30%.
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": f'{cost_sum}{{{tenant}="acme",{q.ATTRIBUTED}="true"}}', "values": "0+0.95x120 114+0.7x180"},
            {"series": f'{cost_sum}{{{q.ATTRIBUTED}="false"}}', "values": "0+0.05x120 6+0.3x180"},
        ],
        "alert_rule_test": [
            _case("110m", "TokentrailUnattributedShareHigh"),
            _case("270m", "TokentrailUnattributedShareHigh", {}),
        ],
    })

    # Unpriced calls: a series appears with its first call (value 1) and must alert at once (increase() would
    # read 0); an hour without a new unpriced call resolves it.
    finetune = {q.PROVIDER: "openai", q.MODEL: "my-finetune"}
    old = {q.PROVIDER: "openai", q.MODEL: "old-model"}
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": f'{q.UNPRICED}{{{q.PROVIDER}="openai",{q.MODEL}="my-finetune"}}', "values": "_x10 1x70"},
            {"series": f'{q.UNPRICED}{{{q.PROVIDER}="openai",{q.MODEL}="old-model"}}', "values": "3x200"},
        ],
        "alert_rule_test": [
            _case("5m", "TokentrailUnpricedCalls", old),
            _case("15m", "TokentrailUnpricedCalls", finetune, old),
            _case("190m", "TokentrailUnpricedCalls"),
        ],
    })

    # Tenant cache-hit drop: acme at 90% cache hits for 8 days, then 20%; globex steady at 60%.
    def tokens(per_sample: int, after: int) -> str:
        return f"0+{per_sample}x{samples} {samples * per_sample}+{after}x24"
    tests.append({
        "interval": "5m",
        "input_series": [
            {"series": f'{q.TOKENS}{{{tenant}="acme",{ttype}="cache_read"}}', "values": tokens(9000, 2000)},
            {"series": f'{q.TOKENS}{{{tenant}="acme",{ttype}="input"}}', "values": tokens(1000, 8000)},
            {"series": f'{q.TOKENS}{{{tenant}="globex",{ttype}="cache_read"}}', "values": tokens(6000, 6000)},
            {"series": f'{q.TOKENS}{{{tenant}="globex",{ttype}="input"}}', "values": tokens(4000, 4000)},
        ],
        "alert_rule_test": [
            _case(f"{samples * 5 - 10}m", "TokentrailTenantCacheHitDrop"),
            _case(f"{samples * 5 + 110}m", "TokentrailTenantCacheHitDrop", {tenant: "acme"}),
        ],
    })
    # The exact-window spend formula every dashboard uses (queries.delta_in): a steady series gives its exact
    # growth, a series born inside the window counts from zero (increase() would say 0), a series that reset
    # inside the window falls back to increase().
    tests.append({
        "interval": "1m",
        "input_series": [
            {"series": 'spend{s="steady"}', "values": "10x10 15x10 20x10"},
            {"series": 'spend{s="born"}', "values": "_x14 3x16"},
            {"series": 'spend{s="reset"}', "values": "5x10 1x10 4x10"},
        ],
        "promql_expr_test": [
            {"expr": q.delta_in("spend", "10m"), "eval_time": "20m", "exp_samples": [
                {"labels": '{s="steady"}', "value": 5},
                {"labels": 'spend{s="born"}', "value": 3},  # last_over_time keeps the name
                {"labels": '{s="reset"}', "value": 1},
            ]},
            {"expr": 'increase(spend{s="born"}[10m])', "eval_time": "20m", "exp_samples": [
                {"labels": '{s="born"}', "value": 0},
            ]},
        ],
    })

    # 5-minute evaluation keeps eight simulated days fast; every eval_time above is a multiple of it.
    return {"rule_files": [RULES_FILE], "evaluation_interval": "5m", "tests": tests}


def render() -> dict[str, str]:
    dump = lambda data: yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)
    header = "# Generated by `python -m tokentrail.dashboards.alerts`: edit dashboards/alerts.py, not this file.\n"
    return {RULES_FILE: header + dump(rules()), TESTS_FILE: header + dump(unit_tests())}


def stale(directory: Path = ALERTS_DIR) -> list[str]:
    return [n for n, t in render().items() if not (directory / n).exists() or (directory / n).read_text() != t]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for n in names:
            print(f"stale: {ALERTS_DIR / n}")
        return 1 if names else 0
    ALERTS_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (ALERTS_DIR / name).write_text(text)
        print(ALERTS_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
