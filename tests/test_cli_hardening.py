"""The CLI under hostile and extreme input: one line and exit 2, never a traceback; readers never
write; spend that could not be priced is "no cost", never $0."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tokentrail.dashboards
from tokentrail.cli import main
from tokentrail.errors import BudgetExceeded
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.semconv import attributes as a


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _call(tracer, name: str, **attrs) -> None:
    base = {a.GEN_AI_PROVIDER_NAME: "openai", a.GEN_AI_OPERATION_NAME: "chat"}
    with tracer.start_as_current_span(name, attributes={**base, **attrs}):
        pass


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> str:
    """acme: one priced call; mystery: one unpriced, one failed and one breaker-stopped call, nothing priced."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    _call(tracer, "chat gpt-4o", **{a.TOKENTRAIL_TENANT: "acme", a.TOKENTRAIL_TASK_NAME: "triage",
                                    a.GEN_AI_REQUEST_MODEL: "gpt-4o", a.GEN_AI_USAGE_INPUT_TOKENS: 1000,
                                    a.GEN_AI_USAGE_OUTPUT_TOKENS: 100, a.TOKENTRAIL_COST_STATUS: "priced",
                                    a.TOKENTRAIL_COST_NANO_USD: 3_500_000, a.GEN_AI_USAGE_COST_AMOUNT: 0.0035})
    mystery = {a.TOKENTRAIL_TENANT: "mystery", a.TOKENTRAIL_TASK_NAME: "probe"}
    _call(tracer, "chat private", **mystery, **{a.GEN_AI_REQUEST_MODEL: "my-private-model",
                                              a.GEN_AI_USAGE_INPUT_TOKENS: 100, a.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
                                              a.TOKENTRAIL_COST_STATUS: "unpriced"})
    _call(tracer, "chat failed", **mystery, **{a.GEN_AI_REQUEST_MODEL: "gpt-4o", a.ERROR_TYPE: "RateLimitError",
                                             a.TOKENTRAIL_COST_STATUS: "no_usage"})
    _call(tracer, "chat stopped", **mystery, **{a.GEN_AI_REQUEST_MODEL: "gpt-4o",
                                              a.ERROR_TYPE: BudgetExceeded.__name__,
                                              a.TOKENTRAIL_BUDGET_EXCEEDED: "budget_usd",
                                              a.TOKENTRAIL_COST_STATUS: "no_usage"})
    path = str(tmp_path_factory.mktemp("hardening") / "l.db")
    LedgerSpanExporter(path).export(memory.get_finished_spans())
    return path


# --- bug 7: no cost is not $0 -------------------------------------------------------------------
def test_unpriced_tenant_is_no_cost_in_report_never_zero(ledger):
    code, out, _ = run("report", "--ledger", ledger)
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("mystery")]
    assert "no cost (1 unpriced, 1 no usage, 1 blocked)" in row and "$0.000000" not in row
    assert "3 calls without a cost" in out and "stopped by a circuit breaker before sending (blocked" in out
    data = json.loads(run("report", "--ledger", ledger, "--format", "json")[1])
    mystery = next(r for r in data["rows"] if r["tenant"] == "mystery")
    assert mystery["cost_nano_usd"] is None and mystery["cost_usd"] is None
    assert (mystery["unpriced_calls"], mystery["no_usage_calls"], mystery["blocked_calls"]) == (1, 1, 1)
    assert data["total"]["cost_nano_usd"] == 3_500_000  # the priced part, exact
    assert (data["total"]["unpriced_calls"], data["total"]["no_usage_calls"]) == (1, 1)


def test_unpriced_tenant_is_no_cost_in_tenants_and_top(ledger):
    code, out, _ = run("tenants", "--ledger", ledger)
    [row] = [line for line in out.splitlines() if line.startswith("mystery")]
    assert code == 0 and "no cost (1 unpriced, 1 no usage, 1 blocked)" in row and "$0.000000" not in row
    tenants = json.loads(run("tenants", "--ledger", ledger, "--format", "json")[1])["tenants"]
    assert next(t for t in tenants if t["tenant"] == "mystery")["cost_nano_usd"] is None
    code, out, _ = run("top", "--ledger", ledger)
    assert code == 0 and "$0.000000" not in out and "no cost (1 unpriced)" in out and "no cost (1 blocked)" in out
    traces = json.loads(run("top", "--ledger", ledger, "--format", "json")[1])["traces"]
    assert sorted(t["cost_nano_usd"] is None for t in traces) == [False, True, True, True]


def test_blocked_call_is_its_own_status_not_no_usage(ledger):
    data = json.loads(run("report", "--by", "status", "--ledger", ledger, "--format", "json")[1])
    by_status = {r["status"]: r for r in data["rows"]}
    assert set(by_status) == {"priced", "unpriced", "no_usage", "blocked"}
    assert by_status["blocked"]["cost_nano_usd"] is None and by_status["blocked"]["blocked_calls"] == 1


