"""Pricing at the Collector: the OTTL of ``tokentrail collector pricing``, merged over the shipped
collector-config.yaml and run by the real Collector, gives every shared vector (tests/vectors/pricing.yaml)
the cost the Python processor gives it, to the nano-dollar, with the same attributes."""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from collector_fixtures import OVERLAY, SHIPPED_CONFIG, collector_binary, overlay_env
from tokentrail.cli import _common, collector
from tokentrail.processor.pricing import ottl, price_span
from tokentrail.processor.usage import Usage
from tokentrail.semconv import attributes as attr
from tokentrail.testing.collector import Collector, otlp_json, post_otlp, read_spans, validate

VECTORS = yaml.safe_load((Path(__file__).parent / "vectors" / "pricing.yaml").read_text())
CASES = {case["name"]: case for case in VECTORS["cases"]}
_FIELDS = {
    "provider": attr.GEN_AI_PROVIDER_NAME,
    "system": attr.GEN_AI_SYSTEM,
    "request": attr.GEN_AI_REQUEST_MODEL,
    "response": attr.GEN_AI_RESPONSE_MODEL,
    "operation": attr.GEN_AI_OPERATION_NAME,
    "cost_status": attr.TOKENTRAIL_COST_STATUS,
    "service_tier": attr.TOKENTRAIL_SERVICE_TIER,
}
_OPERATION = "chat"


def start_ns(text: str) -> int:
    """ISO-8601 UTC with up to nine fractional digits -> epoch nanoseconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    seconds = int(dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp())
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def span_attributes(case: dict) -> dict:
    out = {attr.GEN_AI_OPERATION_NAME: _OPERATION}
    out.update({_FIELDS[k]: case[k] for k in _FIELDS if k in case})
    if case["usage"]:  # raw values as given (a double, a string): Usage writes them, it does not check them
        out.update(Usage(**case["usage"]).to_attributes())
    return out


def python_cost(case: dict) -> dict:
    return price_span(span_attributes(case), start_ns(case["start"]))


def _check_expectation(case: dict, cost: dict) -> None:
    expect = case["expect"]
    if not expect:
        assert cost == {}
        return
    assert cost[attr.TOKENTRAIL_COST_STATUS] == expect["status"]
    if expect["status"] != "priced":
        assert attr.TOKENTRAIL_COST_NANO_USD not in cost and attr.GEN_AI_USAGE_COST_AMOUNT not in cost
        return
    assert cost[attr.TOKENTRAIL_COST_NANO_USD] == expect["nano_usd"]
    assert cost[attr.TOKENTRAIL_PRICING_TIER] == expect["tier"]
    assert cost[attr.GEN_AI_USAGE_COST_AMOUNT] == expect["nano_usd"] / 1e9


@pytest.mark.parametrize("name", CASES)
def test_python_processor_gives_every_vector(name):
    _check_expectation(CASES[name], python_cost(CASES[name]))


def test_the_vectors_include_the_worked_numbers():
    nano = {c["expect"].get("nano_usd") for c in CASES.values()}
    assert {11_550_000, 42_000_000, 1_545_000_000} <= nano
    assert any(c["usage"].get("cache_write_1h_tokens") for c in CASES.values())


# --- the generator, without a Collector ---------------------------------------------------------------------
def test_globs_expand_over_the_rate_card_and_a_pattern_matching_nothing_is_an_error():
    models = ottl.expand(["openai:gpt-4o-mini*"])
    assert ("openai", "gpt-4o-mini") in models and all(p == "openai" for p, _ in models)
    with pytest.raises(ottl.GenerateError):
        ottl.expand(["nosuchvendor-model-*"])


def test_a_colon_in_a_model_id_is_not_a_provider():
    assert ottl.split_spec("gpt-4o:extended") == (None, "gpt-4o:extended")
    assert ottl.split_spec("aws.bedrock:us.anthropic.claude-x-v1:0") == ("aws.bedrock", "us.anthropic.claude-x-v1:0")


def test_a_model_off_the_rate_card_gets_no_statement():
    config, skipped = ottl.processor_config([("openai", "gpt-unknown-9")])
    assert skipped == ["openai:gpt-unknown-9 (not on the rate card)"]
    statements = config["trace_statements"][0]["statements"]
    assert not any("gpt-unknown-9" in s for s in statements)


def run_cli(argv: list[str]) -> int:
    """``tokentrail collector ...`` through the command's own parser."""
    parser = argparse.ArgumentParser(prog="tokentrail")
    collector.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_the_processor_into_the_shipped_traces_pipeline(tmp_path):
    out = tmp_path / "pricing.yaml"
    assert run_cli(["collector", "pricing", "--models", "claude-sonnet-4-20250514", "--config", str(SHIPPED_CONFIG),
                    "-o", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert ottl.PROCESSOR in doc["processors"]
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())["service"]["pipelines"]["traces"]["processors"]
    procs = doc["service"]["pipelines"]["traces"]["processors"]
    assert procs == ottl.with_pricing(shipped)
    assert procs.index(ottl.PROCESSOR) < procs.index("tail_sampling")  # sampling reads the cost


def test_cli_without_models_or_ledger_is_a_usage_error(tmp_path):
    with pytest.raises(_common.CliError, match="no ledger"):
        run_cli(["collector", "pricing", "--ledger", str(tmp_path / "none.db")])


@pytest.mark.slow
def test_without_models_the_cli_prices_those_seen_in_the_ledger(tmp_path, capsys):
    from tokentrail.cli.demo import workload

    path = str(tmp_path / "demo.db")
    workload.run_workload(path, seed=7)
    seen = {m for (m,) in sqlite3.connect(path).execute(
        "SELECT DISTINCT lower(coalesce(response_model, request_model)) FROM spans WHERE llm = 1")}
    out = tmp_path / "pricing.yaml"
    assert run_cli(["collector", "pricing", "--ledger", path, "-o", str(out)]) == 0
    groups = yaml.safe_load(out.read_text())["processors"][ottl.PROCESSOR]["trace_statements"]
    statements = "\n".join(s for g in groups for s in g["statements"])
    generated = {m for m in seen if f'span.cache["m"] == "{m}"' in statements}
    unpriced = seen - generated  # named on stderr: the demo's self-hosted model is on no rate card
    assert generated and all(m in capsys.readouterr().err for m in unpriced)


# --- through the real Collector ------------------------------------------------------------------------------
def wait_for_spans(path: Path, count: int, limit_s: float = 60) -> list:
    deadline = time.monotonic() + limit_s
    while True:
        spans = read_spans(path)
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def pricing_config(tmp: Path, models: list[str], processors: list[str]) -> Path:
    config, _ = ottl.processor_config(ottl.expand(models))
    path = tmp / "pricing.yaml"
    path.write_text(ottl.render(config, pipelines={"traces": processors}))
    return path


@pytest.fixture(scope="module")
def collector_output(tmp_path_factory):
    """Every vector as an OTLP span through collector-config.yaml + the generated pricing (the test pipeline
    skips tail sampling, which would drop cheap traces)."""
    tmp = tmp_path_factory.mktemp("collector_pricing")
    binary = collector_binary()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ottl, "_BUCKET", 2)  # groups of two entries: every prefix split, alternation and escape runs
        pricing = pricing_config(tmp, VECTORS["models"], ["memory_limiter", ottl.PROCESSOR, "batch"])
    env, ports, traces_file = overlay_env(tmp)
    cases = [*CASES.values(), BATCH_TIER]
    spans = [(f"{i + 1:032x}", f"{i + 1:016x}", start_ns(c["start"]), span_attributes(c)) for i, c in enumerate(cases)]
    with Collector(binary, [SHIPPED_CONFIG, OVERLAY, pricing], env=env, health_port=ports["HEALTH"],
                   log_path=tmp / "collector.log") as collector:
        post_otlp(f"http://127.0.0.1:{ports['OTLP_HTTP']}", otlp_json(spans, service="checkout-node"))
        exported = wait_for_spans(traces_file, len(spans))
        log = collector.log_tail(200)
    by_id = {s.span_id: s for s in exported}
    return {c["name"]: by_id.get(span[1]) for c, span in zip(cases, spans)}, log


