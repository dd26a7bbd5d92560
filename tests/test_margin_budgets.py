"""Margin budgets (``limit: 30% of plan``): the limit from the tenant's plan revenue, warnings to the webhook,
enforcement, the burn gauge; through the real openai SDK to the fake provider."""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import textwrap
from fractions import Fraction

import pytest

import tokentrail
from tokentrail import budgets, plans
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api

from helpers import ask
from test_notify import Webhook

PLANS = """
plans:
  free: 0
  starter: 19
  pro: 99
tenants:
  acme: starter
  umbrella: starter
  globex: pro
  hooli: free
  initech: {plan: pro, monthly_revenue: 80}
"""

# gpt-4o at $2.50 / $10 per M
def gpt4o_nano(prompt: int, completion: int) -> int:
    return prompt * 2_500 + completion * 10_000


def now():
    return dt.datetime.now(dt.timezone.utc)


def days_in_month() -> int:
    today = now()
    return calendar.monthrange(today.year, today.month)[1]


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def plans_file(tmp_path, monkeypatch):
    path = tmp_path / "plans.yaml"
    path.write_text(PLANS)
    monkeypatch.setenv("TOKENTRAIL_PLANS", str(path))
    return path


def write_budgets(tmp_path, monkeypatch, text):
    path = tmp_path / "budgets.yaml"
    path.write_text(textwrap.dedent(text))
    monkeypatch.setenv("TOKENTRAIL_BUDGETS", str(path))
    budgets.reload()


def calls(client, server, tenant, n, prompt, completion, max_tokens=None):
    server.enqueue(*[openai_api.reply(prompt_tokens=prompt, completion_tokens=completion)] * n)
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    with tokentrail.attribute(tenant=tenant):
        for _ in range(n):
            client.chat.completions.create(model="gpt-4o", messages=ask(), **extra)


