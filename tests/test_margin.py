"""``tokentrail margin`` on a real workload: the openai SDK over HTTP to the fake provider, the real
pipeline, the ledger exporter; tasks that end ok, in an error and stopped by their budget; a re-price
adjustment; then the CLI, against revenue and cost computed here from the plan prices and the worked
numbers of USERS.md."""

from __future__ import annotations

import calendar
import csv
import io
import json
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import Event, ReadableSpan

import tokentrail
from tokentrail.cli import main
from tokentrail.ledger import LedgerSpanExporter, adjustments, schema
from tokentrail.testing import InMemoryPipeline, openai_api

NANO = 10**9
GPT4O = 10_000_000  # GPT-4o, 2,000 in / 500 out at $2.50 / $10 per M: $0.0100
MINI = 11_550_000  # GPT-5.4 mini, 10,000 in (2,000 cached) / 1,200 out: $0.01155
DISCOUNT = -2_000_000  # a re-price adjustment on one of globex's calls
DAY_NS = 86400 * NANO
BASE = datetime(2026, 11, 10, 12, tzinfo=timezone.utc)  # day 0 of the workload

PLANS = """\
plans:
  free: 0
  trial: 0.10
  pro: 99
tenants:
  acme: pro
  umbrella: pro
  stark: pro          # no spend
  globex: trial
  initech: {plan: trial, monthly_revenue: 0.02}
  hooli: trial        # a self-hosted model: no cost
  wonka: free         # no spend
"""
REVENUE = {"acme": 99 * NANO, "umbrella": 99 * NANO, "stark": 99 * NANO, "globex": 100_000_000,
           "initech": 20_000_000, "hooli": 100_000_000, "wonka": 0}


def _shifted(span: ReadableSpan, offset: int) -> ReadableSpan:
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=span.attributes, links=span.links, kind=span.kind, status=span.status,
        events=[Event(e.name, e.attributes, e.timestamp + offset) for e in span.events],
        start_time=span.start_time + offset, end_time=span.end_time + offset,
        instrumentation_scope=span.instrumentation_scope)


class Workload:
    def __init__(self, client, pipeline):
        self.client = client
        self.pipeline = pipeline
        self.day_of: dict[int, int] = {}  # trace id -> workload day

    def call(self, model="gpt-4o", **usage):
        usage = usage or {"prompt_tokens": 2000, "completion_tokens": 500}
        return self.client.chat.completions.create(
            model=model, max_tokens=1000, messages=[{"role": "user", "content": "hi"}],
            extra_headers={openai_api.HEADER: json.dumps(usage)})

    @contextmanager
    def request(self, day=0, **owner):
        with self.pipeline.tracer().start_as_current_span("POST /api") as root, tokentrail.attribute(**owner):
            self.day_of[root.get_span_context().trace_id] = day
            yield

    def task(self, name, calls, day=0, **options):
        with self.request(day, tenant=options.pop("tenant")), tokentrail.task(name, **options):
            for _ in range(calls):
                self.call()

    def run(self):
        for i, (calls, day) in enumerate([(1, 0), (1, 0), (2, 1), (5, 1)]):  # acme: 4 ok runs, 2 days
            self.task("answer", calls, day, tenant="acme", id=f"acme-{i}")
        with self.request(tenant="umbrella"):
            self.call()
        self.task("answer", 1, tenant="globex", id="globex-ok")
        with pytest.raises(RuntimeError), self.request(tenant="globex"), tokentrail.task("answer", id="globex-err"):
            self.call()
            raise RuntimeError("the agent gave up")
        # $0.01 spent, the next call's worst case ($0.01) would cross $0.015: stopped before sending
        with pytest.raises(tokentrail.BudgetExceeded), self.request(tenant="globex"), \
                tokentrail.task("answer", id="globex-stop", budget_usd=0.015):
            self.call()
            self.call()
        with self.request(tenant="globex", feature="search"):
            self.call()  # no task; re-priced below
        with self.request(tenant="initech"):
            for _ in range(2):
                self.call("gpt-5.4-mini", prompt_tokens=10_000, cached_tokens=2000, completion_tokens=1200)
        with self.request(tenant="hooli"):
            self.call("hooli-llama-70b", prompt_tokens=1000, completion_tokens=100)
        for day in (0, -10):  # wayne has no plan; one call on 2026-10-31, before the month
            with self.request(day, tenant="wayne"):
                self.call()
        with self.request():
            self.call()  # nobody owns it

    def spans(self):
        spans = self.pipeline.spans()
        start = min(s.start_time for s in spans)
        offset = int(BASE.timestamp()) * NANO - start
        return [_shifted(s, offset + self.day_of[s.context.trace_id] * DAY_NS) for s in spans]


