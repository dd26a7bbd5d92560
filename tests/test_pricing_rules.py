"""Pricing rules beyond the worked numbers: fees, tiers, time-of-day prices, overlays, span fast path."""

from __future__ import annotations

import datetime as dt
import random
import re
from decimal import Decimal

import pytest
import yaml

from tokentrail import state
from tokentrail.processor import pricing
from tokentrail.processor.pricing import overlay as ov
from tokentrail.processor.pricing import quote, rules
from tokentrail.processor.usage import InvalidUsage, Usage, normalise_model_id
from tokentrail.semconv import attributes as attr

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def _fresh_card(monkeypatch):
    monkeypatch.delenv(pricing.ENV_RATE_CARD, raising=False)
    pricing.reload()
    yield
    monkeypatch.delenv(pricing.ENV_RATE_CARD, raising=False)
    pricing.reload()


def use_card(monkeypatch, tmp_path, text: str) -> None:
    path = tmp_path / "rate-card.yaml"
    path.write_text(text)
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(path))
    pricing.reload()


def test_rate_card_version_names_data_and_overlay():
    assert re.fullmatch(r"genai-prices-[\w.]+\+ov\.[0-9a-f]{8}", pricing.rate_card_version())


def test_bundled_overlay_entries_all_cite_a_source():
    raw = yaml.safe_load(ov.BUNDLED_PATH.read_text())
    entries = [*raw.get("models", []), *(raw.get("aliases") or []), *(raw.get("discounts") or [])]
    assert entries
    assert all(str(e.get("source", "")).strip() for e in entries)
    ov.load(ov.BUNDLED_PATH, origin="overlay", require_source=True)  # and it parses


def test_web_search_fee_per_call():
    # Anthropic web search: $10 per 1,000 searches, billed as a fee beside the tokens.
    usage = Usage(input_tokens=1_000, output_tokens=100, tool_calls={"web_search": 3})
    q = quote("claude-sonnet-4", usage, provider="anthropic")
    assert q.components["fees"] == 30_000_000  # $0.03
    assert q.total_usd == Decimal("0.0345")
    span = {
        attr.GEN_AI_PROVIDER_NAME: "anthropic",
        attr.GEN_AI_REQUEST_MODEL: "claude-sonnet-4",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 1_000,
        attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
        attr.TOKENTRAIL_USAGE_TOOL_CALLS: "web_search=3",
    }
    out = pricing.price_span(span, None)
    assert out[attr.TOKENTRAIL_COST_FEES] == pytest.approx(0.03)
    assert out[attr.TOKENTRAIL_COST_NANO_USD] == 34_500_000


def test_cache_creation_attribute_is_read_as_cache_write():
    span = {
        attr.GEN_AI_SYSTEM: "anthropic",
        attr.GEN_AI_REQUEST_MODEL: "claude-sonnet-4-20250514",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 10_000,
        attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 10_000,
        attr.GEN_AI_USAGE_OUTPUT_TOKENS: 0,
    }
    out = pricing.price_span(span, None)
    assert out[attr.TOKENTRAIL_COST_CACHE_WRITE] == pytest.approx(0.0375)  # 1.25 x $3 / M


