"""``tokentrail whatif``: a real workload (the openai and anthropic SDKs over HTTP to the fake provider, the
pipeline, the ledger exporter) priced again on another model, tier or provider; every dollar figure checked
to the nano-dollar against the published per-million prices written here."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan

import tokentrail
from tokentrail.cli import main
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.processor import pricing
from tokentrail.testing import anthropic_api, openai_api
from tokentrail.testing.server import FakeResponse

# Published prices, USD per million tokens: (input, cache read, output).
GPT_4O = (Fraction("2.50"), Fraction("1.25"), Fraction("10.00"))
GPT_4O_BATCH = (Fraction("1.25"), Fraction("1.25"), Fraction("5.00"))  # the Batch API's half (cached: as listed)
GPT_4O_MINI = (Fraction("0.15"), Fraction("0.075"), Fraction("0.60"))
GPT_41_MINI = (Fraction("0.40"), Fraction("0.10"), Fraction("1.60"))
CLAUDE_SONNET_4 = (Fraction(3), Fraction("0.30"), Fraction(15))  # cache reads 0.1x input
CLAUDE_HAIKU_45 = (Fraction(1), Fraction("0.10"), Fraction(5))
DAY_NS = 86400 * 10**9


def cost(prices, input_tokens, output_tokens, cached=0) -> int:
    """nano-USD: each component (fresh input, cache reads, output) rounded half up to the nano-dollar."""
    fresh, read, out = prices

    def part(tokens, per_million):
        return int(tokens * per_million * 1000 + Fraction(1, 2))  # $/M * 1e9 / 1e6 = nano per token * 1000

    return part(input_tokens - cached, fresh) + part(cached, read) + part(output_tokens, out)


def _chat(client, model, feature, **usage):
    with tokentrail.attribute(tenant="acme", feature=feature):
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                              extra_headers={openai_api.HEADER: json.dumps(usage)})


def _moved(span: ReadableSpan, offset: int) -> ReadableSpan:
    """The span ``offset`` ns earlier (a call made days ago)."""
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=span.attributes, links=span.links, kind=span.kind, status=span.status,
                        events=span.events, start_time=span.start_time - offset, end_time=span.end_time - offset,
                        instrumentation_scope=span.instrumentation_scope)


@pytest.fixture
def ledger(tmp_path, pipeline, openai_client, anthropic_client, server) -> str:
    _chat(openai_client, "gpt-4o", "answers", prompt_tokens=2000, completion_tokens=500)  # $0.0100
    _chat(openai_client, "gpt-4o", "answers", prompt_tokens=10_000, cached_tokens=2000, completion_tokens=1200)
    with pytest.raises(Exception):  # failed, no usage: counted, never $0
        _chat(openai_client, "gpt-4o", "answers", status=500)
    _chat(openai_client, "gpt-4o-mini", "search", prompt_tokens=4000, completion_tokens=300)
    _chat(openai_client, "hooli-llama-70b", "onprem", prompt_tokens=1000, completion_tokens=100)  # unpriced
    with tokentrail.attribute(tenant="acme", feature="legal"):  # Claude Sonnet 4: 8,000 in / 1,200 out = $0.042
        server.enqueue(FakeResponse(json=anthropic_api.message(usage=anthropic_api.usage_block(8000, 1200))))
        anthropic_client.messages.create(model="claude-sonnet-4-20250514", max_tokens=2000,
                                         messages=[{"role": "user", "content": "Review this contract."}])
    with pytest.raises(tokentrail.BudgetExceeded), tokentrail.task("capped", max_calls=0):
        _chat(openai_client, "gpt-4o", "answers", prompt_tokens=10, completion_tokens=1)  # stopped before sending
    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(pipeline.spans()).name == "SUCCESS"
    return path


def _json(capsys, *argv):
    assert main([*argv, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_whatif_by_feature_on_another_model_to_the_nano_dollar(ledger, capsys):
    data = _json(capsys, "whatif", "--by", "feature", "--model", "gpt-4.1-mini", "--ledger", ledger)
    rows = {r["feature"]: r for r in data["rows"]}
    assert set(rows) == {"answers", "search", "onprem", "legal"}

    answers = rows["answers"]
    now = cost(GPT_4O, 2000, 500) + cost(GPT_4O, 10_000, 1200, cached=2000)
    then = cost(GPT_41_MINI, 2000, 500) + cost(GPT_41_MINI, 10_000, 1200, cached=2000)  # cache mix kept
    assert now == 10_000_000 + 34_500_000 and then == 1_600_000 + 5_320_000
    assert (answers["calls"], answers["compared_calls"]) == (4, 2)
    assert (answers["current_nano_usd"], answers["whatif_nano_usd"]) == (now, then)
    assert answers["change_nano_usd"] == then - now
    assert (answers["no_usage_calls"], answers["blocked_calls"]) == (1, 1)
    assert answers["approximate"] is False  # gpt-4o and gpt-4.1-mini share a tokenizer

    search = rows["search"]
    assert (search["current_nano_usd"], search["whatif_nano_usd"]) == (cost(GPT_4O_MINI, 4000, 300),
                                                                       cost(GPT_41_MINI, 4000, 300))

    legal = rows["legal"]  # Claude's tokens counted by another tokenizer: flagged, still priced
    assert legal["current_nano_usd"] == cost(CLAUDE_SONNET_4, 8000, 1200) == 42_000_000
    assert legal["whatif_nano_usd"] == cost(GPT_41_MINI, 8000, 1200)
    assert legal["approximate"] is True and legal["approximate_calls"] == 1

    onprem = rows["onprem"]  # no current cost: nothing compared, never $0; its tokens on the target apart
    assert (onprem["current_nano_usd"], onprem["whatif_nano_usd"], onprem["change_nano_usd"]) == (None, None, None)
    assert onprem["unpriced_calls"] == 1 and onprem["whatif_of_unpriced_nano_usd"] == cost(GPT_41_MINI, 1000, 100)

    total = data["total"]
    assert total["current_nano_usd"] == sum(rows[f]["current_nano_usd"] for f in ("answers", "search", "legal"))
    assert total["whatif_nano_usd"] == then + cost(GPT_41_MINI, 4000, 300) + cost(GPT_41_MINI, 8000, 1200)
    assert (total["calls"], total["compared_calls"], total["approximate_calls"]) == (7, 4, 1)

    code = main(["whatif", "--by", "feature", "--model", "gpt-4.1-mini", "--ledger", ledger])
    table = capsys.readouterr().out
    assert code == 0
    [line] = [x for x in table.splitlines() if x.startswith("onprem")]
    assert "no cost (1 unpriced)" in line and "$0.000000" not in line
    [line] = [x for x in table.splitlines() if x.startswith("answers")]
    assert "$0.044500" in line and "$0.006920" in line and "-$0.037580" in line
    assert "approximate: other tokenizer (1 calls)" in next(x for x in table.splitlines() if x.startswith("legal"))


def test_whatif_at_the_batch_tier_and_on_another_family(ledger, capsys):
    data = _json(capsys, "whatif", "--by", "model", "--tier", "batch", "--ledger", ledger)
    rows = {r["model"]: r for r in data["rows"]}
    assert rows["gpt-4o"]["whatif_nano_usd"] == cost(GPT_4O_BATCH, 2000, 500) + cost(GPT_4O_BATCH, 10_000, 1200, 2000)
    assert rows["gpt-4o-mini"]["whatif_nano_usd"] == cost(GPT_4O_MINI, 4000, 300) // 2
    assert rows["claude-sonnet-4-20250514"]["whatif_nano_usd"] == 21_000_000  # Message Batches: 50% of $0.042
    assert not any(r["approximate"] for r in data["rows"])  # same models: exact

    data = _json(capsys, "whatif", "--by", "feature", "--model", "claude-haiku-4-5", "--where", "feature=answers",
                 "--ledger", ledger)
    [row] = data["rows"]
    assert row["whatif_nano_usd"] == cost(CLAUDE_HAIKU_45, 2000, 500) + cost(CLAUDE_HAIKU_45, 10_000, 1200, 2000)
    assert row["approximate_calls"] == 2  # OpenAI's tokens on Claude


def test_whatif_on_another_provider(ledger, capsys):
    data = _json(capsys, "whatif", "--by", "model", "--provider", "azure", "--ledger", ledger)
    rows = {r["model"]: r for r in data["rows"]}
    gpt_4o = cost(GPT_4O, 2000, 500) + cost(GPT_4O, 10_000, 1200, cached=2000)  # Azure OpenAI: OpenAI's prices
    assert (rows["gpt-4o"]["current_nano_usd"], rows["gpt-4o"]["whatif_nano_usd"]) == (gpt_4o, gpt_4o)
    claude = rows["claude-sonnet-4-20250514"]  # the card bills Claude there at Anthropic's list price
    assert (claude["current_nano_usd"], claude["whatif_nano_usd"], claude["approximate"]) == (42_000_000, 42_000_000,
                                                                                            False)
    onprem = rows["hooli-llama-70b"]  # priced nowhere: counted, never $0
    assert (onprem["unpriced_calls"], onprem["whatif_of_unpriced_nano_usd"]) == (1, None)


def test_whatif_compares_with_the_net_cost_after_a_reprice(ledger, tmp_path, capsys):
    card = tmp_path / "discount.yaml"
    card.write_text("discounts:\n  - provider: openai\n    model: gpt-4o\n    percent: 10\n    source: negotiated\n")
    assert main(["reprice", "--rate-card", str(card), "--ledger", ledger]) == 0
    capsys.readouterr()
    data = _json(capsys, "whatif", "--by", "feature", "--model", "gpt-4.1-mini", "--where", "feature=answers",
                 "--ledger", ledger)
    [row] = data["rows"]
    net = (cost((Fraction("2.25"), Fraction("1.125"), Fraction(9)), 2000, 500)
           + cost((Fraction("2.25"), Fraction("1.125"), Fraction(9)), 10_000, 1200, cached=2000))  # 10% off gpt-4o
    assert net == 40_050_000 and row["current_nano_usd"] == net
    assert row["whatif_nano_usd"] == cost(GPT_41_MINI, 2000, 500) + cost(GPT_41_MINI, 10_000, 1200, cached=2000)


def test_whatif_prices_each_call_at_the_price_in_force_at_its_time(tmp_path, pipeline, openai_client, capsys,
                                                                  monkeypatch):
    """A price change of the target model between two calls: each is priced at its own time's price."""
    for _ in range(2):
        _chat(openai_client, "gpt-4o", "answers", prompt_tokens=2000, completion_tokens=500)
    spans = pipeline.spans()
    early = {s.context.trace_id for s in spans if s.name.startswith("chat")}
    early = {sorted(early)[0]}
    moved = [_moved(s, 10 * DAY_NS) if s.context.trace_id in early else s for s in spans]
    path = str(tmp_path / "l.db")
    LedgerSpanExporter(path).export(moved)
    change = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=5)).date().isoformat()
    card = tmp_path / "card.yaml"
    card.write_text(f"models:\n  - provider: openai\n    model: gpt-4.1-mini\n"
                    f"    prices: {{input: 0.20, output: 0.80}}\n    effective_from: {change}\n    source: a price cut\n")
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    try:
        data = _json(capsys, "whatif", "--by", "day", "--model", "gpt-4.1-mini", "--ledger", path)
    finally:
        monkeypatch.delenv(pricing.ENV_RATE_CARD)
        pricing.reload()
    before, after = sorted(data["rows"], key=lambda r: r["day"])
    cut = (Fraction("0.20"), Fraction("0.05"), Fraction("0.80"))
    assert before["whatif_nano_usd"] == cost(GPT_41_MINI, 2000, 500) == 1_600_000
    assert after["whatif_nano_usd"] == cost(cut, 2000, 500) == 800_000
    assert before["current_nano_usd"] == after["current_nano_usd"] == 10_000_000


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt-9"], "no price for model 'gpt-9' on the rate card"),
    (["--model", "claude-haiku-4-5", "--tier", "flex"], "no flex price for 'claude-haiku-4-5'"),
    (["--tier", "cheap"], "unknown tier 'cheap'"),
    ([], "say what to price with"),
    (["--provider", "nowhere"], "the rate card prices none of the 4 calls on provider nowhere"),
    (["--model", "gpt-4o", "--by", "colour"], "unknown field 'colour' in --by"),
])
def test_whatif_bad_input_is_one_line(ledger, capsys, args, message):
    assert main(["whatif", *args, "--ledger", ledger]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("tokentrail: error: ") and message in err and err.count("\n") == 1 and out == ""


@pytest.mark.slow
def test_whatif_as_a_real_command_csv(ledger):
    exe = shutil.which("tokentrail") or str(Path(sys.executable).with_name("tokentrail"))
    proc = subprocess.run([exe, "whatif", "--by", "feature", "--model", "gpt-4o-mini", "--format", "csv",
                           "--ledger", ledger], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["feature"]: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    assert int(rows["answers"]["whatif_nano_usd"]) == cost(GPT_4O_MINI, 2000, 500) + cost(GPT_4O_MINI, 10_000, 1200,
                                                                                             2000)
    assert rows["onprem"]["current_nano_usd"] == "" and rows["onprem"]["unpriced_calls"] == "1"
    assert int(rows["TOTAL"]["calls"]) == 7


_WORDS = st.sampled_from(["gpt-4o", "gpt-4.1-mini", "claude-haiku-4-5", "hooli-llama-70b", "gpt-9", "batch", "flex",
                          "priority", "standard", "cheap", "openai", "azure", "anthropic", "nowhere", "feature",
                          "tenant,feature", ",", "colour", "7d", "0001-01-01", "9999-12-31", "", " ", "tenant=",
                          "feature=answers", "=x", "∞", "\x00", "-1", "0", "waste,batch", "tiering", "json", "csv"])
_TEXT = st.one_of(_WORDS, st.text(max_size=10))
_OPTIONS = {"whatif": ["--by", "--model", "--tier", "--provider", "--since", "--until", "--where", "--format"],
            "savings": ["--since", "--until", "--where", "--config", "--kind", "-n", "--format"]}


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_whatif_and_savings_command_line_is_exit_0_or_2_in_one_line(ledger, data):
    command = data.draw(st.sampled_from(sorted(_OPTIONS)))
    argv = [command]
    for option in data.draw(st.lists(st.sampled_from(_OPTIONS[command]), max_size=4)):
        argv += [option, data.draw(_TEXT)]
    try:
        code, err = _run([*argv, "--ledger", ledger])
    except Exception as exc:  # a traceback the user would have seen
        pytest.fail(f"tokentrail {argv!r} raised {exc!r}")
    assert code in (0, 2), (argv, code, err)
    if code == 2 and "usage:" not in err:
        assert err.startswith("tokentrail: error: ") and err.count("\n") == 1, (argv, err)
