"""The pre-flight runs only when a breaker could act: with no budget configured and no task open a
call makes no estimate and runs no check (issue 11), and with one it is checked exactly as before."""

from __future__ import annotations

import pytest

import tokentrail
from tokentrail import breakers, preflight
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.fields import MEDIA_CHARS, prompt_chars
from tokentrail.instrumentation.genai_span import start_llm_call
from tokentrail.semconv import attributes as attr
from tokentrail.testing import openai_api

from helpers import only_llm_span, user_message

# gpt-4o: $2.50 in, $10.00 out per million tokens = 2,500 and 10,000 nano-USD per token
GPT_4O_NANO = 2000 * 2_500 + 500 * 10_000


@pytest.fixture
def gated():
    """A check registered with a switchable ``applies``; yields (calls seen, switch)."""
    seen: list[preflight.PlannedCall] = []
    switch = {"on": False}
    preflight.register(seen.append, lambda: switch["on"])
    yield seen, switch
    preflight.unregister(seen.append)


def test_a_check_that_does_not_apply_is_not_run_and_the_call_is_priced(pipeline, client, server, gated):
    seen, _ = gated
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    with tokentrail.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o", messages=user_message("x" * 3000))

    assert seen == []
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] == GPT_4O_NANO
    assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"


def test_a_check_that_applies_sees_the_same_plan_as_before(pipeline, client, server, gated):
    seen, switch = gated
    switch["on"] = True
    client.chat.completions.create(model="gpt-4o", messages=user_message("x" * 3000), max_completion_tokens=256)

    (planned,) = seen
    # role "user" + 3,000 characters of content, 3 characters a token, plus 4 tokens per message
    assert planned.estimated_input_tokens == (4 + 3000) // 3 + 1 + 4
    assert planned.max_output_tokens == 256 and planned.model == "gpt-4o" and planned.provider == "openai"


def test_armed_only_when_a_registered_check_applies(gated):
    seen, switch = gated
    others = [check for check in preflight._checks if check != seen.append]
    for check in others:  # the breakers: nothing configured, no task open
        preflight.unregister(check)
    try:
        assert not preflight.armed()
        switch["on"] = True
        assert preflight.armed()
        switch["on"] = False
        always = []
        preflight.register(always.append)  # no applies: always armed
        assert preflight.armed()
        preflight.unregister(always.append)
        assert not preflight.armed()
    finally:
        breakers.install()


def test_a_task_budget_still_stops_the_call_before_it_is_sent(pipeline, client, server):
    # the worst case of a gpt-4o call (default 16,384 output tokens) is far over a micro-dollar
    with pytest.raises(tokentrail.BudgetExceeded):
        with tokentrail.task("triage", budget_usd=0.000001):
            client.chat.completions.create(model="gpt-4o", messages=user_message())
    assert server.requests == []
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "BudgetExceeded"

    client.chat.completions.create(model="gpt-4o", messages=user_message())  # outside the task: sent
    assert len(server.requests) == 1


def test_a_lazy_estimate_is_computed_only_when_a_breaker_applies(pipeline):
    instruments = Instruments(pipeline.tracer_provider.get_tracer("tokentrail.instrumentation.test"),
                              tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider)
    asked: list[int] = []

    def estimate() -> int:
        asked.append(1)
        return 10_000_000  # ten million input tokens: over any small budget

    start_llm_call(instruments, provider="openai", operation="chat", request_model="gpt-4o",
                   estimated_input_tokens=estimate).end()
    assert asked == []

    with pytest.raises(tokentrail.BudgetExceeded):
        with tokentrail.task("triage", budget_usd=1.0):
            start_llm_call(instruments, provider="openai", operation="chat", request_model="gpt-4o",
                           max_tokens=1, estimated_input_tokens=estimate)
    assert asked == [1]


def test_prompt_chars_counts_text_with_media_at_a_flat_allowance_within_its_bounds():
    class Text(str):
        pass

    parts = [{"type": "text", "text": "abc"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    # "user" + "abc" + one media part at 3,000 characters; the "type" keys are not text
    assert prompt_chars([{"role": "user", "content": parts}]) == 4 + 3 + MEDIA_CHARS
    assert prompt_chars((Text("hello"), bytearray(b"xy"), b"z", 7, None)) == 5 + 2 + 1
    assert prompt_chars(["ab", "cd", "ef"], max_nodes=3) == 4  # the list and two strings fit in 3 nodes
    assert prompt_chars({"a": {"b": "xyz"}}, max_depth=1) == 0  # the string is 2 levels down
    assert prompt_chars({"a": {"b": "xyz"}}, max_depth=2) == 3


def test_static_defaults_reach_the_metrics_of_stamped_and_unstamped_spans(monkeypatch):
    """The TOKENTRAIL_ATTRIBUTES defaults on a cost point: read from the span when it was stamped at start,
    from the environment when it never met AttributionSpanProcessor (a bare CostSpanProcessor pipeline)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from tokentrail.processor.attribution import AttributionSpanProcessor
    from tokentrail.processor.cost import CostSpanProcessor
    from tokentrail.processor.metrics import metric_views
    from tokentrail.semconv import metrics as m

    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=support")
    call = {attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
            attr.GEN_AI_REQUEST_MODEL: "gpt-4o", attr.GEN_AI_USAGE_INPUT_TOKENS: 2000,
            attr.GEN_AI_USAGE_OUTPUT_TOKENS: 500}
    for stamped in (True, False):
        reader = InMemoryMetricReader()
        meters = MeterProvider(metric_readers=[reader], views=metric_views())
        tracers = TracerProvider()
        if stamped:
            tracers.add_span_processor(AttributionSpanProcessor())
        tracers.add_span_processor(CostSpanProcessor(None, meter_provider=meters))
        with tracers.get_tracer("foreign").start_as_current_span("chat gpt-4o", attributes=call):
            pass
        [point] = [pt for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
                   for mt in sm.metrics if mt.name == m.TOKENTRAIL_COST for pt in mt.data.data_points]
        assert point.attributes[attr.TOKENTRAIL_TEAM] == "support", stamped
        assert point.sum == GPT_4O_NANO / 1e9
        assert point.attributes[attr.TOKENTRAIL_ATTRIBUTED] is False  # a team, no tenant
        tracers.shutdown()
        meters.shutdown()