def test_priority_and_flex_from_the_data_and_fallbacks(caplog):
    usage = Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=1_200)
    late = dt.datetime(2026, 11, 1, tzinfo=UTC)
    early = dt.datetime(2026, 1, 1, tzinfo=UTC)
    # genai-prices lists gpt-5.4-mini priority at 2x and flex at 0.5x from 2026-10-12.
    prio = quote("gpt-5.4-mini", usage, provider="openai", at=late, service_tier="priority")
    assert (prio.total_usd, prio.tier) == (Decimal("0.0231"), "priority")
    flex = quote("gpt-5.4-mini", usage, provider="openai", at=late, service_tier="flex")
    assert (flex.total_usd, flex.tier) == (Decimal("0.005775"), "flex")
    # Before the data has a priority price we charge standard and say so in the tier.
    old_prio = quote("gpt-5.4-mini", usage, provider="openai", at=early, service_tier="priority")
    assert (old_prio.total_usd, old_prio.tier) == (Decimal("0.01155"), "standard")
    # OpenAI flex without its own price is billed at batch rates (50%).
    old_flex = quote("gpt-5.4-mini", usage, provider="openai", at=early, service_tier="flex")
    assert (old_flex.total_usd, old_flex.tier) == (Decimal("0.005775"), "flex")
    # Elsewhere a flex price the data does not know is charged at standard, and labelled so.
    bedrock = quote("us.anthropic.claude-sonnet-4-20250514-v1:0", Usage(input_tokens=8_000, output_tokens=1_200),
                    provider="aws.bedrock", service_tier="flex")
    assert (bedrock.total_usd, bedrock.tier) == (Decimal("0.042"), "standard")


def test_batch_halves_long_context_and_cache_prices_too():
    q = quote("claude-sonnet-4", Usage(input_tokens=250_000, output_tokens=2_000), provider="anthropic",
              service_tier="batch", at=dt.datetime(2026, 1, 1))
    assert q.total_usd == Decimal("0.7725")
    assert q.tier == "batch,context>200k"


def test_time_of_day_prices():
    # DeepSeek off-peak (16:30-00:30 UTC) is half price; priced per call, not memoised per period.
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    peak = quote("deepseek-chat", usage, provider="deepseek", at=dt.datetime(2025, 9, 1, 2, tzinfo=UTC))
    off = quote("deepseek-chat", usage, provider="deepseek", at=dt.datetime(2025, 9, 1, 20, tzinfo=UTC))
    assert off.total_nano_usd * 2 == peak.total_nano_usd


def test_bedrock_long_context_tiers_from_the_overlay():
    big = Usage(input_tokens=250_000, output_tokens=2_000)
    glob = quote("global.anthropic.claude-sonnet-4-5-20250929-v1:0", big, provider="aws.bedrock")
    geo = quote("us.anthropic.claude-sonnet-4-5-20250929-v1:0", big, provider="aws.bedrock")
    assert (glob.total_usd, glob.tier) == (Decimal("1.545"), "standard,context>200k")
    assert (geo.total_usd, geo.tier) == (Decimal("1.6995"), "standard,context>200k")
    # an ARN of an inference profile names the same model
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0"
    assert quote(arn, big, provider="aws.bedrock").total_usd == Decimal("1.545")


def test_naive_datetimes_and_nanoseconds_agree():
    usage = Usage(input_tokens=1_000_000)
    naive = quote("o3", usage, provider="openai", at=dt.datetime(2025, 6, 1))
    ns = quote("o3", usage, provider="openai", at=int(dt.datetime(2025, 6, 1, tzinfo=UTC).timestamp()) * 10**9)
    assert naive.total_nano_usd == ns.total_nano_usd == 10 * 10**9


def test_user_overlay_corrects_some_prices_and_keeps_the_rest(monkeypatch, tmp_path):
    use_card(
        monkeypatch,
        tmp_path,
        """
models:
  - provider: openai
    model: gpt-4o
    prices: {input: 2.0}
    fees: {web_search: 0.025}
    source: invoice 2026-04
""",
    )
    q = quote("gpt-4o-2024-08-06", Usage(input_tokens=1_000_000, output_tokens=1_000_000,
                                         tool_calls={"web_search": 2}), provider="openai")
    assert q.components["input"] == 2_000_000_000
    assert q.components["output"] == 10_000_000_000  # from genai-prices
    assert q.components["fees"] == 50_000_000
    assert any("invoice 2026-04" in s for s in q.sources)


