"""The five instrumentors share one shape: every one honours ``tracer_provider=`` and
``meter_provider=``, and uninstrument puts back exactly the SDK functions it replaced.

Each provider is driven through its real SDK over HTTP to the fake server. The tracer
provider has no CostSpanProcessor, so our instrumentation records the metrics itself (the
fallback); the points must land on the meter provider given to ``instrument()``.

Expected costs of one default fake call (published prices per million tokens):
- openai gpt-4o-mini, 20 in / 10 out at $0.15 / $0.60: $0.000009;
- anthropic claude-sonnet-4, 8,000 in / 1,200 out at $3 / $15: $0.042;
- google gemini-2.5-flash, 12 in / 8 out at $0.30 / $2.50: $0.0000236;
- mistral mistral-small-latest, 10 in / 6 out at $0.15 / $0.60: $0.0000051;
- bedrock us.anthropic.claude-sonnet-4, 8,000 in / 1,200 out: $0.042.
"""

from __future__ import annotations

import inspect
from decimal import Decimal
from typing import Any, Callable

import pytest
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tokentrail
from tokentrail import preflight, state
from tokentrail.instrumentation import fields
from tokentrail.processor.usage import InvalidUsage
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api


def _openai(server, text: str = "hi") -> None:
    import openai

    with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])


def _anthropic(server, text: str = "hi") -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0)
    client.messages.create(model="claude-sonnet-4-20250514", max_tokens=64,
                           messages=[{"role": "user", "content": [{"type": "text", "text": text}]}])


def _gemini(server, text: str = "hi") -> None:
    from google import genai

    client = genai.Client(api_key="test-key", http_options={"base_url": server.url})
    client.models.generate_content(model="gemini-2.5-flash", contents=text)


def _mistral(server, text: str = "hi") -> None:
    from mistralai.client import Mistral

    Mistral(api_key="test-key", server_url=server.url).chat.complete(
        model="mistral-small-latest", messages=[{"role": "user", "content": text}])


def _bedrock(server, text: str = "hi") -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                          config=Config(retries={"total_max_attempts": 1}))
    client.converse(modelId="us.anthropic.claude-sonnet-4-20250514-v1:0",
                    messages=[{"role": "user", "content": [{"text": text}]}], inferenceConfig={"maxTokens": 64})


def _openai_instrumentor():
    from tokentrail.instrumentation.openai import OpenAIInstrumentor

    return OpenAIInstrumentor()


def _anthropic_instrumentor():
    from tokentrail.instrumentation.anthropic import AnthropicInstrumentor

    return AnthropicInstrumentor()


def _gemini_instrumentor():
    from tokentrail.instrumentation.google_genai import GoogleGenAIInstrumentor

    return GoogleGenAIInstrumentor()


def _mistral_instrumentor():
    from tokentrail.instrumentation.mistral import MistralInstrumentor

    return MistralInstrumentor()


def _bedrock_instrumentor():
    from tokentrail.instrumentation.bedrock import BedrockInstrumentor

    return BedrockInstrumentor()


def _sdk_classes(provider: str) -> list[type]:
    """The SDK classes whose methods the provider's instrumentor patches."""
    if provider == "openai":
        import openai._base_client
        import openai.resources.beta.responses.responses as beta_responses
        import openai.resources.chat.completions.completions as chat
        import openai.resources.completions as completions
        import openai.resources.embeddings as embeddings
        import openai.resources.files as files
        import openai.resources.responses.responses as responses

        return [chat.Completions, chat.AsyncCompletions, responses.Responses, responses.AsyncResponses,
                beta_responses.Responses, beta_responses.AsyncResponses, completions.Completions,
                completions.AsyncCompletions, embeddings.Embeddings, embeddings.AsyncEmbeddings,
                files.Files, files.AsyncFiles, openai._base_client.BaseClient]
    if provider == "anthropic":
        import anthropic._base_client as base
        import anthropic._response as response
        import anthropic.resources.beta.messages.batches as beta_batches
        import anthropic.resources.messages.batches as batches

        return [base.SyncAPIClient, base.AsyncAPIClient, base.BaseClient, response.APIResponse,
                response.AsyncAPIResponse, batches.Batches, batches.AsyncBatches, beta_batches.Batches,
                beta_batches.AsyncBatches]
    if provider == "google_genai":
        from google.genai import models

        return [models.Models, models.AsyncModels]
    if provider == "mistral":
        from mistralai.client import chat, embeddings

        return [chat.Chat, embeddings.Embeddings]
    import botocore.client

    return [botocore.client.BaseClient]


