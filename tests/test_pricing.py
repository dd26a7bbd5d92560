"""Pricing: the worked numbers users check, exact to the nano-dollar."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest

from tokentrail.processor import pricing
from tokentrail.processor.pricing import quote
from tokentrail.processor.usage import Usage, is_genai_call
from tokentrail.semconv import attributes as attr


@pytest.fixture(autouse=True)
def _fresh_card(monkeypatch):
    monkeypatch.delenv(pricing.ENV_RATE_CARD, raising=False)
    pricing.reload()
    yield
    monkeypatch.delenv(pricing.ENV_RATE_CARD, raising=False)
    pricing.reload()


def usd(q) -> Decimal:
    assert q.status == "priced", q
    return q.total_usd


# -- the worked numbers (USERS.md) ----------------------------------------------------------


def test_gpt_5_4_mini_with_cached_prompt():
    # $0.75 / $0.075 cached / $4.50 per M: 8000 fresh + 2000 cached in, 1200 out.
    q = quote("gpt-5.4-mini", Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=1_200), provider="openai")
    assert usd(q) == Decimal("0.01155")
    assert q.total_nano_usd == 11_550_000
    assert q.components == {"input": 6_000_000, "cache_read": 150_000, "cache_write": 0, "output": 5_400_000, "fees": 0}
    assert q.tier == "standard"
    # 10,000 requests a day
    assert q.total_nano_usd * 10_000 / 1e9 == pytest.approx(115.50)


def test_claude_sonnet_4_standard():
    q = quote("claude-sonnet-4", Usage(input_tokens=8_000, output_tokens=1_200), provider="anthropic")
    assert usd(q) == Decimal("0.042")
    assert q.tier == "standard"


def test_claude_sonnet_4_long_context_tier_from_overlay():
    # Above 200k input tokens every token is billed at $6 / $22.50 per M: $1.545, not $0.78.
    q = quote("claude-sonnet-4-20250514", Usage(input_tokens=250_000, output_tokens=2_000), provider="anthropic")
    assert usd(q) == Decimal("1.545")
    assert q.tier == "standard,context>200k"
    assert any(s.startswith("overlay:claude-sonnet-4-0") for s in q.sources)
    # exactly at the threshold the base price still applies
    at_edge = quote("claude-sonnet-4", Usage(input_tokens=200_000, output_tokens=0), provider="anthropic")
    assert usd(at_edge) == Decimal("0.6")
    assert at_edge.tier == "standard"


def test_anthropic_cache_multipliers():
    # 10k tokens of each kind on Sonnet 4 ($3 base input): read 0.1x, 5m write 1.25x, 1h write 2x.
    k = 10_000
    q = quote(
        "claude-sonnet-4",
        Usage(input_tokens=4 * k, cache_read_tokens=k, cache_write_tokens=2 * k, cache_write_1h_tokens=k),
        provider="anthropic",
    )
    assert q.components["input"] == 30_000_000  # $3.00 / M
    assert q.components["cache_read"] == 3_000_000  # $0.30 / M
    assert q.components["cache_write"] == 37_500_000 + 60_000_000  # $3.75 / M + $6.00 / M
    assert usd(q) == Decimal("0.1305")
    # above 200k input the multipliers apply to the long-context input price ($6)
    m = 100_000
    big = quote(
        "claude-sonnet-4",
        Usage(input_tokens=4 * m, cache_read_tokens=m, cache_write_tokens=2 * m, cache_write_1h_tokens=m),
        provider="anthropic",
    )
    assert big.components == {"input": 600_000_000, "cache_read": 60_000_000,
                              "cache_write": 750_000_000 + 1_200_000_000, "output": 0, "fees": 0}


def test_anthropic_multipliers_apply_when_explicit_prices_are_absent(tmp_path, monkeypatch):
    card = tmp_path / "card.yaml"
    card.write_text("models:\n  - provider: anthropic\n    model: claude-private-1\n    prices: {input: 4, output: 20}\n")
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    m = 1_000_000
    q = quote(
        "claude-private-1",
        Usage(input_tokens=3 * m, cache_read_tokens=m, cache_write_tokens=2 * m, cache_write_1h_tokens=m),
        provider="anthropic",
    )
    assert q.components == {
        "input": 0,
        "cache_read": 400_000_000,  # 0.1 x $4
        "cache_write": 5_000_000_000 + 8_000_000_000,  # 1.25 x $4 + 2 x $4
        "output": 0,
        "fees": 0,
    }


def test_gpt_4o():
    q = quote("gpt-4o", Usage(input_tokens=2_000, output_tokens=500), provider="openai")
    assert usd(q) == Decimal("0.0100")


def test_dated_snapshot_resolves_to_model():
    a = quote("gpt-4o-2024-08-06", Usage(input_tokens=2_000, output_tokens=500), provider="openai")
    assert usd(a) == Decimal("0.01")
    assert a.pricing_model == "openai/gpt-4o"
    b = quote("claude-sonnet-4-20250514", Usage(input_tokens=8_000, output_tokens=1_200), provider="anthropic")
    assert usd(b) == Decimal("0.042")


# -- service tiers ---------------------------------------------------------------------------


def test_batch_is_half_price():
    # Before the data's own batch prices start (2026-10-14) the 50% rule applies.
    before = dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc)
    q = quote("gpt-4o", Usage(input_tokens=2_000, output_tokens=500), provider="openai", at=before, service_tier="batch")
    assert usd(q) == Decimal("0.005")
    assert q.tier == "batch"
    s = quote("claude-sonnet-4", Usage(input_tokens=8_000, output_tokens=1_200), provider="anthropic", service_tier="batch")
    assert usd(s) == Decimal("0.021")
    assert s.tier == "batch"


def test_batch_uses_the_datas_own_batch_prices_when_in_force():
    # genai-prices lists gpt-4o batch at $1.25/$5 from 2026-10-14, cached input staying at $1.25.
    after = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    usage = Usage(input_tokens=2_000, cache_read_tokens=1_000, output_tokens=500)
    q = quote("gpt-4o", usage, provider="openai", at=after, service_tier="batch")
    assert q.components == {"input": 1_250_000, "cache_read": 1_250_000, "cache_write": 0, "output": 2_500_000, "fees": 0}


def test_service_tier_spellings():
    usage = Usage(input_tokens=2_000, output_tokens=500)
    for spelling in (None, "default", "auto", "standard"):
        assert quote("gpt-4o", usage, provider="openai", service_tier=spelling).tier == "standard"


# -- unknown models --------------------------------------------------------------------------


def test_unknown_model_is_unpriced_with_no_amount(caplog):
    with caplog.at_level(logging.WARNING, logger="tokentrail.pricing"):
        q1 = quote("totally-made-up-model", Usage(input_tokens=10, output_tokens=5), provider="openai")
        q2 = quote("totally-made-up-model", Usage(input_tokens=10, output_tokens=5), provider="openai")
    assert q1.status == q2.status == "unpriced"
    assert q1.total_nano_usd is None and q1.total_usd is None and q1.components is None
    warnings = [r for r in caplog.records if "totally-made-up-model" in r.getMessage()]
    assert len(warnings) == 1  # logged once per model


def test_close_matches_for_cli_messages():
    assert "gpt-5.4-mini" in pricing.close_matches("gpt-5.4-mni")
    assert "claude-sonnet-4-5" in pricing.close_matches("claude-sonet-4-5", provider="anthropic")


# -- effective dates -------------------------------------------------------------------------


def test_price_in_force_at_the_call_time_from_genai_prices():
    # OpenAI cut o3 from $10/$40 to $2/$8 per M on 2025-06-10.
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    before = quote("o3", usage, provider="openai", at=dt.datetime(2025, 6, 9, 23, 59, tzinfo=dt.timezone.utc))
    after = quote("o3", usage, provider="openai", at=dt.datetime(2025, 6, 10, 0, 1, tzinfo=dt.timezone.utc))
    assert usd(before) == Decimal("10")
    assert usd(after) == Decimal("2")


def test_overlay_effective_dates(tmp_path, monkeypatch):
    # A promo until 2026-03-01, then the list price quadruples.
    card = tmp_path / "card.yaml"
    card.write_text(
        """