def test_discount_window_and_model_glob(monkeypatch, tmp_path):
    use_card(
        monkeypatch,
        tmp_path,
        """
discounts:
  - provider: anthropic
    model: "claude-sonnet-4*"
    percent: 12.5
    effective_from: 2026-01-01
""",
    )
    usage = Usage(input_tokens=8_000, output_tokens=1_200)
    before = quote("claude-sonnet-4", usage, provider="anthropic", at=dt.datetime(2025, 12, 31, 23, tzinfo=UTC))
    after = quote("claude-sonnet-4", usage, provider="anthropic", at=dt.datetime(2026, 1, 1, 1, tzinfo=UTC))
    other = quote("claude-haiku-4-5", usage, provider="anthropic", at=dt.datetime(2026, 1, 1, 1, tzinfo=UTC))
    assert before.total_usd == Decimal("0.042")
    assert after.total_usd == Decimal("0.03675")
    assert other.total_usd == Decimal("0.014")  # $1/$5, not discounted


def test_alias_to_another_provider(monkeypatch, tmp_path):
    # An internal gateway name that is really Claude on Bedrock.
    use_card(
        monkeypatch,
        tmp_path,
        """
aliases:
  - name: house-smart
    model: us.anthropic.claude-sonnet-4-20250514-v1:0
    to_provider: aws.bedrock
""",
    )
    q = quote("house-smart", Usage(input_tokens=8_000, output_tokens=1_200), provider="openai")
    assert q.total_usd == Decimal("0.042")
    assert q.pricing_model.startswith("aws/")


def test_without_a_provider_the_vendors_own_table_and_the_overlays_apply(monkeypatch, tmp_path):
    # What `tokentrail price MODEL` does: no provider given.
    use_card(
        monkeypatch,
        tmp_path,
        """
models:
  - {provider: vllm, model: acme-llama-70b, prices: {input: 0.5, output: 1.5}}
aliases:
  - {provider: azure.ai.openai, name: prod-chat-eastus, model: gpt-4o}
""",
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert quote("acme-llama-70b", usage).total_usd == Decimal("2")
    assert quote("prod-chat-eastus", usage).pricing_model == "openai/gpt-4o"
    assert quote("claude-sonnet-4", Usage(input_tokens=250_000, output_tokens=2_000)).total_usd == Decimal("1.545")
    assert quote("mistral-large-latest", usage).pricing_model.startswith("mistral/")
    # an open model served by many hosts at different prices is not guessed
    assert quote("llama-3.3-70b-versatile", usage).status == "unpriced"
    assert quote("llama-3.3-70b-versatile", usage, provider="groq").status == "priced"


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: [{model: x, prices: {inptu: 1}}]", "unknown price fields"),
        ("models: [{model: x}]", "gives no prices"),
        ("discounts: [{percent: 140}]", "between 0 and 100"),
        ("models: [{model: x, prices: {input: 1}, effective_from: 2026-02-01, effective_until: 2026-01-01}]", "after"),
        ("surprise: 1", "unknown top-level"),
    ],
)
def test_overlay_errors_are_clear(text, message):
    with pytest.raises(ov.OverlayError, match=message):
        ov.parse(yaml.safe_load(text), origin="user", require_source=False)


def test_missing_user_card_file_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(tmp_path / "nope.yaml"))
    pricing.reload()
    assert pricing.user_overlay_error()
    assert quote("gpt-4o", Usage(input_tokens=2_000, output_tokens=500), provider="openai").priced


def test_quote_of_inconsistent_usage_is_no_usage():
    q = quote("gpt-4o", Usage(input_tokens=10, cache_read_tokens=20), provider="openai")
    assert q.status == "no_usage" and q.total_nano_usd is None


def test_models_listed_free_cost_zero_but_unmeasured_units_are_unpriced():
    usage = Usage(input_tokens=2_000, output_tokens=500)
    free = quote("allenai/molmo-7b-d:free", usage, provider="openrouter")
    assert free.status == "priced" and free.total_nano_usd == 0
    # whisper-1 is billed per audio hour, which token usage cannot price
    assert quote("whisper-1", usage, provider="openai").status == "unpriced"