_COST_PREFIXES = ("gen_ai.usage.cost.", "tokentrail.cost.", "tokentrail.pricing.", "tokentrail.rate_card.")


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_the_collector_prices_every_vector_as_the_python_processor(collector_output, name):
    spans, log = collector_output
    span = spans[name]
    assert span is not None, f"span {name} not exported:\n{log}"
    sent = span_attributes(CASES[name])
    added = {k: v for k, v in span.attributes.items() if k not in sent}
    assert added == python_cost(CASES[name])
    _check_expectation(CASES[name], added)
    assert not [k for k in added if not k.startswith(_COST_PREFIXES)]


# Python prices a batch-tier call at batch rates; only standard rates are generated: unpriced, never a wrong price.
BATCH_TIER = {**CASES["anthropic_worked"], "name": "batch_tier", "service_tier": "batch"}


@pytest.mark.slow
def test_a_batch_tier_call_is_unpriced_at_the_collector(collector_output):
    spans, _ = collector_output
    assert python_cost(BATCH_TIER)[attr.TOKENTRAIL_COST_STATUS] == "priced"
    a = spans["batch_tier"].attributes
    assert a[attr.TOKENTRAIL_COST_STATUS] == "unpriced" and attr.TOKENTRAIL_COST_NANO_USD not in a


@pytest.mark.slow
def test_the_statements_raise_no_errors(collector_output):
    _, log = collector_output
    assert "failed to execute statement" not in log and "error" not in log.lower(), log
    ours = [line for line in log.splitlines() if ottl.PROCESSOR in line]
    assert not [line for line in ours if "rewrite them" in line]  # every path says its context (span.)


@pytest.mark.slow
def test_the_generated_file_validates_over_the_shipped_config(tmp_path):
    pricing = pricing_config(tmp_path, VECTORS["models"],
                             ottl.with_pricing(["memory_limiter", "tail_sampling", "batch"]))
    result = validate(collector_binary(), [SHIPPED_CONFIG, pricing])
    assert result.returncode == 0, result.stderr