def test_a_19_dollar_tenant_pings_the_webhook_at_50_and_80_percent_of_30_percent_of_plan(
        pipeline, client, server, tmp_path, monkeypatch, plans_file, webhook, caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    write_budgets(tmp_path, monkeypatch, f"""
        notify:
          webhook: {webhook.url}
        budgets:
          - tenant: acme
            limit: 30% of plan
    """)
    per_call = gpt4o_nano(100_000, 25_000)
    assert per_call == 500_000_000  # $0.25 + $0.25
    limit = 19 * 10**9 * 3 // 10  # $5.70
    calls(client, server, "acme", 10, 100_000, 25_000)  # $5.00: 50% ($2.85) at the 6th call, 80% ($4.56) at the 10th
    assert budgets.notifier().flush(30)

    priced = [s.attributes[attr.TOKENTRAIL_COST_NANO_USD] for s in pipeline.llm_spans()]
    assert priced == [per_call] * 10
    month = now().strftime("%Y-%m")

    def body(fraction, n):
        return {"event": "tokentrail.budget.warning", "limit_name": "tenant:acme/month", "scope": "tenant",
                "owner": "acme", "window": "month", "period": month, "fraction": fraction, "unit": "USD",
                "spent": n * per_call / 1e9, "limit": limit / 1e9, "spent_nano": n * per_call, "limit_nano": limit,
                "plan": "starter", "plan_share": 0.3, "revenue": 19.0, "revenue_nano": 19 * 10**9}

    assert webhook.bodies == [body(0.5, 6), body(0.8, 10)]
    assert "tenant:acme/month budget of 5.7 USD (30% of plan starter) at 50% (spent 3.000000 USD)" in caplog.text
    assert pipeline.metric_sum(names.TOKENTRAIL_BUDGET_WARNINGS, tenant="acme") == 2
    [limit_point] = pipeline.metric_points(names.TOKENTRAIL_BUDGET_LIMIT, tenant="acme")
    assert limit_point.value == pytest.approx(5.7)
    [spent_point] = pipeline.metric_points(names.TOKENTRAIL_BUDGET_SPENT, tenant="acme")
    assert spent_point.value == pytest.approx(5.0)
    [burn] = pipeline.metric_points(names.TOKENTRAIL_PLAN_BURN, tenant="acme")
    assert burn.value == pytest.approx(5 / 19)
    assert burn.attributes[attr.TOKENTRAIL_BUDGET_WINDOW] == "month"


def test_an_enforced_day_margin_budget_blocks_at_its_share_of_the_days_revenue(
        pipeline, client, server, tmp_path, monkeypatch, plans_file):
    write_budgets(tmp_path, monkeypatch, """
        budgets:
          - tenant: globex
            window: day
            limit: 1% of plan
            enforce: true
    """)
    limit = 99 * 10**9 // 100 // days_in_month()  # $0.99 of a $99 month, a day's part: rounded down
    per_call = gpt4o_nano(2000, 500)  # $0.01
    with pytest.raises(tokentrail.BudgetExceeded, match="tenant:globex/day") as caught:
        calls(client, server, "globex", 10, 2000, 500, max_tokens=500)
    # every call is alike: the k-th is sent while (k - 1) calls + one call's worst case fit the limit
    worst = round(caught.value.estimate_usd * 1e9)
    admitted = (limit - worst) // per_call + 1
    assert 2 <= admitted < 10 and len(server.requests) == admitted
    assert caught.value.limit == limit / 1e9
    assert caught.value.spent == pytest.approx(admitted * per_call / 1e9)
    assert "1% of plan pro" in str(caught.value)
    [burn] = pipeline.metric_points(names.TOKENTRAIL_PLAN_BURN, tenant="globex")
    assert burn.value == pytest.approx(admitted * per_call / (99e9 / days_in_month()))


def test_a_tenant_without_plan_or_revenue_gets_no_budget_and_one_line(
        pipeline, client, server, tmp_path, monkeypatch, plans_file, caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    write_budgets(tmp_path, monkeypatch, """
        budgets:
          - tenant: wayne
            window: day
            limit: 30% of plan
            enforce: true
          - tenant: hooli
            limit: 30% of plan
            enforce: true
          - tenant: acme
            limit: 30% of plan
    """)
    lines = [r.getMessage() for r in caplog.records if r.name == "tokentrail.budgets"]
    assert lines == [
        f"tokentrail: TOKENTRAIL_BUDGETS={tmp_path / 'budgets.yaml'}: budgets[0]: tenant 'wayne' has no plan in "
        f"{plans_file}; no '30% of plan' budget for it",
        f"tokentrail: TOKENTRAIL_BUDGETS={tmp_path / 'budgets.yaml'}: budgets[1]: tenant 'hooli' brings $0/month "
        f"(plan free); no '30% of plan' budget for it"]
    assert [b.label for b in budgets.config().budgets] == ["tenant:acme/month"]  # the rest of the file holds
    calls(client, server, "wayne", 1, 2000, 500)
    calls(client, server, "hooli", 1, 2000, 500)
    assert len(server.requests) == 2  # never a $0 limit that blocks everything
    owners = {p.attributes.get(attr.TOKENTRAIL_TENANT) for p in pipeline.metric_points(names.TOKENTRAIL_BUDGET_LIMIT)}
    assert owners == {"acme"}


def test_no_plans_at_all_is_one_line(pipeline, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    monkeypatch.delenv("TOKENTRAIL_PLANS", raising=False)
    write_budgets(tmp_path, monkeypatch, """
        budgets:
          - tenant: acme
            limit: 30% of plan
          - team: core
            limit_usd: 10
    """)
    assert "no plans for '% of plan' limits: set TOKENTRAIL_PLANS or plans: in the budgets file" in caplog.text
    assert [b.label for b in budgets.config().budgets] == ["team:core/month"]


def test_a_bad_plans_file_is_one_line(pipeline, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    (tmp_path / "plans.yaml").write_text("plans: {starter: 19}\ntenants: {acme: gold}\n")
    write_budgets(tmp_path, monkeypatch, """
        plans: plans.yaml
        budgets:
          - tenant: acme
            limit: 30% of plan
    """)
    [line] = [r.getMessage() for r in caplog.records if r.name == "tokentrail.budgets"]
    assert "plans for '% of plan' limits:" in line and "plan 'gold' is not in plans" in line
    assert budgets.config().budgets == ()


def load_plans(tmp_path, text=PLANS, name="plans.yaml"):
    (tmp_path / name).write_text(text)
    return plans.load(str(tmp_path / name))


def test_plan_and_all_forms_apply_to_their_tenants_and_a_tenants_own_entry_wins(tmp_path):
    cfg = budgets.parse_config({"budgets": [
        {"tenants": "all", "limit": "50% of plan"},
        {"plan": "starter", "limit": "30% of plan", "enforce": True},
        {"tenant": "umbrella", "limit_usd": 2},
        {"plan": "pro", "window": "day", "limit": "10% of plan"},
    ]}, plans_of=load_plans(tmp_path))
    start = budgets.period_start("day")[1]
    got = {b.label: (b.limit_nano, b.enforce, b.plan) for b in cfg.budgets}
    assert got == {
        "tenant:umbrella/month": (2 * 10**9, False, None),  # its own entry, over plan: starter
        "tenant:acme/month": (5_700_000_000, True, "starter"),  # plan: starter, over tenants: all
        "tenant:globex/month": (49_500_000_000, False, "pro"),  # tenants: all
        "tenant:initech/month": (40_000_000_000, False, "pro"),  # its own revenue ($80), not the $99 price
        "tenant:globex/day": (9_900_000_000 // days_in_month(), False, "pro"),
        "tenant:initech/day": (8_000_000_000 // days_in_month(), False, "pro"),
    }
    assert [p for p in cfg.problems] == [
        f"budgets[0]: tenant 'hooli' brings $0/month (plan free); no '50% of plan' budget for it"]
    [acme] = cfg.by_owner[("tenant", "acme")]
    assert acme.plan_share == Fraction(3, 10) and acme.limit_nano_at(start) == 5_700_000_000


def test_a_csv_export_gives_each_tenant_its_own_revenue(tmp_path):
    csv_plans = load_plans(tmp_path, "tenant,plan,monthly_revenue\nacme,starter,19\nglobex,pro,120.50\n", "plans.csv")
    cfg = budgets.parse_config({"budgets": [{"plan": "pro", "limit": "12.5% of plan"}]}, plans_of=csv_plans)
    [b] = cfg.budgets
    assert (b.label, b.limit_nano) == ("tenant:globex/month", 120_500_000_000 // 8)


def test_a_day_limit_follows_the_length_of_the_month():
    b = budgets.Budget("tenant", "acme", "day", None, plan="starter", plan_share=Fraction(3, 10),
                       revenue_nano=19 * 10**9)
    february = int(dt.datetime(2026, 2, 10, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    march = int(dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    assert b.limit_nano_at(february) == 5_700_000_000 // 28 == 203_571_428
    assert b.limit_nano_at(march) == 5_700_000_000 // 31 == 183_870_967


def test_burn_gauge_keeps_the_most_burning_tenants_within_the_cardinality_limit(
        pipeline, client, server, tmp_path, monkeypatch, plans_file):
    write_budgets(tmp_path, monkeypatch, """
        budgets:
          - tenants: all
            limit: 100% of plan
    """)
    calls(client, server, "acme", 3, 2000, 500)  # $0.03 of $19
    calls(client, server, "globex", 1, 2000, 500)  # $0.01 of $99: the least burning
    calls(client, server, "initech", 2, 2000, 500)  # $0.02 of $80
    monkeypatch.setenv("TOKENTRAIL_METRICS_CARDINALITY_LIMIT", "2")
    got = {p.attributes[attr.TOKENTRAIL_TENANT]: p.value for p in pipeline.metric_points(names.TOKENTRAIL_PLAN_BURN)}
    assert got == pytest.approx({"acme": 0.03 / 19, "initech": 0.02 / 80})
    monkeypatch.delenv("TOKENTRAIL_METRICS_CARDINALITY_LIMIT")
    got = {p.attributes[attr.TOKENTRAIL_TENANT]: p.value for p in pipeline.metric_points(names.TOKENTRAIL_PLAN_BURN)}
    assert got == pytest.approx({"acme": 0.03 / 19, "initech": 0.02 / 80, "globex": 0.01 / 99, "umbrella": 0.0})


@pytest.mark.parametrize("entry, message", [
    ({"tenant": "acme", "limit": "30 percent"}, "expected a share of the plan such as '30% of plan'"),
    ({"tenant": "acme", "limit": "0% of plan"}, "expected a share of the plan"),
    ({"tenant": "acme", "limit": "30% of plan", "limit_usd": 5}, "exactly one of limit_usd"),
    ({"tenant": "acme"}, "exactly one of limit_usd"),
    ({"team": "core", "limit": "30% of plan"}, "a team has no plan"),
    ({"plan": "starter", "limit_usd": 5}, "plan: budgets take limit: N% of plan"),
    ({"tenants": "some", "limit": "30% of plan"}, "the only value is all"),
    ({"tenant": "acme", "plan": "starter", "limit": "30% of plan"}, "exactly one of tenant:, team:, plan:"),
])
def test_margin_entries_are_validated(entry, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        budgets.parse_config({"budgets": [entry]}, plans_of=load_plans(tmp_path))


def test_many_unpaid_tenants_of_a_plan_entry_make_one_line(tmp_path):
    free = "".join(f"  f{i}: free\n" for i in range(7))
    cfg = budgets.parse_config({"budgets": [{"tenants": "all", "limit": "30% of plan"}]},
                               plans_of=load_plans(tmp_path, f"plans: {{free: 0, pro: 99}}\ntenants:\n  acme: pro\n{free}"))
    assert [b.label for b in cfg.budgets] == ["tenant:acme/month"]
    assert cfg.problems == ("budgets[0]: 7 tenants bring $0/month (f0, f1, f2, f3, f4 and 2 more); "
                            "no '30% of plan' budget for them",)


@pytest.mark.parametrize("store", ["ledger", "redis"])
def test_a_restarted_process_does_not_warn_again_for_what_was_already_crossed(
        pipeline, client, server, tmp_path, monkeypatch, plans_file, webhook, store, request):
    """Once per window across processes: the second process starts from the spend the ledger or the shared
    Redis counter already holds, so it only sends the crossings that are new."""
    from tokentrail.ledger import LedgerSpanExporter

    if store == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        spec = url
    else:
        spec = f"ledger:{tmp_path / 'ledger.db'}"
    text = f"""
        store: {spec}
        notify:
          webhook: {webhook.url}
        budgets:
          - tenant: acme
            limit: 30% of plan
    """
    write_budgets(tmp_path, monkeypatch, text)
    calls(client, server, "acme", 7, 100_000, 25_000)  # $3.50 of $5.70: past 50%
    assert budgets.notifier().flush(30)
    if store == "ledger":  # what the ledger exporter wrote for the first process
        exporter = LedgerSpanExporter(str(tmp_path / "ledger.db"))
        exporter.export(pipeline.spans())
        exporter.shutdown()
    budgets.reload()  # the next process: nothing in memory
    calls(client, server, "acme", 3, 100_000, 25_000)  # $5.00: past 80%
    assert budgets.notifier().flush(30)
    assert [(b["fraction"], b["spent_nano"]) for b in webhook.bodies] == [(0.5, 3_000_000_000), (0.8, 5_000_000_000)]