def test_missing_values_are_named_per_dimension(ledger):
    code, out, _ = run("report", "--by", "team", "--ledger", ledger)
    assert code == 0 and "(no team)" in out and "(unattributed)" not in out.split("\n\n")[1]
    code, out, _ = run("report", "--by", "feature", "--where", "feature=(no feature)", "--ledger", ledger,
                       "--format", "json")
    assert code == 0 and json.loads(out)["total"]["calls"] == 4


def test_unknown_where_field_is_named_as_a_where_field(ledger):
    code, _, err = run("report", "--where", "colour=red", "--ledger", ledger)
    assert code == 2 and err.strip() == ("tokentrail: error: unknown field 'colour' in --where: choose from tenant,"
                                         " feature, team, user, task, provider, model, day, service, operation, status")


# --- extreme input: clamped or refused, one line ----------------------------------------------
@pytest.mark.parametrize("args", [
    ["report", "--since", "0001-01-01"], ["report", "--since", "99999999d"], ["report", "--until", "2300-01-01"],
    ["top", "--since", "100000w"], ["tenants", "--since", "3000000d"], ["report", "--since", "9" * 5000 + "d"],
    ["report", "--since", "0001-01-01T00:00:00+14:00"], ["report", "--since", "9999-12-31T23:59:59-14:00"],
    ["report", "--by", "day", "--since", "0001-01-01", "--until", "9999-12-31"],
])
def test_extreme_periods_are_clamped(ledger, args):
    code, out, err = run(*args, "--ledger", ledger)
    assert code in (0, 2) and "Traceback" not in err
    assert code == 2 or "TOTAL" in out or "tenant" in out or "Most expensive" in out
    if code == 2:
        assert err.count("\n") == 1


def test_huge_top_limit_is_refused_in_one_line(ledger):
    code, _, err = run("top", "-n", "99999999999999999999", "--ledger", ledger)
    assert code == 2 and err == "tokentrail: error: --limit must be between 1 and 100,000\n"


# --- readers never write ------------------------------------------------------------------------
def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("command", [["report"], ["top"], ["tenants"], ["trace", "ab"]])
def test_readers_refuse_a_foreign_sqlite_file_and_leave_it_unchanged(tmp_path, command):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('acme')")
    conn.commit()
    conn.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (other, empty):
        before = _digest(path)
        code, _, err = run(*command, "--ledger", str(path))
        assert code == 2 and err.count("\n") == 1 and "is not a tokentrail ledger" in err
        assert _digest(path) == before
        assert sorted(os.listdir(tmp_path)) == ["empty.db", "other.db"]  # no -wal / -shm left behind


def test_reading_a_ledger_does_not_change_it(ledger, tmp_path):
    before = _digest(ledger)
    for command in (["report"], ["top"], ["tenants"], ["report", "--by", "day", "--since", "30d"]):
        assert run(*command, "--ledger", ledger)[0] == 0
    assert _digest(ledger) == before


