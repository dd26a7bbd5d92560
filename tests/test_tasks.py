"""tokentrail.task through the real openai SDK: task span, call numbering, cost and tokens per
task, outcome, the tokentrail.task.cost histogram, retries and fallbacks."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import openai
import pytest
from opentelemetry.trace import StatusCode

import tokentrail
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api

from helpers import ask, task_span, usd


def test_task_span_numbers_calls_and_totals_cost_and_tokens(pipeline, client, server):
    # gpt-4o at $2.50 / $10 per M: 2,000 in / 500 out = $0.0100; 1,000 in (400 cached at $1.25) / 100 out = $0.0030
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500),
                   openai_api.reply(prompt_tokens=1000, cached_tokens=400, completion_tokens=100))
    with tokentrail.attribute(tenant="acme", feature="triage"):
        with tokentrail.task("triage-ticket", id="T-1001") as t:
            client.chat.completions.create(model="gpt-4o", messages=ask())
            client.chat.completions.create(model="gpt-4o", messages=ask())

    assert t.calls == 2 and t.outcome == "ok"
    assert t.spent_nano == 13_000_000
    llm = sorted(pipeline.llm_spans(), key=lambda s: s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX])
    task = task_span(pipeline, "triage-ticket")
    assert [s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX] for s in llm] == [1, 2]
    for span in llm:
        assert span.attributes[attr.TOKENTRAIL_TASK_NAME] == "triage-ticket"
        assert span.attributes[attr.TOKENTRAIL_TASK_ID] == "T-1001"
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert span.parent.span_id == task.context.span_id
        assert span.context.trace_id == task.context.trace_id
    assert sum(usd(s) for s in llm) == Decimal("0.0130")

    a = task.attributes
    assert task.name == "task triage-ticket"
    assert a[attr.TOKENTRAIL_TASK_OUTCOME] == "ok"
    assert a[attr.TOKENTRAIL_TASK_CALLS] == 2
    assert a[attr.TOKENTRAIL_TASK_COST_NANO_USD] == 13_000_000
    assert a[attr.TOKENTRAIL_TASK_COST_TOTAL] == pytest.approx(0.013)
    assert a[attr.TOKENTRAIL_TASK_TOKENS_INPUT] == 2600
    assert a[attr.TOKENTRAIL_TASK_TOKENS_CACHE_READ] == 400
    assert a[attr.TOKENTRAIL_TASK_TOKENS_OUTPUT] == 600
    assert a[attr.TOKENTRAIL_TENANT] == "acme"

    [point] = pipeline.metric_points(names.TOKENTRAIL_TASK_COST, tenant="acme")
    assert point.attributes[attr.TOKENTRAIL_TASK_NAME] == "triage-ticket"
    assert point.attributes[attr.TOKENTRAIL_TASK_OUTCOME] == "ok"
    assert point.count == 1 and point.sum == pytest.approx(0.013)


def test_every_span_inside_a_task_carries_it(pipeline):
    tracer = pipeline.tracer()
    with tokentrail.task("ingest", id="job-7"):
        with tracer.start_as_current_span("db.query"):
            pass
    db = next(s for s in pipeline.spans() if s.name == "db.query")
    assert db.attributes[attr.TOKENTRAIL_TASK_NAME] == "ingest"
    assert db.attributes[attr.TOKENTRAIL_TASK_ID] == "job-7"


def test_agent_task_is_an_invoke_agent_span(pipeline, client, server):
    server.enqueue(openai_api.reply())
    with tokentrail.task("researcher", agent=True):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    span = task_span(pipeline, "researcher")
    assert span.name == "invoke_agent researcher"
    assert span.attributes[attr.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert span.attributes[attr.GEN_AI_AGENT_NAME] == "researcher"
    # the agent span is not itself an LLM call: only the chat call is priced and counted
    assert [s.name for s in pipeline.spans() if attr.TOKENTRAIL_COST_STATUS in s.attributes] == ["chat gpt-4o-mini"]


def test_decorator_sync_and_async_each_call_is_its_own_task(pipeline, client, aclient, server):
    server.enqueue(*[openai_api.reply(prompt_tokens=1000, completion_tokens=100)] * 3)

    @tokentrail.task("summarize")
    def summarize():
        return client.chat.completions.create(model="gpt-4o", messages=ask())

    @tokentrail.task("classify", agent=True)
    async def classify():
        return await aclient.chat.completions.create(model="gpt-4o", messages=ask())

    summarize()
    summarize()
    asyncio.run(classify())
    tasks = [s for s in pipeline.spans() if attr.TOKENTRAIL_TASK_OUTCOME in s.attributes]
    assert sorted(s.attributes[attr.TOKENTRAIL_TASK_NAME] for s in tasks) == ["classify", "summarize", "summarize"]
    assert len({s.attributes[attr.TOKENTRAIL_TASK_ID] for s in tasks}) == 3
    assert all(s.attributes[attr.TOKENTRAIL_TASK_CALLS] == 1 for s in tasks)
    calls = [s for s in pipeline.spans() if attr.TOKENTRAIL_COST_STATUS in s.attributes]
    assert [s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX] for s in calls] == [1, 1, 1]


def test_failed_task_outcome_is_error(pipeline, client, server):
    server.enqueue(openai_api.error(400))
    with pytest.raises(openai.BadRequestError):
        with tokentrail.task("doomed") as t:
            client.chat.completions.create(model="gpt-4o", messages=ask())
    span = task_span(pipeline, "doomed")
    assert t.outcome == "error"
    assert span.attributes[attr.TOKENTRAIL_TASK_OUTCOME] == "error"
    assert span.status.status_code is StatusCode.ERROR
    assert pipeline.metric_count(names.TOKENTRAIL_TASK_COST, attributes={attr.TOKENTRAIL_TASK_OUTCOME: "error"}) == 1


def test_nested_task_rolls_up_into_its_parent(pipeline, client, server):
    server.enqueue(*[openai_api.reply(prompt_tokens=2000, completion_tokens=500)] * 3)
    with tokentrail.task("plan") as outer:
        client.chat.completions.create(model="gpt-4o", messages=ask())
        with tokentrail.task("step") as inner:
            client.chat.completions.create(model="gpt-4o", messages=ask())
            client.chat.completions.create(model="gpt-4o", messages=ask())
    assert (inner.calls, inner.spent_nano) == (2, 20_000_000)
    assert (outer.calls, outer.spent_nano) == (3, 30_000_000)
    inner_llm = [s for s in pipeline.llm_spans() if s.attributes[attr.TOKENTRAIL_TASK_NAME] == "step"]
    assert len(inner_llm) == 2


def test_application_retries_and_fallbacks_are_marked_and_costed(pipeline, client, server):
    # attempt 0 answers badly, attempt 1 is an explicit retry; then gpt-4o fails and the task falls back
    server.enqueue(openai_api.reply(prompt_tokens=1000, completion_tokens=100),   # $0.0035
                   openai_api.reply(prompt_tokens=1000, completion_tokens=100),   # retry: $0.0035
                   openai_api.error(500),                                         # gpt-4o fails
                   openai_api.reply(prompt_tokens=1000, completion_tokens=100))   # gpt-4o-mini: $0.00021
    with tokentrail.task("extract") as t:
        client.chat.completions.create(model="gpt-4o", messages=ask())
        with tokentrail.retry(1):
            client.chat.completions.create(model="gpt-4o", messages=ask())
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=ask())
        client.chat.completions.create(model="gpt-4o-mini", messages=ask())  # detected as a fallback

    spans = sorted(pipeline.llm_spans(), key=lambda s: s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX])
    assert [s.attributes.get(attr.TOKENTRAIL_RETRY_ATTEMPT) for s in spans] == [None, 1, None, None]
    assert [s.attributes.get(attr.TOKENTRAIL_FALLBACK_FROM) for s in spans] == [None, None, None, "gpt-4o"]
    task = task_span(pipeline, "extract").attributes
    assert task[attr.TOKENTRAIL_TASK_CALLS] == 4
    assert task[attr.TOKENTRAIL_TASK_COST_RETRIES] == pytest.approx(0.0035)
    assert task[attr.TOKENTRAIL_TASK_COST_FALLBACKS] == pytest.approx(0.00021)
    assert t.spent_nano == 3_500_000 + 3_500_000 + 210_000


def test_same_model_after_an_error_is_a_retry_and_explicit_fallback(pipeline, client, server):
    server.enqueue(openai_api.error(400), openai_api.reply(), openai_api.reply())
    with tokentrail.task("answer"):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o", messages=ask())
        client.chat.completions.create(model="gpt-4o", messages=ask())
        with tokentrail.fallback("claude-sonnet-4"):
            client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    spans = sorted(pipeline.llm_spans(), key=lambda s: s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX])
    assert spans[1].attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 1
    assert spans[2].attributes[attr.TOKENTRAIL_FALLBACK_FROM] == "claude-sonnet-4"


def test_bad_task_arguments_raise_at_the_call_site():
    with pytest.raises(ValueError, match="tokentrail.task: name"):
        tokentrail.task("bad name")
    with pytest.raises(ValueError, match="budget_usd"):
        tokentrail.task("ok", budget_usd=-1)
    with pytest.raises(ValueError, match="attempt"):
        tokentrail.retry(-1)


def test_sdk_internal_retries_are_counted_on_the_one_llm_span(pipeline, server):
    client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=3)
    server.enqueue(openai_api.error(500), openai_api.error(429), openai_api.reply(prompt_tokens=1000, completion_tokens=100))
    with tokentrail.task("flaky") as t:
        client.chat.completions.create(model="gpt-4o", messages=ask())
    assert len(server.requests) == 3
    [span] = [s for s in pipeline.spans() if attr.TOKENTRAIL_COST_STATUS in s.attributes]
    assert span.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 2  # two failed HTTP tries before this answer
    assert t.calls == 1
    assert task_span(pipeline, "flaky").attributes[attr.TOKENTRAIL_TASK_COST_RETRIES] == pytest.approx(0.0035)


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
def test_anthropic_sdk_internal_retries_are_counted_too(server):
    import anthropic

    from tokentrail.instrumentation.anthropic import AnthropicInstrumentor
    from tokentrail.testing import InMemoryPipeline
    from tokentrail.testing import anthropic_api as fake
    from tokentrail.testing.server import FakeResponse

    server.reset()
    overloaded = fake.error(529, "overloaded_error")
    overloaded.headers["retry-after-ms"] = "5"  # keep the SDK's backoff short
    server.enqueue(overloaded, FakeResponse(json=fake.message(usage=fake.usage_block(8000, 1200))))
    with InMemoryPipeline(instrument=[AnthropicInstrumentor()]) as pipeline:
        client = anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=2)
        with tokentrail.task("claude-step"):
            client.messages.create(model="claude-sonnet-4-20250514", max_tokens=2000,
                                   messages=[{"role": "user", "content": "Hello"}])
        [span] = [s for s in pipeline.spans() if attr.TOKENTRAIL_COST_STATUS in s.attributes]
        task = task_span(pipeline, "claude-step")
    assert len(server.requests) == 2
    assert span.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 1
    assert task.attributes[attr.TOKENTRAIL_TASK_COST_RETRIES] == pytest.approx(0.042)  # 8,000 in / 1,200 out


def test_streamed_calls_count_in_the_task_when_the_stream_ends(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    with tokentrail.task("stream-answer") as t:
        stream = client.chat.completions.create(model="gpt-4o", messages=ask(), stream=True)
        assert t.calls == 1 and t.spent_nano == 0  # admitted, not finished
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    assert t.spent_nano == 10_000_000  # $0.01, usage from the hidden usage chunk
    assert task_span(pipeline, "stream-answer").attributes[attr.TOKENTRAIL_TASK_TOKENS_OUTPUT] == 500


def test_retry_and_fallback_marks_apply_outside_a_task_too(pipeline, client, server):
    server.enqueue(openai_api.reply(), openai_api.reply())
    with tokentrail.retry(2):
        client.chat.completions.create(model="gpt-4o", messages=ask())
    with tokentrail.fallback("gpt-4o"):
        client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    first, second = sorted(pipeline.llm_spans(), key=lambda s: s.start_time)
    assert first.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 2
    assert second.attributes[attr.TOKENTRAIL_FALLBACK_FROM] == "gpt-4o"
    assert attr.TOKENTRAIL_TASK_CALL_INDEX not in first.attributes


def test_marks_outside_a_task_reach_the_ledger_as_retry_and_fallback_cost(pipeline, client, server, tmp_path):
    from tokentrail.ledger import LedgerSpanExporter
    from tokentrail.ledger.queries import Ledger, Period

    # gpt-4o at $2.50 / $10 per M: 1,000 in / 100 out = $0.0035; gpt-4o-mini at $0.15 / $0.60: 1,000 / 100 = $0.00021
    server.enqueue(openai_api.reply(prompt_tokens=1000, completion_tokens=100),
                   openai_api.reply(prompt_tokens=1000, completion_tokens=100),
                   openai_api.reply(prompt_tokens=1000, completion_tokens=100))
    with tokentrail.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o", messages=ask())  # first try, no mark
        with tokentrail.retry(1):
            client.chat.completions.create(model="gpt-4o", messages=ask())
        with tokentrail.fallback("gpt-4o"):
            client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    first, retried, fell_back = sorted(pipeline.llm_spans(), key=lambda s: s.start_time)
    assert attr.TOKENTRAIL_RETRY_ATTEMPT not in first.attributes
    assert retried.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 1
    assert fell_back.attributes[attr.TOKENTRAIL_FALLBACK_FROM] == "gpt-4o"
    for span in (first, retried, fell_back):
        assert attr.TOKENTRAIL_TASK_NAME not in span.attributes
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"

    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(pipeline.spans()).name == "SUCCESS"
    with Ledger(path) as ledger:
        traces = {t["trace_id"]: t for t in ledger.top(Period.parse(None, None))["traces"]}
    retry_trace = traces[format(retried.context.trace_id, "032x")]
    assert retry_trace["retries"] == 1 and "1 retries" in retry_trace["reasons"]
    assert retry_trace["cost_nano_usd"] == 3_500_000
    fallback_trace = traces[format(fell_back.context.trace_id, "032x")]
    assert fallback_trace["fallback"] == {"from": "gpt-4o", "to": "gpt-4o-mini"}
    assert "fallback gpt-4o -> gpt-4o-mini" in fallback_trace["reasons"]
    assert fallback_trace["cost_nano_usd"] == 210_000
    plain = traces[format(first.context.trace_id, "032x")]
    assert plain["retries"] == 0 and "fallback" not in plain


def test_marks_outside_a_task_combine_with_sdk_internal_retries(pipeline, server):
    client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=2)
    server.enqueue(openai_api.error(500), openai_api.reply())
    with tokentrail.retry(2):
        client.chat.completions.create(model="gpt-4o", messages=ask())
    [span] = pipeline.llm_spans()
    assert span.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 3  # the app's third try, after one failed HTTP try


def test_marks_reach_llm_spans_of_other_instrumentations(pipeline):
    # a GenAI span made by someone else's instrumentation is stamped at start like the owner
    with tokentrail.retry(1), tokentrail.fallback("gpt-4o"):
        with pipeline.tracer().start_as_current_span(
                "chat gpt-4o-mini", attributes={attr.GEN_AI_OPERATION_NAME: "chat",
                                                attr.GEN_AI_PROVIDER_NAME: "openai",
                                                attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}):
            pass
    [span] = [s for s in pipeline.spans() if s.name == "chat gpt-4o-mini"]
    assert span.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 1
    assert span.attributes[attr.TOKENTRAIL_FALLBACK_FROM] == "gpt-4o"