def _module_functions(provider: str) -> dict[str, Any]:
    """Module-level functions patched (anthropic's native-span hook)."""
    if provider == "anthropic":
        import anthropic._base_client as base

        return {name: value for name, value in vars(base).items() if inspect.isfunction(value)}
    return {}


PROVIDERS: dict[str, tuple[Callable[[], Any], Callable[..., None], int]] = {
    # provider -> (instrumentor, one default call, its cost in nano-USD)
    "openai": (_openai_instrumentor, _openai, 9_000),
    "anthropic": (_anthropic_instrumentor, _anthropic, 42_000_000),
    "google_genai": (_gemini_instrumentor, _gemini, 23_600),
    "mistral": (_mistral_instrumentor, _mistral, 5_100),
    "bedrock": (_bedrock_instrumentor, _bedrock, 42_000_000),
}


@pytest.fixture
def global_reader(monkeypatch):
    """A reader on the global MeterProvider: what a user's own global set-up would receive."""
    reader = InMemoryMetricReader()
    monkeypatch.setattr(metrics_internal, "_METER_PROVIDER", MeterProvider(metric_readers=[reader]))
    return reader


@pytest.fixture
def providers():
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # no CostSpanProcessor
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, meter_provider, exporter, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture(autouse=True)
def _fresh(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")  # anthropic 2.x's own spans: not measured here
    server.reset()
    state.reset()


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [point for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics
            for metric in sm.metrics if metric.name == name for point in metric.data.data_points]


def _nano(usd: float) -> int:
    return int((Decimal(repr(usd)) * 10**9).to_integral_value())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cost_metric_goes_to_the_given_meter_provider(provider, server, providers, global_reader):
    make, run, nano_usd = PROVIDERS[provider]
    tracer_provider, meter_provider, exporter, reader = providers
    instrumentor = make()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
    try:
        with tokentrail.attribute(tenant="acme"):
            run(server)
    finally:
        instrumentor.uninstrument()

    [span] = [s for s in exporter.get_finished_spans() if attr.GEN_AI_OPERATION_NAME in (s.attributes or {})]
    assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] == nano_usd
    assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTED] is True
    [point] = _points(reader, names.TOKENTRAIL_COST)
    assert point.count == 1
    assert _nano(point.sum) == nano_usd
    assert point.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    [exemplar] = point.exemplars  # the point links the call's trace
    assert exemplar.trace_id == span.context.trace_id
    assert _points(global_reader, names.TOKENTRAIL_COST) == []
    assert _points(global_reader, names.TOKENTRAIL_TOKENS) == []


def _snapshot(provider: str) -> dict[tuple[Any, str], Any]:
    found = {(cls, name): value for cls in _sdk_classes(provider) for name, value in vars(cls).items()}
    found.update(((None, name), value) for name, value in _module_functions(provider).items())
    return found


@pytest.mark.parametrize("provider", PROVIDERS)
def test_uninstrument_restores_exactly_the_sdk_functions(provider, server, providers):
    make, run, nano_usd = PROVIDERS[provider]
    tracer_provider, meter_provider, exporter, reader = providers
    before = _snapshot(provider)
    instrumentor = make()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
    patched = {key for key, value in _snapshot(provider).items() if before.get(key) is not value}
    instrumentor.uninstrument()
    assert patched, "instrument() patched nothing"
    after = _snapshot(provider)
    assert {key for key, value in after.items() if before.get(key) is not value} == set()
    assert after.keys() == before.keys()

    run(server)  # uninstrumented: no span, no metric
    assert exporter.get_finished_spans() == ()
    assert _points(reader, names.TOKENTRAIL_COST) == []

    # instrument again: the same instrumentor works as the first time
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
    try:
        assert {key for key, value in _snapshot(provider).items() if before.get(key) is not value} == patched
        run(server)
    finally:
        instrumentor.uninstrument()
    [span] = exporter.get_finished_spans()
    assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] == nano_usd
    assert span.attributes[attr.TOKENTRAIL_ATTRIBUTED] is False  # no tenant: unattributed spend stays visible
    assert _nano(sum(p.sum for p in _points(reader, names.TOKENTRAIL_COST))) == nano_usd
    assert {key for key, value in _snapshot(provider).items() if before.get(key) is not value} == set()