def test_not_a_database_is_one_line(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("hello, not sqlite at all\n" * 100)
    code, _, err = run("report", "--ledger", str(path))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


# --- price -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["ft:gpt-4o", "gpt-4oo", "claude-sonnet-9", "GPT-4O-MINI-X"])
def test_price_never_suggests_what_was_typed(model):
    code, _, err = run("price", model, "--input", "10")
    suggested = err.partition("did you mean: ")[2].rstrip("?\n").split(", ")
    assert code in (0, 2) and model.lower() not in [s.lower() for s in suggested]


def test_price_finds_a_model_under_another_provider():
    code, _, err = run("price", "claude-sonnet-4-0", "--provider", "openai", "--input", "10")
    assert code == 2 and "is on the rate card under another provider" in err


@pytest.mark.parametrize("args", [["--input", "-1"], ["--input", "10", "--output", "10000000000000"],
                                  ["--input", "10", "--cache-read", "20"], ["--output", "1", "--reasoning", "5"]])
def test_price_rejects_bad_counts_in_one_line_without_internals(args):
    code, _, err = run("price", "gpt-4o", *args)
    assert code == 2 and err.count("\n") == 1 and "Usage(" not in err


def test_version():
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("tokentrail ") and out.strip() != "tokentrail unknown"


# --- property: whatever the arguments, one line and exit 0 or 2 --------------------------------
_WORDS = st.sampled_from(["0", "-1", "1", "7d", "24h", "99999999999999999999", "0001-01-01", "2300-01-01",
                          "9999-12-31", "now", "", " ", "tenant=", "tenant=acme", "colour=red", "=x", "day",
                          "tenant,feature", ",", "2026-13-45", "1e9", "nan", "ff", "zz", "∞", "\x00", "%s",
                          "(unattributed)", "feature=(no feature)", "json", "csv", "table", "traces", "tasks"])
_TEXT = st.one_of(_WORDS, st.text(max_size=12), st.integers().map(str),
                  st.integers(min_value=0, max_value=10**7).map(lambda n: f"{n}{'smhdw'[n % 5]}"))
_OPTIONS = {
    "report": ["--by", "--since", "--until", "--where", "--format"],
    "top": ["-n", "--only", "--since", "--until", "--where", "--format"],
    "tenants": ["--since", "--until", "--where", "--format"],
    "trace": ["--format"],
    "price": ["--input", "--output", "--cache-read", "--cache-write", "--reasoning", "--provider", "--format"],
    "view": ["--since", "--until", "--where"],
    "dashboards": [],
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(_OPTIONS)))
    args = [command]
    if command in ("trace", "price"):
        args.append(draw(st.one_of(_TEXT, st.sampled_from(["gpt-4o", "claude-sonnet-4-0", "ft:gpt-4o"]))))
    for option in draw(st.lists(st.sampled_from(_OPTIONS[command] or ["--help"]), max_size=4)):
        args += [option, draw(_TEXT)] if option != "--help" else [option]
    if command == "dashboards":
        args.insert(1, draw(st.sampled_from(["generate", "push", "nope"])))
    return args


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_every_command_line_is_exit_0_or_2_and_never_a_traceback(ledger, tmp_path, argv):
    if argv[0] in ("report", "top", "tenants", "trace", "view"):
        argv = [*argv, "--ledger", ledger]
    if argv[0] == "view":
        argv = [*argv, "--out", str(tmp_path / "view.html")]
    if argv[:2] == ["dashboards", "generate"]:
        argv = [*argv, "--out", str(tmp_path / "dash")]
    if argv[:2] == ["dashboards", "push"]:
        argv = [*argv, "--url", "http://127.0.0.1:9", "--token", "t"]  # nothing listens on port 9
    try:
        code, _, err = run(*argv)
    except Exception as exc:  # a traceback the user would have seen
        pytest.fail(f"tokentrail {' '.join(argv)!r} raised {exc!r}")
    assert code in (0, 2), (argv, code, err)
    if code == 2 and "usage:" not in err:
        assert err.count("\n") == 1, (argv, err)


# --- dashboards with only the base install --------------------------------------------------------
@pytest.fixture
def without_grafana_extra(monkeypatch):
    """As if `pip install tokentrail[openai]` only: neither Grafana package can be imported."""
    for name in ("grafana_foundation_sdk", "grafana_client", "tokentrail.dashboards.build"):
        monkeypatch.setitem(sys.modules, name, None)


def test_generate_needs_no_grafana_sdk_and_writes_the_shipped_json(without_grafana_extra, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run("dashboards", "generate")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "tokentrail-dashboards").iterdir())
    assert written == ["expensive-requests.json", "overview.json", "owner-drilldown.json"]
    shipped = Path(tokentrail.dashboards.__file__).parent / "json"
    for name in written:  # the committed files, untouched in the package
        assert (tmp_path / "tokentrail-dashboards" / name).read_text() == (shipped / name).read_text()


def test_generate_into_a_file_is_one_line(tmp_path):
    target = tmp_path / "dash.json"
    target.write_text("{}")
    code, _, err = run("dashboards", "generate", "--out", str(target))
    assert code == 2 and err.count("\n") == 1 and "is a file" in err and target.read_text() == "{}"


def test_push_without_grafana_client_says_which_extra(without_grafana_extra):
    code, _, err = run("dashboards", "push", "--url", "http://127.0.0.1:9", "--token", "t")
    assert code == 2 and err == ("tokentrail: error: tokentrail dashboards push needs grafana-client:"
                                 " pip install 'tokentrail[grafana]'\n")


def test_push_takes_its_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_from_env")
    code, _, err = run("dashboards", "push", "--url", "http://127.0.0.1:9")  # nothing listens on port 9
    assert code == 2 and "cannot reach Grafana" in err
    monkeypatch.delenv("GRAFANA_TOKEN")
    code, _, err = run("dashboards", "push", "--url", "http://127.0.0.1:9")
    assert code == 2 and "$GRAFANA_TOKEN" in err


def test_shipped_uids_are_the_builders():
    from tokentrail.cli import dashboards
    from tokentrail.dashboards import build

    assert (dashboards.PROMETHEUS_UID, dashboards.TEMPO_UID) == (build.PROMETHEUS.uid, build.TEMPO.uid)


def test_rebuilding_the_dashboards_without_the_sdk_is_one_line():
    code = ("import runpy, sys; sys.modules['grafana_foundation_sdk'] = None; sys.argv = ['build', '--check'];"
            " runpy.run_module('tokentrail.dashboards.build', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("without it)") and "pip install 'tokentrail[grafana]'" in proc.stderr