models:
  - provider: openai
    model: house-model
    prices: {input: 1, output: 4}
    effective_until: 2026-03-01
    source: promo
  - provider: openai
    model: house-model
    prices: {input: 4, output: 16}
    effective_from: 2026-03-01
"""
    )
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    feb = int(dt.datetime(2026, 2, 28, 23, tzinfo=dt.timezone.utc).timestamp() * 1e9)
    mar = int(dt.datetime(2026, 3, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1e9)
    assert usd(quote("house-model", usage, provider="openai", at=feb)) == Decimal("5")
    assert usd(quote("house-model", usage, provider="openai", at=mar)) == Decimal("20")
    assert usd(quote("house-model", usage, provider="openai", at=feb)) == Decimal("5")  # memoised periods stay exact


# -- Bedrock, Vertex, Azure ------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    [
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "eu.anthropic.claude-sonnet-4-20250514-v1:0",
        "apac.anthropic.claude-sonnet-4-20250514-v1:0",
        "global.anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
    ],
)
def test_bedrock_regional_ids(model_id):
    q = quote(model_id, Usage(input_tokens=8_000, output_tokens=1_200), provider="aws.bedrock")
    assert usd(q) == Decimal("0.042")
    assert q.pricing_model.startswith("aws/")
    long = quote(model_id, Usage(input_tokens=250_000, output_tokens=2_000), provider="aws.bedrock")
    assert usd(long) == Decimal("1.545")


def test_provider_names_are_normalised():
    usage = Usage(input_tokens=8_000, output_tokens=1_200)
    assert quote("claude-sonnet-4@20250514", usage, provider="vertex_ai").pricing_model.startswith("google/")
    g1 = quote("gemini-2.5-flash", usage, provider="gemini")
    g2 = quote("gemini-2.5-flash", usage, provider="gcp.gemini")
    assert g1.total_nano_usd == g2.total_nano_usd
    assert g1.status == "priced"


def test_gemini_long_context_tier_and_thoughts_as_output():
    # gemini-2.5-pro: $1.25/$10 up to 200k prompt tokens, $2.50/$15 above; thoughts bill as output.
    small = quote("gemini-2.5-pro", Usage(input_tokens=100_000, output_tokens=3_000, reasoning_tokens=2_000), provider="gcp.gemini")
    assert usd(small) == Decimal("0.155")
    big = quote("gemini-2.5-pro", Usage(input_tokens=300_000, output_tokens=1_000), provider="gcp.vertex_ai")
    assert usd(big) == Decimal("0.765")
    assert big.tier == "standard,context>200k"


# -- user overlay ----------------------------------------------------------------------------


def test_user_overlay_discount_and_deployment_alias(tmp_path, monkeypatch):
    card = tmp_path / "negotiated.yaml"
    card.write_text(
        """
