"""The ``tokentrail`` CLI, run as a real subprocess and through ``main([...])``, over a ledger
written by the demo workload (real openai SDK, fake provider, real pipeline)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokentrail.cli import main
from tokentrail.cli.demo import workload


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "demo.db")
    counts = workload.run_workload(path, seed=7)
    assert counts["dropped"] == 0
    return path


def tokentrail_cmd(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tokentrail") or str(Path(sys.executable).with_name("tokentrail"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def span_total(path: str, where: str = "1") -> int:
    return sqlite3.connect(path).execute(f"SELECT COALESCE(SUM(cost_nano), 0) FROM spans WHERE llm = 1 AND {where}").fetchone()[0]


# --- help everywhere ---------------------------------------------------------------------------
@pytest.mark.slow
def test_help_everywhere_as_a_real_command():
    top = tokentrail_cmd("--help")
    assert top.returncode == 0
    for command in ("report", "top", "trace", "price", "tenants", "demo", "view", "dashboards"):
        assert command in top.stdout
        sub = tokentrail_cmd(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: tokentrail " + command in sub.stdout


# --- report ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_as_a_subprocess_table(ledger):
    proc = tokentrail_cmd("report", "--by", "tenant", "--ledger", ledger)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("(unattributed)") for line in lines)  # never hidden
    assert any(line.startswith("TOTAL") for line in lines)
    for tenant in ("acme", "globex", "initech", "umbrella"):
        assert any(line.startswith(tenant) for line in lines)


def test_report_json_agrees_with_the_spans_to_the_nano_dollar(ledger, capsys):
    code, out, _ = run(capsys, "report", "--by", "tenant,feature", "--format", "json", "--ledger", ledger)
    assert code == 0
    data = json.loads(out)
    assert data["total"]["cost_nano_usd"] == span_total(ledger)
    assert sum(r["cost_nano_usd"] or 0 for r in data["rows"]) == span_total(ledger)
    acme = [r for r in data["rows"] if r["tenant"] == "acme"]
    assert sum(r["cost_nano_usd"] or 0 for r in acme) == span_total(ledger, "tenant = 'acme'")
    unattributed = [r for r in data["rows"] if r["tenant"] == "(unattributed)"]
    assert unattributed and unattributed[0]["cost_nano_usd"] == span_total(ledger, "tenant IS NULL")
    assert abs(sum(r["share"] or 0 for r in data["rows"]) - 1) < 1e-9
    hooli = next(r for r in data["rows"] if r["tenant"] == "hooli")  # a self-hosted model: unknown, not $0
    assert (hooli["cost_nano_usd"], hooli["share"], hooli["unpriced_calls"]) == (None, None, 6)


def test_report_by_every_field_and_where(ledger, capsys):
    for field in ("tenant", "feature", "team", "user", "task", "provider", "model", "day"):
        code, out, _ = run(capsys, "report", "--by", field, "--format", "json", "--ledger", ledger)
        assert code == 0
        assert json.loads(out)["total"]["cost_nano_usd"] == span_total(ledger), field
    code, out, _ = run(capsys, "report", "--by", "model", "--where", "tenant=acme", "--format", "json", "--ledger", ledger)
    assert json.loads(out)["total"]["cost_nano_usd"] == span_total(ledger, "tenant = 'acme'")
    code, out, _ = run(capsys, "report", "--by", "feature", "--where", "tenant=", "--format", "json", "--ledger", ledger)
    assert json.loads(out)["total"]["cost_nano_usd"] == span_total(ledger, "tenant IS NULL")


def test_report_csv_and_period_comparison(ledger, capsys):
    code, out, _ = run(capsys, "report", "--by", "tenant,model", "--format", "csv", "--since", "7d", "--ledger", ledger)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0].keys() >= {"tenant", "model", "calls", "cost_usd", "cost_nano_usd", "share", "change"}
    week_ago = (time.time_ns() - 7 * 86400 * 10**9)
    assert sum(int(r["cost_nano_usd"] or 0) for r in rows) == span_total(ledger, f"start_ns >= {week_ago}")
    # the demo spreads its spend over four weeks: the week before has spend to compare with
    assert sum(int(r["previous_cost_nano_usd"] or 0) for r in rows) > 0
    assert any(r["change"] not in ("", None) for r in rows)
    code, out, _ = run(capsys, "report", "--since", "7d", "--ledger", ledger)
    assert "vs prev" in out and re.search(r"[+-]\d+%", out)
    code, out, _ = run(capsys, "report", "--since", "2000-01-01", "--until", "2000-01-02", "--format", "json", "--ledger", ledger)
    assert json.loads(out)["rows"] == []


def test_report_cache_hits_show_the_warm_and_the_cold_tenant(ledger, capsys):
    code, out, _ = run(capsys, "report", "--by", "tenant", "--format", "json", "--ledger", ledger)
    ratio = {r["tenant"]: r["cache_hit_ratio"] for r in json.loads(out)["rows"]}
    assert ratio["acme"] > 0.9 and ratio["globex"] < 0.2


# --- errors: one clear line, exit code 2 ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "--by", "colour"], "unknown field 'colour' in --by"),
        (["report", "--since", "last tuesday"], "bad period 'last tuesday'"),
        (["report", "--since", "1d", "--until", "7d"], "is not before"),
        (["report", "--where", "tenant"], "bad --where"),
        (["trace", "ffffffffffffffffffffffff"], "unknown trace id"),
        (["trace", "xyz!"], "bad trace id"),
        (["top", "--since", "soon"], "bad period"),
        (["tenants", "--where", "planet=mars"], "unknown field 'planet' in --where"),
    ],
)
def test_errors_are_one_line_exit_2(ledger, args, message):
    proc = tokentrail_cmd(*args, "--ledger", ledger)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_ledger_yet_says_how_to_make_one(tmp_path, capsys):
    for command in (["report"], ["top"], ["tenants"], ["trace", "abc"]):
        code, out, err = run(capsys, *command, "--ledger", str(tmp_path / "missing.db"))
        assert code == 2
        assert err.startswith("tokentrail: error: no ledger at") and "tokentrail demo" in err
        assert err.count("\n") == 1


def test_newer_ledger_is_refused_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "new.db")
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    code, _, err = run(capsys, "report", "--ledger", path)
    assert code == 2 and "newer than this tokentrail understands" in err and err.count("\n") == 1


def test_ledger_path_from_environment(ledger, monkeypatch, capsys):
    monkeypatch.setenv("TOKENTRAIL_LEDGER", ledger)
    code, out, _ = run(capsys, "report", "--format", "json")
    assert code == 0 and json.loads(out)["ledger"] == ledger


# --- top, trace, tenants -----------------------------------------------------------------------
def test_top_explains_the_expensive_traces_and_tasks(ledger, capsys):
    code, out, _ = run(capsys, "top", "--format", "json", "--ledger", ledger)
    assert code == 0
    data = json.loads(out)
    traces, tasks = data["traces"], data["tasks"]
    assert [t["cost_nano_usd"] for t in traces] == sorted((t["cost_nano_usd"] for t in traces), reverse=True)
    for t in traces:
        assert t["cost_nano_usd"] == span_total(ledger, f"trace_id = '{t['trace_id']}'")
        assert t["owner"] and t["calls"] >= 1
    reasons = " | ".join(r for t in traces + tasks for r in t["reasons"])
    assert "retries" in reasons and "median research-agent" in reasons and "long prompt" in reasons
    code, out, _ = run(capsys, "top", "--only", "tasks", "-n", "50", "--format", "json", "--ledger", ledger)
    tasks = json.loads(out)["tasks"]
    assert "traces" not in json.loads(out)
    assert any(t.get("fallback") == {"from": workload.MODEL, "to": workload.PRICIER_MODEL} for t in tasks)
    code, out, _ = run(capsys, "top", "--ledger", ledger)
    assert "Most expensive traces" in out and "Most expensive tasks" in out


@pytest.mark.slow
def test_trace_by_unique_prefix_as_table_and_json(ledger, capsys):
    trace_id = sqlite3.connect(ledger).execute(
        "SELECT trace_id FROM spans WHERE task_name = 'research-agent' AND llm = 1 GROUP BY trace_id"
        " ORDER BY SUM(cost_nano) DESC LIMIT 1"
    ).fetchone()[0]
    proc = tokentrail_cmd("trace", trace_id[:10], "--ledger", ledger)
    assert proc.returncode == 0, proc.stderr
    assert trace_id in proc.stdout and "task research-agent" in proc.stdout and "tool web_search" in proc.stdout
    code, out, _ = run(capsys, "trace", trace_id[:10], "--format", "json", "--ledger", ledger)
    data = json.loads(out)
    assert data["trace_id"] == trace_id
    assert data["cost_nano_usd"] == span_total(ledger, f"trace_id = '{trace_id}'")
    llm = [s for s in data["spans"] if s["llm"]]
    running = 0
    for s in llm:
        running += s["cost_nano_usd"] or 0
    assert llm[-1]["cumulative_cost_nano_usd"] == running == data["cost_nano_usd"]
    assert data["spans"][0]["depth"] == 0 and data["spans"][0]["subtree_cost_nano_usd"] == data["cost_nano_usd"]
    assert all(s["model"] == workload.MODEL for s in llm)
    # an ambiguous prefix
    code, _, err = run(capsys, "trace", "", "--ledger", ledger)
    assert code == 2


@pytest.mark.slow
def test_tenants_dispersion_worst_first(ledger, capsys):
    code, out, _ = run(capsys, "tenants", "--where", "feature=support-chat", "--format", "json", "--ledger", ledger)
    assert code == 0
    rows = {r["tenant"]: r for r in json.loads(out)["tenants"]}
    assert rows["acme"]["cache_hit_median"] > 0.9 and rows["acme"]["cache_hit_p10"] > 0.9
    assert rows["globex"]["cache_hit_median"] < 0.2
    per_request = [r["cost_per_request_nano_usd"] for r in json.loads(out)["tenants"]]
    assert per_request == sorted(per_request, reverse=True)
    assert rows["globex"]["cost_per_request_nano_usd"] > 2 * rows["acme"]["cost_per_request_nano_usd"]
    proc = tokentrail_cmd("tenants", "--ledger", ledger)
    assert proc.returncode == 0 and "cache hit median" in proc.stdout and "(unattributed)" in proc.stdout


# --- price -------------------------------------------------------------------------------------
def test_price_worked_numbers(capsys):
    code, out, _ = run(capsys, "price", "gpt-4o", "--input", "2000", "--output", "500", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["total_nano_usd"] == 10_000_000 and data["rate_card_version"]
    code, out, _ = run(capsys, "price", "claude-sonnet-4", "--input", "250000", "--output", "2000", "--format", "json")
    assert json.loads(out)["total_usd"].rstrip("0") == "1.545"
    assert "context>200k" in json.loads(out)["tier"]
    code, out, _ = run(capsys, "price", "gpt-5.4-mini", "--input", "10000", "--cache-read", "2000", "--output", "1200")
    assert code == 0 and "$0.01155 exactly" in out
    code, out, _ = run(capsys, "price", "gpt-4o", "--input", "2000", "--output", "500", "--batch", "--format", "json")
    assert json.loads(out)["total_nano_usd"] == 5_000_000  # batch: half price


@pytest.mark.slow
def test_price_unknown_model_suggests_close_matches():
    proc = tokentrail_cmd("price", "gpt-4o-minii", "--input", "10", "--output", "1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "unknown model 'gpt-4o-minii'" in proc.stderr and "gpt-4o-mini" in proc.stderr.split("did you mean")[1]


def test_price_bad_counts(capsys):
    code, _, err = run(capsys, "price", "gpt-4o", "--input", "10", "--cache-read", "20")
    assert code == 2 and "bad token counts" in err
