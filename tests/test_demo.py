"""``tokentrail demo``: one command, real SDK and pipeline, the seed's stories visible in the ledger."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tokentrail import plans
from tokentrail.cli import demo, main
from tokentrail.cli.demo import workload
from tokentrail.ledger.queries import Ledger, Period


@pytest.mark.slow
def test_demo_as_a_new_user_runs_it(tmp_path):
    exe = shutil.which("tokentrail") or str(Path(sys.executable).with_name("tokentrail"))
    proc = subprocess.run([exe, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "tokentrail.db").exists()  # the default ledger, left to query further
    out = proc.stdout
    assert "TOTAL" in out and "(unattributed)" in out
    assert "Most expensive traces" in out and "The most expensive trace:" in out
    # the runaway loop under a task budget: stopped before sending, said in two lines
    [breaker] = [line for line in out.splitlines() if line.startswith("Circuit breaker: task invoice-extractor")]
    assert "kept retrying an invalid JSON answer" in breaker and "before it was sent" in breaker
    assert "(zero overshoot), and 1 stopped (never billed); outcome budget_exceeded." in out
    # a second run starts the demo ledger afresh instead of doubling it
    again = subprocess.run([exe, "demo", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout == ""
    # `tokentrail margin` with nothing else finds the demo's plans beside its ledger
    margin = subprocess.run([exe, "margin"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert margin.returncode == 0, margin.stderr
    assert "plans tokentrail.plans.yaml" in margin.stdout and "1 losing money: initech (starter" in margin.stdout
    report = subprocess.run([exe, "report", "--format", "json"], cwd=tmp_path, capture_output=True, text=True)
    first_total = [line for line in out.splitlines() if line.startswith("TOTAL")][0]
    assert f"{json.loads(report.stdout)['total']['calls']:,}" in first_total


def test_demo_numbers_agree_with_each_other(tmp_path, capsys):
    path = str(tmp_path / "demo.db")
    assert main(["demo", "--ledger", path]) == 0
    out = capsys.readouterr().out
    headline = re.match(r"tokentrail demo: (\d+) LLM calls .* \((\d+) sent to the fake provider, (\d+) stopped", out)
    llm, sent, stopped = map(int, headline.groups())
    totals = [line.split() for line in out.splitlines() if line.startswith("TOTAL")]
    assert llm == sent + stopped and all(int(t[1].replace(",", "")) == llm for t in totals)
    breaker = re.search(r"  (\d+) calls: (\d+) sent, .* and 1 stopped", out)
    task_row = next(line for line in out.splitlines() if line.startswith("invoice-extractor"))
    assert int(breaker.group(1)) == int(breaker.group(2)) + 1 == int(task_row.split()[3])
    assert not re.search(r"(?<![\d,])1 LLM calls", out)  # a count, not a substring of 411
    # one dollar precision everywhere: six decimals
    assert set(len(d) for d in re.findall(r"\$[\d,]+\.(\d+)", out)) == {6}
    # the self-hosted tenant's spend is unknown, never $0
    [hooli] = [line for line in out.splitlines() if line.startswith("hooli")]
    assert "no cost (6 unpriced)" in hooli and "$0.000000" not in hooli
    # the demo's plans beside its ledger: `tokentrail margin` shows the one tenant losing money
    plans = tmp_path / "demo.plans.yaml"
    assert f"Plans: {plans} (demo prices: $19/$49/$99 plans scaled down 50x" in out
    assert main(["margin", "--ledger", path, "--format", "json"]) == 0
    margin = json.loads(capsys.readouterr().out)
    assert margin["plans_source"] == str(plans)
    [losing] = [r for r in margin["tenants"] if r["losing_money"]]
    assert (losing["tenant"], losing["plan"], margin["tenants"][0]["tenant"]) == ("initech", "starter", "initech")
    assert losing["margin_nano_usd"] == losing["revenue_nano_usd"] - losing["cost_nano_usd"] < 0
    with Ledger(path) as ledger:  # all the demo's spend is in the last 30 days
        by_tenant = {r["tenant"]: r for r in ledger.report(["tenant"], Period.parse(None, None))["rows"]}
    assert losing["cost_nano_usd"] == by_tenant["initech"]["cost_nano_usd"]
    assert f"initech on starter cost ${Decimal(losing['cost_nano_usd']) / 10**9:,.6f} in LLM calls" in out
    rows = {r["tenant"]: r for r in margin["tenants"]}
    assert rows["hooli"]["margin_nano_usd"] is None and rows["stark"]["calls"] == 0
    assert rows["(unattributed)"]["plan"] == "(no plan)"


def test_demo_spreads_its_workload_over_past_weeks_and_keep_adds_to_it(tmp_path, capsys):
    path = str(tmp_path / "demo.db")
    workload.run_workload(path, seed=7)
    conn = sqlite3.connect(path)
    days = conn.execute("SELECT COUNT(DISTINCT start_ns / 86400000000000), MAX(start_ns) FROM spans").fetchone()
    assert days[0] >= 21 and days[1] < time.time_ns()  # several weeks, all in the past
    for args in (["report", "--since", "7d"], ["report", "--by", "day", "--since", "14d"], ["tenants", "--since", "7d"],
                 ["top", "--since", "7d"]):
        assert main([*args, "--ledger", path, "--format", "json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data.get("rows") or data.get("tenants") or data.get("traces"), args
    week = json.loads((main(["report", "--since", "7d", "--ledger", path, "--format", "json"]), capsys.readouterr().out)[1])
    assert week["total"]["previous_cost_nano_usd"] > 0  # the week before has spend to compare with
    before = conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
    assert main(["demo", "--ledger", path, "--keep", "--quiet"]) == 0
    assert conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0] > before  # seed 7 is there: another seed


@pytest.mark.slow
def test_demo_workload_shows_every_story_and_is_deterministic(tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    counts = workload.run_workload(a, seed=7)
    assert counts["dropped"] == 0 and counts["written"] > counts["calls"]
    workload.run_workload(b, seed=7)
    everything = Period.parse(None, None)
    with Ledger(a) as la, Ledger(b) as lb:
        report_a = la.report(["tenant", "feature", "model"], everything)
        report_b = lb.report(["tenant", "feature", "model"], everything)
        strip = lambda r: [{k: v for k, v in row.items()} for row in r["rows"]]  # noqa: E731
        assert strip(report_a) == strip(report_b)  # same seed, same ledger numbers
        assert la.trace(la.top(everything)["traces"][0]["trace_id"])["trace_id"] == \
            lb.trace(lb.top(everything)["traces"][0]["trace_id"])["trace_id"]  # seeded ids too

        support = {r["tenant"]: r for r in la.tenants(everything, [("feature", "support-chat")])}
        # >= 4 tenants on the same model; one cache-warm, one cache-cold
        assert {"acme", "globex", "initech", "umbrella"} <= set(support)
        by_tenant = {r["tenant"]: r for r in la.report(["tenant"], everything)["rows"]}
        assert by_tenant["acme"]["cache_hit_ratio"] > 0.9
        assert by_tenant["globex"]["cache_hit_ratio"] < 0.2
        assert by_tenant["(unattributed)"]["cost_nano_usd"] > 0  # spend nobody owns

        features = {r["feature"]: r for r in la.report(["feature"], everything)["rows"]}
        review = features["doc-review"]
        assert review["input_tokens"] / review["calls"] > 5 * (features["support-chat"]["input_tokens"] / features["support-chat"]["calls"])

        tasks = la.top(everything, limit=1000)["tasks"]
        research = [t["cost_nano_usd"] for t in tasks if t["task"] == "research-agent"]
        median = statistics.median(research)
        tail = [c / median for c in research if c >= 3 * median]
        assert len(tail) == 3 and all(x <= 5 for x in tail), tail  # a few runs 3-5x the median
        assert sum(1 for c in research if c < 2 * median) >= 15  # most runs are cheap

        conn = sqlite3.connect(a)
        retries = conn.execute("SELECT COUNT(*), SUM(cost_nano) FROM spans WHERE retry_attempt > 0").fetchone()
        assert retries[0] >= 10 and retries[1] > 0  # the retry storm, billed
        assert conn.execute("SELECT COUNT(*) FROM spans WHERE error_type IS NOT NULL AND llm = 1").fetchone()[0] > 0
        fallback = conn.execute("SELECT fallback_from, request_model FROM spans WHERE fallback_from IS NOT NULL").fetchall()
        assert fallback and set(fallback) == {(workload.MODEL, workload.PRICIER_MODEL)}
        assert conn.execute("SELECT COUNT(*) FROM spans WHERE cost_status = 'priced' AND cost_nano IS NULL").fetchone()[0] == 0


def test_demo_never_overwrites_a_plans_file_of_the_users(tmp_path):
    ledger = str(tmp_path / "prod.db")
    mine = tmp_path / "prod.plans.yaml"
    mine.write_text("plans: {pro: 99}\ntenants: {acme: pro}\n")
    assert demo._write_plans(ledger) == (str(mine), False)
    assert mine.read_text() == "plans: {pro: 99}\ntenants: {acme: pro}\n"
    assert "is not the demo's, left as it is" in demo.plans_lines(ledger, str(mine), False)
    mine.write_text(demo.PLANS_MARK + " (an older run)\nplans: {}\n")  # the demo's own: rewritten
    assert demo._write_plans(ledger) == (str(mine), True) and mine.read_text() == demo.PLANS
    assert plans.load(str(mine)).plan_of("initech") == "starter"


def test_demo_refuses_to_overwrite_a_real_ledger(tmp_path, capsys):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tokentrail.ledger import LedgerSpanExporter

    path = str(tmp_path / "prod.db")
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(LedgerSpanExporter(path)))
    with provider.get_tracer("t").start_as_current_span("real work"):
        pass
    provider.shutdown()
    code = main(["demo", "--ledger", path, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not from the demo" in err and err.count("\n") == 1
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 1


@pytest.mark.slow
def test_demo_runaway_loop_is_stopped_by_its_task_budget_with_zero_overshoot(tmp_path):
    path = str(tmp_path / "l.db")
    breaker = workload.run_workload(path, seed=7)["breaker"]
    assert breaker["task"] == workload.RUNAWAY_TASK and breaker["task_id"] == workload.RUNAWAY_TASK_ID
    assert breaker["limit"] == "budget_usd" and breaker["limit_usd"] == workload.RUNAWAY_BUDGET_USD
    assert breaker["outcome"] == "budget_exceeded"
    assert breaker["calls"] >= 5  # it ran a while: a loop, not a refusal of the first call
    assert 0 < breaker["spent_nano_usd"] <= workload.RUNAWAY_BUDGET_USD * 10**9  # zero overshoot

    with Ledger(path) as ledger:
        [task] = [t for t in ledger.top(Period.parse(None, None), limit=1000)["tasks"]
                  if t["task_id"] == workload.RUNAWAY_TASK_ID]
    assert task["task"] == workload.RUNAWAY_TASK and task["outcome"] == "budget_exceeded"
    assert task["stopped_calls"] == 1 and "stopped by a budget breaker (1 call not sent)" in task["reasons"]
    assert task["cost_nano_usd"] == breaker["spent_nano_usd"]  # the ledger's cost is what the task counted
    assert task["retries"] == breaker["calls"]  # every sent call after the first, plus the stopped one
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT cost_status, cost_nano, error_type FROM spans WHERE llm = 1 AND task_id = ?",
                        (workload.RUNAWAY_TASK_ID,)).fetchall()
    sent = [r for r in rows if r[0] == "priced"]
    assert len(sent) == breaker["calls"] and sum(r[1] for r in sent) == breaker["spent_nano_usd"]
    # the stopped call is in the ledger, never billed
    assert [r for r in rows if r[0] != "priced"] == [("no_usage", None, "BudgetExceeded")]
    assert conn.execute("SELECT status FROM spans WHERE task_id = ? AND name = ?",
                        (workload.RUNAWAY_TASK_ID, f"task {workload.RUNAWAY_TASK}")).fetchone() == (2,)  # ERROR