aliases:
  - provider: azure.ai.openai
    name: prod-chat-eastus
    model: gpt-4o
discounts:
  - provider: azure.ai.openai
    percent: 20
    source: EA contract 2026
"""
    )
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    usage = Usage(input_tokens=2_000, output_tokens=500)
    q = quote("prod-chat-eastus", usage, provider="azure.ai.openai")
    assert usd(q) == Decimal("0.008")  # $0.0100 less 20%
    assert q.pricing_model == "openai/gpt-4o"
    # the discount is scoped to the Azure provider
    assert usd(quote("gpt-4o", usage, provider="openai")) == Decimal("0.01")
    assert "+user." in pricing.rate_card_version()


def test_user_overlay_private_model_and_version(tmp_path, monkeypatch):
    base_version = pricing.rate_card_version()
    assert base_version.startswith("genai-prices-") and "+ov." in base_version and "+user." not in base_version
    card = tmp_path / "private.yaml"
    card.write_text(
        "models:\n  - provider: vllm\n    model: acme-llama-70b\n    prices: {input: 0.5, output: 1.5}\n"
    )
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    q = quote("acme-llama-70b", Usage(input_tokens=1_000_000, output_tokens=1_000_000), provider="vllm")
    assert usd(q) == Decimal("2")
    v1 = pricing.rate_card_version()
    card.write_text("models:\n  - provider: vllm\n    model: acme-llama-70b\n    prices: {input: 0.6, output: 1.5}\n")
    pricing.reload()
    assert pricing.rate_card_version() != v1  # a changed card is a new version


def test_broken_user_overlay_never_breaks_pricing(tmp_path, monkeypatch):
    card = tmp_path / "broken.yaml"
    card.write_text("models: [{model: x, prices: {input: -1}}]\n")
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    assert pricing.rate_card_version().endswith("+user.invalid")
    assert pricing.user_overlay_error()
    assert usd(quote("gpt-4o", Usage(input_tokens=2_000, output_tokens=500), provider="openai")) == Decimal("0.01")


# -- price_span ------------------------------------------------------------------------------


def _span(**extra):
    base = {
        attr.GEN_AI_PROVIDER_NAME: "openai",
        attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_REQUEST_MODEL: "gpt-5.4-mini",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 10_000,
        attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 2_000,
        attr.GEN_AI_USAGE_OUTPUT_TOKENS: 1_200,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def test_price_span_attributes():
    out = pricing.price_span(_span(), 1_700_000_000_000_000_000)
    assert out[attr.TOKENTRAIL_COST_STATUS] == "priced"
    assert out[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.01155, abs=1e-12)
    assert out[attr.TOKENTRAIL_COST_NANO_USD] == 11_550_000
    assert out[attr.GEN_AI_USAGE_COST_CURRENCY] == "USD"
    assert out[attr.GEN_AI_USAGE_COST_SOURCE] == "local"
    assert out[attr.TOKENTRAIL_COST_INPUT] == pytest.approx(0.006)
    assert out[attr.TOKENTRAIL_COST_CACHE_READ] == pytest.approx(0.00015)
    assert out[attr.TOKENTRAIL_COST_OUTPUT] == pytest.approx(0.0054)
    assert out[attr.TOKENTRAIL_PRICING_TIER] == "standard"
    assert out[attr.TOKENTRAIL_PRICING_MODEL] == "openai/gpt-5.4-mini"
    assert out[attr.TOKENTRAIL_RATE_CARD_VERSION] == pricing.rate_card_version()


def test_price_span_prefers_response_model_and_reads_gen_ai_system():
    span = _span(**{attr.GEN_AI_PROVIDER_NAME: None, attr.GEN_AI_SYSTEM: "openai",
                    attr.GEN_AI_REQUEST_MODEL: "my-azure-deployment", attr.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
                    attr.GEN_AI_USAGE_INPUT_TOKENS: 2_000, attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: None,
                    attr.GEN_AI_USAGE_OUTPUT_TOKENS: 500})
    out = pricing.price_span(span, None)
    assert out[attr.TOKENTRAIL_COST_NANO_USD] == 10_000_000


def test_price_span_service_tier_attribute():
    out = pricing.price_span(_span(**{attr.TOKENTRAIL_SERVICE_TIER: "batch"}), 1_700_000_000_000_000_000)
    assert out[attr.TOKENTRAIL_PRICING_TIER] == "batch"
    assert out[attr.TOKENTRAIL_COST_NANO_USD] == 11_550_000 // 2


def test_price_span_statuses():
    # unknown model: status only, never an amount of 0
    unknown = pricing.price_span(_span(**{attr.GEN_AI_REQUEST_MODEL: "no-such-model-xyz"}), None)
    assert unknown == {attr.TOKENTRAIL_COST_STATUS: "unpriced"}
    # LLM span without usage
    no_usage = pricing.price_span(
        _span(**{attr.GEN_AI_USAGE_INPUT_TOKENS: None, attr.GEN_AI_USAGE_OUTPUT_TOKENS: None,
                 attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: None}), None
    )
    assert no_usage == {attr.TOKENTRAIL_COST_STATUS: "no_usage"}
    # malformed usage: more cached than input, strings, negatives
    for bad in ({attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 20_000}, {attr.GEN_AI_USAGE_INPUT_TOKENS: "lots"},
                {attr.GEN_AI_USAGE_OUTPUT_TOKENS: -3}):
        assert pricing.price_span(_span(**bad), None) == {attr.TOKENTRAIL_COST_STATUS: "no_usage"}
    # not an LLM span, or already priced: nothing to add
    assert pricing.price_span({"http.request.method": "GET"}, None) == {}
    assert pricing.price_span(_span(**{attr.TOKENTRAIL_COST_STATUS: "priced"}), None) == {}
    assert pricing.price_span(_span(**{attr.GEN_AI_OPERATION_NAME: "invoke_agent"}), None) == {}


def test_price_span_never_raises_on_junk():
    class Hostile(dict):
        def get(self, *a, **k):
            raise RuntimeError("boom")

    assert pricing.price_span(Hostile({attr.GEN_AI_REQUEST_MODEL: "gpt-4o"}), None) in ({}, {attr.TOKENTRAIL_COST_STATUS: "unpriced"})
    assert pricing.price_span(_span(**{attr.GEN_AI_REQUEST_MODEL: ["a", "list"]}), None) == {attr.TOKENTRAIL_COST_STATUS: "unpriced"}


def test_is_genai_call():
    assert is_genai_call(_span())
    assert not is_genai_call({"db.system": "redis"})
    assert not is_genai_call(_span(**{attr.GEN_AI_OPERATION_NAME: "execute_tool"}))