@pytest.fixture
def instrumented(providers):
    """Instruments one provider (the test's ``provider`` parameter) for the test's duration."""
    started = []

    def instrument(provider: str):
        instrumentor = PROVIDERS[provider][0]()
        instrumentor.instrument(tracer_provider=providers[0], meter_provider=providers[1], skip_dep_check=True)
        started.append(instrumentor)
        return providers[2]

    yield instrument
    for instrumentor in started:
        instrumentor.uninstrument()


@pytest.fixture
def planned_calls():
    seen: list[preflight.PlannedCall] = []
    preflight.register(seen.append)
    yield seen
    preflight.unregister(seen.append)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_preflight_estimate_counts_the_prompt_text(provider, server, instrumented, planned_calls):
    instrumented(provider)
    PROVIDERS[provider][1](server, "x" * 3000)
    [planned] = planned_calls
    assert planned.estimated_input_tokens >= 3000 // 4  # at least a tokenizer's count


@pytest.mark.parametrize("provider", PROVIDERS)
def test_only_tokentrails_budget_exceeded_stops_a_call(provider, server, instrumented):
    """A check that raises some other exception named BudgetExceeded is a failing check: ignored."""
    exporter = instrumented(provider)

    class BudgetExceeded(Exception):
        pass

    def foreign(planned):
        raise BudgetExceeded("not ours")

    preflight.register(foreign)
    try:
        PROVIDERS[provider][1](server)
    finally:
        preflight.unregister(foreign)
    [span] = exporter.get_finished_spans()
    assert attr.ERROR_TYPE not in span.attributes
    assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] == PROVIDERS[provider][2]


def test_prompt_estimate_walk_is_bounded():
    deep: Any = "x" * 100
    for _ in range(100_000):
        deep = [deep]
    assert fields.prompt_chars(deep) == 0  # deeper than the walk goes: no RecursionError
    assert fields.prompt_chars(["x" * 10] * 1_000_000) == 10 * (fields.MAX_NODES - 1)  # the list is a node
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1_000_000}}
    assert fields.prompt_chars([{"role": "user", "content": [{"type": "text", "text": "hello"}, image]}]) == (
        len("user") + len("hello") + fields.MEDIA_CHARS)  # media at a flat allowance, never its base64


@pytest.mark.parametrize("raw, tokens", [(12, 12), (8.0, 8), ("12", 12), (None, 0)])
def test_token_counts(raw, tokens):
    assert fields.count(raw) == tokens


@pytest.mark.parametrize("raw", [True, -1, 1.5, "many", "-3", [1], {"n": 1}])
def test_malformed_token_counts_raise_one_error(raw):
    with pytest.raises(InvalidUsage):
        fields.count(raw)
    with pytest.raises(InvalidUsage):
        fields.count(None, required=True)


RATE_CARD_AT_SET_UP = """
import builtins, io, json, pathlib, sys
import openai
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation.openai import OpenAIInstrumentor

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
OpenAIInstrumentor().instrument(tracer_provider=provider)
client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)
with suppress_instrumentation():  # the SDK's own lazy imports happen here, before files are watched
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

reads = []
real_read_bytes, real_open = pathlib.Path.read_bytes, io.open
pathlib.Path.read_bytes = lambda self: reads.append(str(self)) or real_read_bytes(self)
builtins.open = lambda file, *a, **k: reads.append(str(file)) or real_open(file, *a, **k)
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
[span] = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
print(json.dumps({"reads": [r for r in reads if r.endswith((".yaml", ".json"))],
                  "nano": span.attributes.get("tokentrail.cost.nano_usd")}))
"""


def test_the_rate_card_is_loaded_at_set_up_not_on_the_first_call(server, tmp_path):
    """An async app's first call must not read the rate-card files on its event loop."""
    import json
    import subprocess
    import sys

    script = tmp_path / "app.py"
    script.write_text(RATE_CARD_AT_SET_UP)
    out = subprocess.run([sys.executable, str(script), openai_api.base_url(server)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"reads": [], "nano": 9_000}  # gpt-4o-mini 20 in / 10 out at $0.15 / $0.60 per M