# -- price_span's fast path agrees with Usage.from_attributes + quote ---------------------------


def _random_span(rng: random.Random) -> dict:
    def count(hi):
        roll = rng.random()
        if roll < 0.03:
            return rng.choice([-1, "12", 3.0, 2.5, True, None])
        return rng.randint(0, hi)

    provider, model = rng.choice(
        [("openai", "gpt-5.4-mini"), ("anthropic", "claude-sonnet-4"),
         ("aws.bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0")]
    )
    span = {attr.GEN_AI_PROVIDER_NAME: provider, attr.GEN_AI_REQUEST_MODEL: model}
    inp = count(300_000)
    span[attr.GEN_AI_USAGE_INPUT_TOKENS] = inp
    span[attr.GEN_AI_USAGE_OUTPUT_TOKENS] = count(5_000)
    cap = inp if isinstance(inp, int) and not isinstance(inp, bool) and inp > 0 else 10
    for name in (attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
                 attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS, attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS):
        if rng.random() < 0.5:
            span[name] = count(cap // 2)
    if rng.random() < 0.1:
        span[attr.TOKENTRAIL_USAGE_TOOL_CALLS] = "web_search=2"
    return {k: v for k, v in span.items() if v is not None}


def test_price_span_fast_path_matches_usage_path():
    rng = random.Random(7)
    at = int(dt.datetime(2026, 5, 1, tzinfo=UTC).timestamp()) * 10**9
    seen = set()
    for _ in range(3_000):
        span = _random_span(rng)
        out = pricing.price_span(span, at)
        try:
            usage = Usage.from_attributes(span)
        except InvalidUsage:
            usage = None
        if usage is None:
            assert out == {attr.TOKENTRAIL_COST_STATUS: "no_usage"}, span
            seen.add("no_usage")
            continue
        q = quote(span[attr.GEN_AI_REQUEST_MODEL], usage, provider=span[attr.GEN_AI_PROVIDER_NAME], at=at)
        assert out[attr.TOKENTRAIL_COST_NANO_USD] == q.total_nano_usd, span
        assert out[attr.TOKENTRAIL_PRICING_TIER] == q.tier
        assert out[attr.GEN_AI_USAGE_COST_AMOUNT] == q.total_nano_usd / 1e9
        seen.add(q.tier)
    assert {"no_usage", "standard", "standard,context>200k"} <= seen


# --- model ids and billing rules ---------------------------------------------------------------
@pytest.mark.parametrize("model, expected", [
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
    ("claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),  # OpenLLMetry drops the prefixes
    ("us-gov.meta.llama3-70b-instruct-v1:0", "llama3-70b-instruct"),
    ("apac.amazon.nova-pro-v1:0", "nova-pro"),
    ("openai.gpt-oss-120b-1:0", "gpt-oss-120b-1"),
    ("gpt-oss-120b-1:0", "gpt-oss-120b-1"),
    ("google.gemma-3-27b-it", "gemma-3-27b-it"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-20250514-v1:0",
     "claude-sonnet-4-20250514"),
    ("models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("GPT-4o ", "gpt-4o"),
    ("deepseek-v3", "deepseek-v3"),  # a plain name's own version is kept
    ("claude-3-sonnet-20240229-v1:0:200k", "claude-3-sonnet-20240229-v1:0:200k"),  # a context variant is its own id
    (None, ""),
])
def test_normalise_model_id(model, expected):
    assert normalise_model_id(model) == expected


def test_a_global_bedrock_id_without_provider_is_priced_at_the_list_price_never_zero():
    # Was priced $0: the long-context-only overlay entry for this id passed for a model of its own.
    q = quote("global.anthropic.claude-sonnet-4-5-20250929-v1:0", Usage(input_tokens=1_000, output_tokens=100))
    assert q.status == "priced"
    assert q.total_nano_usd == 4_500_000  # 1,000 x $3/M + 100 x $15/M
    on_bedrock = quote("global.anthropic.claude-sonnet-4-5-20250929-v1:0", Usage(input_tokens=1_000, output_tokens=100),
                       provider="aws.bedrock")
    assert (on_bedrock.pricing_model, on_bedrock.total_nano_usd) == (
        "aws/global.anthropic.claude-sonnet-4-5-20250929-v1:0", 4_500_000)


def test_an_overlay_entry_of_only_tiers_does_not_price_a_model_by_itself(monkeypatch, tmp_path):
    use_card(monkeypatch, tmp_path, """
models:
  - model: private-long-context
    tiers:
      - above_input_tokens: 100000
        input: 5
        output: 10
""")
    q = quote("private-long-context", Usage(input_tokens=1_000, output_tokens=100))
    assert q.status == "unpriced" and q.total_nano_usd is None  # was priced $0 below the tier


def test_reasoning_tokens_at_their_own_rate_when_the_card_has_one():
    # sonar-deep-research: $2 in, $8 out, $3 reasoning per M; 2,640 of the 4,597 output tokens
    # are reasoning: 2,804 x $2 + 1,957 x $8 + 2,640 x $3 = $0.029184 (was $0.042384, all at $8).
    usage = Usage(input_tokens=2_804, output_tokens=4_597, reasoning_tokens=2_640)
    q = quote("sonar-deep-research", usage, provider="perplexity")
    assert q.total_nano_usd == 29_184_000
    assert q.components["output"] == 23_576_000
    assert q.unit_prices["reasoning"] == Decimal(3)
    # Without a reasoning price, reasoning is plain output.
    o = quote("o3", Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=900), provider="openai")
    plain = quote("o3", Usage(input_tokens=1_000, output_tokens=1_000), provider="openai")
    assert o.total_nano_usd == plain.total_nano_usd


def test_the_pricing_model_tokentrail_reports_prices_the_same_again():
    # tokentrail.pricing.model of a geo Bedrock call is genai-prices' regional.* id, which its own
    # match rules do not resolve: with only the overlay's long-context tier it was unpriced ($0 before).
    usage = Usage(input_tokens=8_000, output_tokens=2_000)
    first = quote("us.anthropic.claude-sonnet-4-20250514-v1:0", usage, provider="aws.bedrock")
    assert first.pricing_model == "aws/regional.anthropic.claude-sonnet-4-20250514-v1:0"
    again = quote("regional.anthropic.claude-sonnet-4-20250514-v1:0", usage, provider="aws.bedrock")
    assert (again.status, again.total_nano_usd, again.pricing_model) == ("priced", 54_000_000, first.pricing_model)
    long = quote("regional.anthropic.claude-sonnet-4-20250514-v1:0", Usage(input_tokens=250_000, output_tokens=2_000),
                 provider="aws.bedrock")
    assert (long.total_usd, long.tier) == (Decimal("1.545"), "standard,context>200k")


def test_flex_is_billed_at_batch_rates_only_where_the_provider_does_so():
    usage = Usage(input_tokens=8_000, output_tokens=2_000)
    late = dt.datetime(2026, 11, 1, tzinfo=UTC)  # the data's Groq batch prices are in force
    on_demand = quote("llama-3.3-70b-versatile", usage, provider="groq", at=late)
    flex = quote("llama-3.3-70b-versatile", usage, provider="groq", at=late, service_tier="flex")
    batch = quote("llama-3.3-70b-versatile", usage, provider="groq", at=late, service_tier="batch")
    assert (flex.total_nano_usd, flex.tier) == (on_demand.total_nano_usd, "standard")  # was the batch price
    assert batch.total_nano_usd == on_demand.total_nano_usd // 2
    gemini = quote("gemini-2.5-flash", usage, provider="gcp.gemini", at=late, service_tier="flex")
    assert (gemini.total_nano_usd, gemini.tier) == (7_400_000, "standard")
    openai = quote("gpt-4o", usage, provider="openai", at=late, service_tier="flex")
    assert (openai.total_nano_usd, openai.tier) == (20_000_000, "flex")  # OpenAI bills flex at batch rates


@pytest.mark.parametrize("provider", ["moonshot_ai", "moonshotai", "Moonshot_AI"])
def test_moonshot_provider_spellings(provider):
    q = quote("kimi-k2-0711-preview", Usage(input_tokens=8_000, output_tokens=2_000), provider=provider)
    assert (q.status, q.total_nano_usd, q.pricing_model) == ("priced", 9_800_000, "moonshotai/kimi-k2-0711-preview")


def test_bundled_billing_rules_all_cite_a_source_and_load():
    raw = yaml.safe_load(rules.BUNDLED_PATH.read_text())
    entries = [raw["service_tier_aliases"], *raw["service_tiers"], *raw["cache_prices"], *raw["resellers"]]
    assert all(str(e.get("source", "")).strip() for e in entries)
    loaded = rules.load()
    assert loaded.service_tier("DEFAULT") == "standard" and loaded.service_tier("fast") == "priority"
    assert loaded.tiers["flex"].fallback_for("openai") == Decimal("0.5")
    assert loaded.tiers["flex"].fallback_for("anthropic") is None
    assert loaded.tiers["flex"].fallback_variants == ({"processing": "batch"},)
    assert loaded.tiers["flex"].falls_back_for("openai") and not loaded.tiers["flex"].falls_back_for("groq")
    assert loaded.tiers["batch"].fallback_for(None) == Decimal("0.5")


@pytest.mark.parametrize("bad, message", [
    ({"version": 1, "surprise": 1}, "unknown keys"),
    ({"version": 1, "service_tiers": [{"tier": "cheap", "price_variants": [], "source": "x"}]}, "not one of"),
    ({"version": 1, "service_tiers": [{"tier": "batch", "price_variants": [{"processing": "batch"}],
                                       "fallback_factor": 2, "source": "x"}]}, "at most 1"),
    ({"version": 1, "cache_prices": [{"models_containing": "claude", "providers": ["anthropic"], "cache_read": 0.1,
                                      "cache_write_5m": 1.25, "cache_write_1h": 2, "source": " "}]}, "source"),
    ({"version": 1, "resellers": [{"provider": "aws", "models_containing": "claude", "list_price_of": "anthropic"}]},
     "missing"),
    ({"version": 1, "service_tier_aliases": {"aliases": {"turbo": "fastest"}, "source": "x"}}, "not one of"),
    ({"version": 1, "service_tiers": [{"tier": "flex", "price_variants": [], "fallback_price_variants": "batch",
                                       "source": "x"}]}, "fallback_price_variants: expected a list"),
    ({"version": 1, "service_tiers": [{"tier": "flex", "price_variants": [], "fallback_providers": ["openai"],
                                       "source": "x"}]}, "fallback_providers without a fallback"),
])
def test_billing_rules_are_validated(bad, message):
    with pytest.raises(rules.RulesError, match=message):
        rules.parse(bad)


def test_a_period_is_priced_the_same_whichever_instant_is_asked_first():
    # mistral-large-4's price changes at 2026-10-20; the period before it was built from the first
    # instant asked, and 1 ns before the change (a float of the nanoseconds) read as the new price.
    change = int(dt.datetime(2026, 10, 20, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    earlier = change - 5 * 86_400 * 10**9
    totals = []
    for first in (change - 1, earlier):
        state.reset()
        quote("mistral-large-4", usage, provider="mistral_ai", at=first)
        totals.append(quote("mistral-large-4", usage, provider="mistral_ai", at=earlier).total_nano_usd)
    assert totals == [680_000_000, 680_000_000]