@pytest.fixture(scope="module")
def ledger(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("margin")
    path = str(folder / "l.db")
    server.reset()
    with InMemoryPipeline() as pipeline, \
            openai.OpenAI(base_url=openai_api.base_url(server), api_key="k", max_retries=0) as client:
        workload = Workload(client, pipeline)
        workload.run()
        exporter = LedgerSpanExporter(path)
        assert exporter.export(workload.spans()).name == "SUCCESS"
        exporter.shutdown()
    conn = schema.connect(path)
    [(row,)] = conn.execute("SELECT id FROM spans WHERE llm = 1 AND tenant = 'globex' AND feature = 'search'")
    adjustments.apply(conn, [(row, DISCOUNT)], "test-card", "a discount learned late")
    conn.close()
    (folder / "plans.yaml").write_text(PLANS)
    server.reset()
    return path, str(folder / "plans.yaml")


@pytest.fixture(autouse=True)
def no_plans_env(monkeypatch):
    monkeypatch.delenv("TOKENTRAIL_PLANS", raising=False)


def _margin(capsys, ledger, *args):
    path, plans = ledger
    code = main(["margin", "--ledger", path, "--plans", plans, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _json(capsys, ledger, *args):
    return json.loads(_margin(capsys, ledger, *args, "--format", "json"))


def _share(since: date, until: date) -> Fraction:
    """Months of revenue earned, counted day by day: each day is 1/(days in its month)."""
    share, day = Fraction(0), since
    while day < until:
        share += Fraction(1, calendar.monthrange(day.year, day.month)[1])
        day += timedelta(days=1)
    return share


def test_a_whole_month_margin_per_tenant_to_the_nano_dollar(ledger, capsys):
    data = _json(capsys, ledger, "--month", "2026-11")
    assert data["period"] == {"since": "2026-11-01T00:00:00+00:00", "until": "2026-12-01T00:00:00+00:00"}
    assert data["whole_months"] and data["months"] == 1.0
    rows = {r["tenant"]: r for r in data["tenants"]}
    cost = {"acme": 9 * GPT4O, "umbrella": GPT4O, "stark": 0, "globex": 4 * GPT4O + DISCOUNT, "initech": 2 * MINI,
            "hooli": None, "wonka": 0, "wayne": GPT4O, "(unattributed)": GPT4O}  # wayne's October call is out
    assert set(rows) == set(cost)
    for tenant, row in rows.items():
        revenue = REVENUE.get(tenant)  # a whole month: the monthly figure exactly
        assert (row["revenue_nano_usd"], row["cost_nano_usd"]) == (revenue, cost[tenant]), tenant
        known = revenue is not None and cost[tenant] is not None
        assert row["margin_nano_usd"] == (revenue - cost[tenant] if known else None), tenant
        assert row["revenue_usd"] is None if revenue is None else Decimal(row["revenue_usd"]) * NANO == revenue
    assert rows["initech"]["margin_nano_usd"] == -3_100_000 and rows["initech"]["losing_money"]
    assert rows["initech"]["margin_pct"] == pytest.approx(-3_100_000 / 20_000_000)
    assert rows["globex"]["margin_pct"] == pytest.approx(0.62) and rows["globex"]["below_target"]
    assert rows["globex"]["adjustment_nano_usd"] == DISCOUNT  # net of the re-price
    assert (rows["hooli"]["cost_usd"], rows["hooli"]["unpriced_calls"]) == (None, 1)  # unknown, never $0
    assert rows["wayne"]["plan"] == rows["(unattributed)"]["plan"] == "(no plan)"  # spend with no plan: listed
    assert (rows["stark"]["calls"], rows["wonka"]["calls"]) == (0, 0)  # plans' tenants with no spend: listed
    assert rows["wonka"]["margin_pct"] is None and not rows["wonka"]["below_target"]  # $0 of $0


def test_unit_costs_successful_tasks_active_days_and_calls_per_task(ledger, capsys):
    rows = {r["tenant"]: r for r in _json(capsys, ledger, "--month", "2026-11")["tenants"]}
    acme, globex = rows["acme"], rows["globex"]
    assert (acme["tasks"], acme["ok_tasks"], acme["active_days"]) == (4, 4, 2)
    assert acme["cost_per_successful_task_nano_usd"] == 9 * GPT4O // 4
    assert acme["cost_per_active_day_nano_usd"] == 9 * GPT4O // 2
    assert acme["calls_per_task_p95"] == 5  # runs of 1, 1, 2 and 5 calls
    # three runs (ok, error, stopped by its budget): what all three cost, per run that succeeded
    assert (globex["tasks"], globex["ok_tasks"]) == (3, 1)
    assert globex["cost_per_successful_task_nano_usd"] == 3 * GPT4O
    assert globex["calls_per_task_p95"] == 1  # the stopped call was never sent: 1 call each
    assert (globex["calls"], globex["blocked_calls"]) == (5, 1)
    assert rows["umbrella"]["cost_per_successful_task_nano_usd"] is None  # no task: no figure, not $0
    assert rows["umbrella"]["calls_per_task_p95"] is None


def test_tenants_below_the_target_come_first_then_unknown_margins_then_the_rest(ledger, capsys):
    order = [r["tenant"] for r in _json(capsys, ledger, "--month", "2026-11")["tenants"]]
    assert order == ["initech", "globex", "(unattributed)", "wayne", "hooli", "acme", "umbrella", "stark", "wonka"]
    lower = [r["tenant"] for r in _json(capsys, ledger, "--month", "2026-11", "--target-margin", "40%")["tenants"]]
    assert lower[:2] == ["initech", "(unattributed)"]  # globex's 62% is above a 40% target
    assert lower.index("globex") == lower.index("acme") - 1  # lowest margin first among the rest


def test_per_plan_distribution(ledger, capsys):
    data = _json(capsys, ledger, "--month", "2026-11")
    plans = {p["plan"]: p for p in data["plans"]}
    assert [p["plan"] for p in data["plans"]] == ["pro", "trial", "free", "(no plan)"]
    pro = plans["pro"]  # acme $0.09, umbrella $0.01, stark $0
    assert (pro["tenants"], pro["revenue_nano_usd"], pro["cost_nano_usd"]) == (3, 297 * NANO, 10 * GPT4O)
    assert (pro["cost_median_nano_usd"], pro["cost_p90_nano_usd"]) == (GPT4O, 9 * GPT4O)
    assert (pro["margin_median_nano_usd"], pro["margin_p10_nano_usd"]) == (99 * NANO - GPT4O, 99 * NANO - 9 * GPT4O)
    trial = plans["trial"]  # globex, initech, and hooli whose cost is unknown
    assert (trial["tenants"], trial["unknown_cost_tenants"], trial["losing_money"]) == (3, 1, 1)
    assert (trial["cost_median_nano_usd"], trial["cost_p90_nano_usd"]) == (2 * MINI, 4 * GPT4O + DISCOUNT)
    assert trial["margin_pct_median"] == pytest.approx(-0.155) and trial["margin_pct_p10"] == pytest.approx(-0.155)
    assert plans["(no plan)"]["revenue_nano_usd"] is None and plans["(no plan)"]["cost_nano_usd"] == 2 * GPT4O
    total = data["total"]
    known_cost = 10 * GPT4O + 4 * GPT4O + DISCOUNT + 2 * MINI + 2 * GPT4O
    assert (total["revenue_nano_usd"], total["cost_nano_usd"]) == (sum(REVENUE.values()), known_cost)
    assert total["margin_nano_usd"] == sum(REVENUE.values()) - known_cost
    assert (total["below_target"], total["losing_money"], total["calls"]) == (2, 1, 20)


def test_a_period_that_is_not_a_whole_month_prorates_revenue_per_calendar_month(ledger, capsys):
    data = _json(capsys, ledger, "--since", "2026-10-31", "--until", "2026-11-12")
    share = _share(date(2026, 10, 31), date(2026, 11, 12))  # 1/31 + 11/30
    assert not data["whole_months"] and data["months"] == pytest.approx(float(share))
    rows = {r["tenant"]: r for r in data["tenants"]}
    for tenant, monthly in REVENUE.items():
        assert rows[tenant]["revenue_nano_usd"] == round(monthly * share), tenant
    assert rows["wayne"]["cost_nano_usd"] == 2 * GPT4O  # its October call is in this period
    assert rows["acme"]["margin_nano_usd"] == round(99 * NANO * share) - 9 * GPT4O
    one_day = _json(capsys, ledger, "--since", "2026-11-10", "--until", "2026-11-11")
    assert {r["tenant"]: r["revenue_nano_usd"] for r in one_day["tenants"]}["acme"] == 99 * NANO // 30
    default = _json(capsys, ledger)  # no period: the last 30 days
    since, until = (datetime.fromisoformat(default["period"][k]) for k in ("since", "until"))
    assert until - since == timedelta(days=30)


def test_where_keeps_one_tenant_and_only_its_plan(ledger, capsys):
    data = _json(capsys, ledger, "--month", "2026-11", "--where", "tenant=acme")
    assert [r["tenant"] for r in data["tenants"]] == ["acme"]
    assert data["tenants"][0]["cost_nano_usd"] == 9 * GPT4O


def test_the_table_and_csv(ledger, capsys):
    out = _margin(capsys, ledger, "--month", "2026-11")
    lines = out.splitlines()
    assert "whole months: monthly revenue as billed" in lines[0] and "target margin 70%" in lines[1]
    [initech] = [line for line in lines if line.startswith("initech ")]
    assert "-$0.003100" in initech and "losing money" in initech and "$0.020000" in initech
    [hooli] = [line for line in lines if line.startswith("hooli ")]
    assert "no cost (1 unpriced)" in hooli and "$0.000000" not in hooli.replace("$0.100000", "")
    [wayne] = [line for line in lines if line.startswith("wayne ")]
    assert "(no plan)" in wayne and "spend with no plan" in wayne
    assert "2 of 9 tenants below the 70% target margin; 1 losing money: initech (trial: $0.023100 of LLM cost" in out
    assert "Per plan" in out
    table = list(csv.DictReader(io.StringIO(_margin(capsys, ledger, "--month", "2026-11", "--format", "csv"))))
    by = {r["tenant"]: r for r in table}
    assert [r["tenant"] for r in table][0] == "initech"
    assert (by["initech"]["revenue_usd"], by["initech"]["cost_usd"], by["initech"]["margin_usd"]) == \
        ("0.02", "0.0231", "-0.0031")
    assert by["initech"]["losing_money"] == "true" and by["hooli"]["cost_usd"] == "" and by["stark"]["calls"] == "0"


def _error(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.startswith("tokentrail: error: ") and err.count("\n") == 1, err
    return err


def test_bad_plans_and_options_are_one_line_errors(ledger, capsys, tmp_path, monkeypatch):
    path, _ = ledger
    err = _error(capsys, "margin", "--ledger", path)
    assert "no plans: give --plans FILE or set TOKENTRAIL_PLANS" in err
    bad = tmp_path / "plans.yaml"
    bad.write_text("plans: {pro: 99}\ntenants: {acme: gold}\n")
    err = _error(capsys, "margin", "--ledger", path, "--plans", str(bad))
    assert f"{bad}: tenants.acme: plan 'gold' is not in plans (known: pro)" in err
    billing = tmp_path / "billing.csv"
    billing.write_text("tenant,plan,monthly_revenue\nacme,pro,99\nglobex,pro,n/a\n")
    monkeypatch.setenv("TOKENTRAIL_PLANS", str(billing))  # the environment is read too
    err = _error(capsys, "margin", "--ledger", path)
    assert f"{billing} line 3: monthly_revenue='n/a'" in err
    err = _error(capsys, "margin", "--ledger", path, "--plans", str(tmp_path / "none.yaml"))
    assert "none.yaml: cannot read" in err
    for args, message in [(["--month", "2026-13"], "bad --month '2026-13': use a year and month"),
                          (["--month", "0000-01"], "bad --month '0000-01'"),
                          (["--month", "9999-12"], "bad --month '9999-12'"),
                          (["--month", "2026-11", "--since", "7d"], "give --month or --since/--until, not both"),
                          (["--target-margin", "1.5"], "bad --target-margin '1.5'"),
                          (["--target-margin", "lots"], "bad --target-margin 'lots'"),
                          (["--where", "plan=pro"], "unknown field 'plan' in --where"),
                          (["--since", "yesterday"], "bad period 'yesterday'")]:
        assert message in _error(capsys, "margin", "--ledger", path, "--plans", ledger[1], *args), args
    assert "no ledger at" in _error(capsys, "margin", "--ledger", str(tmp_path / "x.db"), "--plans", ledger[1])


def test_with_no_plans_option_the_plans_file_beside_the_ledger_is_read(ledger, capsys, tmp_path):
    path, plans = ledger
    copy = tmp_path / "books.db"
    copy.write_bytes(open(path, "rb").read())
    (tmp_path / "books.plans.yaml").write_text("plans: {trial: 0.10}\ntenants: {initech: trial}\n")
    assert main(["margin", "--ledger", str(copy), "--month", "2026-11", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plans_source"] == str(tmp_path / "books.plans.yaml")
    rows = {r["tenant"]: r for r in data["tenants"]}
    assert rows["initech"]["margin_nano_usd"] == 100_000_000 - 2 * MINI and rows["acme"]["plan"] == "(no plan)"


_WORDS = st.sampled_from(["2026-11", "2026-13", "0000-01", "9999-12", "1969-12", "2262-04", "7d", "0d", "now", "",
                          "2300-01-01", "0001-01-01", "1970-01-01", "tenant=", "tenant=acme", "plan=pro", "0.7",
                          "70%", "1", "-5", "nan", "inf", "1e309", "%", "json", "csv", "\x00"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(st.tuples(st.sampled_from(["--month", "--since", "--until", "--where", "--target-margin",
                                                  "--format"]), st.one_of(_WORDS, st.text(max_size=8))), max_size=3))
def test_whatever_the_options_one_line_and_exit_0_or_2(ledger, capsys, options):
    argv = ["margin", "--ledger", ledger[0], "--plans", ledger[1]] + [x for pair in options for x in pair]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a usage error
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, err)
    if code == 2 and "usage:" not in err:
        assert err.startswith("tokentrail: error: ") and err.count("\n") == 1, (argv, err)
