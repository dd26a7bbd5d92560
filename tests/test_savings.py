"""``tokentrail savings``: a real workload (the openai and anthropic SDKs over HTTP to the fake provider,
``tokentrail.retry`` and tasks ending ok, error and budget_exceeded, the pipeline, the ledger exporter) and
every opportunity's dollars recomputed here from the published per-million prices, to the nano-dollar;
the rows each one stands on selected again with SQL; and the demo showing every kind."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from math import floor
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan

import tokentrail
from tokentrail.cli import main
from tokentrail.cli.demo import workload
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.testing import anthropic_api, openai_api
from tokentrail.testing.server import FakeResponse

# Published prices, USD per million tokens: (input, cache read, output).
GPT_4O = (Fraction("2.50"), Fraction("1.25"), Fraction("10.00"))
GPT_4O_MINI = (Fraction("0.15"), Fraction("0.075"), Fraction("0.60"))
GPT_4O_MINI_BATCH = (Fraction("0.075"), Fraction("0.075"), Fraction("0.30"))  # the Batch API: 50%
CLAUDE_SONNET_45 = (Fraction(3), Fraction("0.30"), Fraction(15))
CLAUDE_HAIKU_45 = (Fraction(1), Fraction("0.10"), Fraction(5))
DAY_NS = 86400 * 10**9
CONFIG = "batch_eligible: [nightly-summaries]\n"


def cost(prices, input_tokens, output_tokens, cached=0) -> int:
    """nano-USD: each component (fresh input, cache reads, output) rounded half up to the nano-dollar."""
    fresh, read, out = prices

    def part(tokens, per_million):
        return int(tokens * per_million * 1000 + Fraction(1, 2))

    return part(input_tokens - cached, fresh) + part(cached, read) + part(output_tokens, out)


def _chat(client, model, *, max_tokens=None, stream=False, **usage):
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    if stream:
        extra.update(stream=True, stream_options={"include_usage": True})
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={openai_api.HEADER: json.dumps(usage)}, **extra)
    if stream:
        for _ in reply:
            pass
    return reply


def _moved(span: ReadableSpan, offset: int) -> ReadableSpan:
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=span.attributes, links=span.links, kind=span.kind, status=span.status,
                        events=span.events, start_time=span.start_time - offset, end_time=span.end_time - offset,
                        instrumentation_scope=span.instrumentation_scope)


# The support feature's tenants on one model: cache reads of 10,000-token prompts (ratios 90/80/70/10%).
SUPPORT_CACHED = {"acme": 9000, "initech": 8000, "umbrella": 7000, "globex": 1000}
NOTES_OUTPUTS = [100, 100, 120, 120, 150]  # and one 5,000-token answer with max_tokens, one without


@pytest.fixture
def ledger(tmp_path, pipeline, openai_client, anthropic_client, server) -> str:
    tracer = pipeline.tracer()
    earlier: set[int] = set()  # traces moved 10 days back: the previous period
    mini = "gpt-4o-mini"
    for tenant, cached in SUPPORT_CACHED.items():
        with tokentrail.attribute(tenant=tenant, feature="support"):
            for _ in range(2):
                _chat(openai_client, mini, prompt_tokens=10_000, cached_tokens=cached, completion_tokens=200)
    with tokentrail.attribute(tenant="acme", feature="digest"):  # a request tried three times, each billed
        with tracer.start_as_current_span("job digest"):
            for attempt in range(3):
                with tokentrail.retry(attempt):
                    _chat(openai_client, mini, prompt_tokens=3200, completion_tokens=400 + attempt)
    with tokentrail.attribute(tenant="acme", feature="extract"):  # stopped by its breaker: budget_exceeded
        with pytest.raises(tokentrail.BudgetExceeded), tokentrail.task("extract", id="extract-1", max_calls=2):
            for _ in range(3):
                _chat(openai_client, mini, prompt_tokens=5000, completion_tokens=300)
    with tokentrail.attribute(tenant="acme", feature="triage"):  # the agent failed: error
        with pytest.raises(RuntimeError), tokentrail.task("triage", id="triage-1"):
            _chat(openai_client, mini, prompt_tokens=2000, completion_tokens=100)
            _chat(openai_client, mini, prompt_tokens=2500, completion_tokens=100)
            raise RuntimeError("the tool failed")
        with tokentrail.task("triage", id="triage-2"):  # a run that ended ok: not waste
            _chat(openai_client, mini, prompt_tokens=2000, completion_tokens=100)
    with tokentrail.attribute(tenant="acme", feature="live"):  # the stream failed after its usage: billed
        with pytest.raises(Exception):
            _chat(openai_client, mini, stream=True, prompt_tokens=1000, completion_tokens=500, fail_after=6)
    with tokentrail.attribute(tenant="acme", feature="assistant"):  # prompts doubled against the previous period
        for prompt, past in [(2000, True)] * 5 + [(4000, False)] * 5:
            with tracer.start_as_current_span("POST /assistant") as span:
                _chat(openai_client, mini, prompt_tokens=prompt, completion_tokens=300)
            if past:
                earlier.add(span.get_span_context().trace_id)
    with tokentrail.attribute(tenant="acme", feature="summaries"):  # batch-eligible in the config
        for _ in range(3):
            with tokentrail.task("nightly-summaries"):
                _chat(openai_client, mini, max_tokens=1000, prompt_tokens=6000, completion_tokens=800)
    with tokentrail.attribute(tenant="acme", feature="notes"):  # one huge answer with no max_tokens
        for output in NOTES_OUTPUTS:
            _chat(openai_client, mini, prompt_tokens=500, completion_tokens=output)
        _chat(openai_client, mini, max_tokens=6000, prompt_tokens=500, completion_tokens=5000)
        _chat(openai_client, mini, prompt_tokens=500, completion_tokens=5000)
    with tokentrail.attribute(tenant="acme", feature="answers"):  # a premium model with a smaller sibling
        _chat(openai_client, "gpt-4o", prompt_tokens=2000, completion_tokens=500)
    with tokentrail.attribute(tenant="acme", feature="legal"):
        server.enqueue(FakeResponse(json=anthropic_api.message(model="claude-sonnet-4-5",
                                                               usage=anthropic_api.usage_block(8000, 1200))))
        anthropic_client.messages.create(model="claude-sonnet-4-5", max_tokens=2000,
                                         messages=[{"role": "user", "content": "Review this contract."}])
    with tokentrail.attribute(tenant="acme", feature="agent"), tracer.start_as_current_span("POST /agent"):
        _chat(openai_client, mini, prompt_tokens=1500, completion_tokens=100)  # step 1: never retried
        sdk = openai.OpenAI(base_url=openai_api.base_url(server), api_key="k", max_retries=2)
        for status in (500, 429):
            failed = openai_api.error(status)
            failed.headers["retry-after-ms"] = "5"  # keep the SDK's backoff short
            server.enqueue(failed)
        _chat(sdk, mini, prompt_tokens=1600, completion_tokens=100)  # step 2: the SDK retried it twice
        sdk.close()
    _chat(openai_client, "hooli-llama-70b", prompt_tokens=1000, completion_tokens=100)  # unpriced: left out
    spans = [_moved(s, 10 * DAY_NS) if s.context.trace_id in earlier else s for s in pipeline.spans()]
    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(spans).name == "SUCCESS"
    (tmp_path / "savings.yaml").write_text(CONFIG)
    return path


def _savings(capsys, ledger, *args):
    config = str(Path(ledger).with_name("savings.yaml"))
    assert main(["savings", "--since", "7d", "--config", config, "--ledger", ledger, *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _ids(ledger, where, *params):
    with sqlite3.connect(ledger) as conn:
        return sorted(r[0] for r in conn.execute(f"SELECT id FROM spans WHERE llm = 1 AND {where}", params))


def test_every_opportunity_to_the_nano_dollar_on_its_rows(ledger, capsys):
    data = _savings(capsys, ledger)
    found = {(o["kind"], o["what"], tuple(o["where"])): o for o in data["opportunities"]}
    expected: dict[tuple, tuple[int, list[int]]] = {}

    # waste: the runs that ended budget_exceeded / error (all their calls), the billed error, retried attempts
    expected["waste", "failed task runs", ("task=extract",)] = (
        2 * cost(GPT_4O_MINI, 5000, 300), _ids(ledger, "task_id = 'extract-1' AND cost_nano IS NOT NULL"))
    expected["waste", "failed task runs", ("task=triage",)] = (
        cost(GPT_4O_MINI, 2000, 100) + cost(GPT_4O_MINI, 2500, 100), _ids(ledger, "task_id = 'triage-1'"))
    expected["waste", "billed errors", ("feature=live",)] = (cost(GPT_4O_MINI, 1000, 500),
                                                             _ids(ledger, "feature = 'live'"))
    expected["waste", "retried attempts", ("feature=digest",)] = (
        cost(GPT_4O_MINI, 3200, 400) + cost(GPT_4O_MINI, 3200, 401),
        _ids(ledger, "feature = 'digest' AND COALESCE(retry_attempt, 0) < 2"))

    # caching: globex at 10% against the median of the four tenants' ratios, (70% + 80%) / 2 = 75%
    median = (Fraction(7, 10) + Fraction(8, 10)) / 2
    read = floor(median * 10_000)
    expected["caching", "low cache hits", ("tenant=globex", "feature=support", "model=gpt-4o-mini")] = (
        2 * (cost(GPT_4O_MINI, 10_000, 200, 1000) - cost(GPT_4O_MINI, 10_000, 200, read)),
        _ids(ledger, "tenant = 'globex'"))
    # prompt growth: 4,000 input tokens per request against 2,000 in the 7 days before: priced back to 2,000
    expected["caching", "prompt growth", ("feature=assistant",)] = (
        5 * (cost(GPT_4O_MINI, 4000, 300) - cost(GPT_4O_MINI, 2000, 300)),
        _ids(ledger, "feature = 'assistant' AND input_tokens = 4000"))

    # batch: the nightly-summaries task at the batch tier (half of the input and output prices)
    expected["batch", "batch tier", ("task=nightly-summaries",)] = (
        3 * (cost(GPT_4O_MINI, 6000, 800) - cost(GPT_4O_MINI_BATCH, 6000, 800)),
        _ids(ledger, "task_name = 'nightly-summaries'"))

    # output cap: p50 of [100, 100, 120, 120, 150, 5000, 5000] is 120 (nearest rank); the cap 4 x 120 = 480
    expected["output_cap", "output cap", ("feature=notes", "model=gpt-4o-mini")] = (
        cost(GPT_4O_MINI, 500, 5000) - cost(GPT_4O_MINI, 500, 480),
        _ids(ledger, "feature = 'notes' AND output_tokens = 5000 AND request_max_tokens IS NULL"))

    # tiering: the next smaller model of the family, on the same tokens
    expected["tiering", "cheaper model", ("feature=answers", "model=gpt-4o")] = (
        cost(GPT_4O, 2000, 500) - cost(GPT_4O_MINI, 2000, 500), _ids(ledger, "feature = 'answers'"))
    expected["tiering", "cheaper model", ("feature=legal", "model=claude-sonnet-4-5")] = (
        cost(CLAUDE_SONNET_45, 8000, 1200) - cost(CLAUDE_HAIKU_45, 8000, 1200), _ids(ledger, "feature = 'legal'"))

    # what the calls each stands on cost: waste is that spend; a lever's spend is its calls as recorded
    spend = {key: saving for key, (saving, _) in expected.items() if key[0] == "waste"}
    spend["caching", "low cache hits", ("tenant=globex", "feature=support", "model=gpt-4o-mini")] = \
        2 * cost(GPT_4O_MINI, 10_000, 200, 1000)
    spend["caching", "prompt growth", ("feature=assistant",)] = 5 * cost(GPT_4O_MINI, 4000, 300)
    spend["batch", "batch tier", ("task=nightly-summaries",)] = 3 * cost(GPT_4O_MINI, 6000, 800)
    spend["output_cap", "output cap", ("feature=notes", "model=gpt-4o-mini")] = cost(GPT_4O_MINI, 500, 5000)
    spend["tiering", "cheaper model", ("feature=answers", "model=gpt-4o")] = cost(GPT_4O, 2000, 500)
    spend["tiering", "cheaper model", ("feature=legal", "model=claude-sonnet-4-5")] = 42_000_000  # $0.042

    with sqlite3.connect(ledger) as conn:  # the SDK's retries are on its call's span: attempt 2 of nothing before
        assert conn.execute("SELECT retry_attempt FROM spans WHERE feature = 'agent' AND llm = 1 ORDER BY start_ns"
                            ).fetchall() == [(None,), (2,)]
    assert set(found) == set(expected)
    for key, (saving, rows) in expected.items():
        o = found[key]
        assert (o["saving_nano_usd"], o["spend_nano_usd"], o["rows"], o["calls"]) == (
            saving, spend[key], rows, len(rows)), key
    assert found["tiering", "cheaper model", ("feature=legal", "model=claude-sonnet-4-5")]["detail"].startswith(
        "on claude-haiku-4-5: $0.014000 instead of $0.042000 (same tokenizer)")
    assert "not a quality claim" in found["tiering", "cheaper model", ("feature=answers", "model=gpt-4o")]["detail"]
    # ranked by dollars, largest first
    savings = [o["saving_nano_usd"] for o in data["opportunities"]]
    assert savings == sorted(savings, reverse=True) and [o["rank"] for o in data["opportunities"]] == list(
        range(1, len(savings) + 1))
    # what could not be priced is counted, never $0
    assert (data["unpriced_calls"], data["no_usage_calls"], data["blocked_calls"]) == (1, 0, 1)


def test_savings_table_csv_and_where(ledger, capsys):
    config = str(Path(ledger).with_name("savings.yaml"))
    assert main(["savings", "--since", "7d", "--config", config, "--ledger", ledger]) == 0
    table = capsys.readouterr().out
    [line] = [x for x in table.splitlines() if "failed task runs" in x and "task=triage" in x]
    triage = cost(GPT_4O_MINI, 2000, 100) + cost(GPT_4O_MINI, 2500, 100)
    assert f"${Decimal(triage) / 10**9:.6f}" == "$0.000795" and "$0.000795" in line and "1 run ended error" in line
    assert "1 unpriced, 1 blocked left out (no cost, never $0)" in table
    assert main(["savings", "--since", "7d", "--config", config, "--ledger", ledger, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "rank,kind,what,owner,calls,saving_usd,saving_nano_usd,spend_nano_usd,detail"
    assert any(x.startswith("1,") for x in lines[1:])
    data = _savings(capsys, ledger, "--where", "feature=notes")
    assert [o["kind"] for o in data["opportunities"]] == ["output_cap"]
    every = _savings(capsys, ledger)["opportunities"]
    waste = _savings(capsys, ledger, "--kind", "waste", "-n", "2")["opportunities"]
    assert waste == [o for o in every if o["kind"] == "waste"][:2]  # the global ranks kept
    assert main(["savings", "--kind", "cheap", "--ledger", ledger]) == 2
    assert "unknown kind 'cheap' in --kind" in capsys.readouterr().err


def test_savings_without_config_says_how_and_bad_config_is_one_line(ledger, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TOKENTRAIL_SAVINGS", raising=False)
    assert main(["savings", "--since", "7d", "--ledger", ledger]) == 0
    out = capsys.readouterr().out
    assert "batch tier" not in out and "no batch_eligible features or tasks" in out
    monkeypatch.setenv("TOKENTRAIL_SAVINGS", str(tmp_path / "savings.yaml"))  # the environment names it
    assert main(["savings", "--since", "7d", "--ledger", ledger]) == 0
    assert "task=nightly-summaries" in capsys.readouterr().out
    for text, message in [("batch_eligible: nightly", "batch_eligible must be a list"), ("[1, 2", "not valid YAML"),
                          ("colour: red", "expected a mapping with batch_eligible")]:
        (tmp_path / "bad.yaml").write_text(text)
        assert main(["savings", "--config", str(tmp_path / "bad.yaml"), "--ledger", ledger]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tokentrail: error: savings config") and message in err and err.count("\n") == 1
    assert main(["savings", "--config", str(tmp_path / "none.yaml"), "--ledger", ledger]) == 2
    assert "cannot read savings config" in capsys.readouterr().err
    assert main(["savings", "--config", "\x00", "--ledger", ledger]) == 2  # a NUL in the path: one line too
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_savings_as_a_real_command(ledger):
    exe = shutil.which("tokentrail") or str(Path(sys.executable).with_name("tokentrail"))
    config = str(Path(ledger).with_name("savings.yaml"))
    proc = subprocess.run([exe, "savings", "--since", "7d", "--config", config, "--ledger", ledger, "--format",
                           "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [batch] = [o for o in json.loads(proc.stdout)["opportunities"] if o["kind"] == "batch"]
    assert batch["saving_nano_usd"] == 3 * (cost(GPT_4O_MINI, 6000, 800) - cost(GPT_4O_MINI_BATCH, 6000, 800))


def test_the_demo_shows_every_kind_of_opportunity(tmp_path, capsys):
    path = str(tmp_path / "tokentrail.db")
    workload.run_workload(path, seed=7)
    assert main(["savings", "--ledger", path, "--format", "json"]) == 0  # its config is beside the ledger
    data = json.loads(capsys.readouterr().out)
    whats = {(o["kind"], o["what"]) for o in data["opportunities"]}
    assert whats >= {("waste", "failed task runs"), ("waste", "billed errors"), ("waste", "retried attempts"),
                     ("caching", "low cache hits"), ("caching", "prompt growth"), ("batch", "batch tier"),
                     ("output_cap", "output cap"), ("tiering", "cheaper model")}
    assert all(o["saving_nano_usd"] > 0 and o["calls"] > 0 for o in data["opportunities"])


def test_the_html_view_shows_the_largest_opportunities(ledger, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_SAVINGS", str(tmp_path / "savings.yaml"))
    top = _savings(capsys, ledger)["opportunities"][:8]
    assert main(["view", "--since", "7d", "--ledger", ledger, "--out", str(tmp_path / "v.html")]) == 0
    page = (tmp_path / "v.html").read_text()
    shown = re.findall(r'data-testid="savings-saving">([^<]+)<', page)
    assert shown == [f"${Decimal(o['saving_nano_usd']) / 10**9:,.6f}" for o in top] and len(shown) == 8
    assert "Alternatives that overlap, not a sum" in page
