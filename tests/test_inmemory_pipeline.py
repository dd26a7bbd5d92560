"""``InMemoryPipeline`` gives back what it changes: tokentrail's remembered state, the instrumentors,
the providers of tokentrail's own telemetry. Real openai SDK against the session's fake provider (conftest)."""

from __future__ import annotations

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tokentrail
from tokentrail import state, telemetry
from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline, openai_api


def chat(server) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as client:
        server.reset()  # the session's server (conftest): only this reply scripted
        server.enqueue(openai_api.reply(prompt_tokens=1000, completion_tokens=100))
        return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_remembered_state_is_forgotten_on_enter_and_on_exit():
    remembered = state.BoundedSet(16)  # any registry tokentrail keeps registers its reset like this
    remembered.add("left by an earlier test")
    with InMemoryPipeline(instrument=False):
        assert "left by an earlier test" not in remembered and len(remembered) == 0
        remembered.add("made inside the pipeline")
    assert len(remembered) == 0


def test_an_instrumentor_that_was_on_before_is_on_again_after(server):
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(skip_dep_check=True)  # the app's own set-up, before the test's pipeline
    try:
        with InMemoryPipeline(instrument=[instrumentor]) as pipeline:
            with tokentrail.attribute(tenant="acme"):
                assert chat(server).usage.prompt_tokens == 1000
            [span] = pipeline.llm_spans()
            assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
            assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] > 0
        assert instrumentor.is_instrumented_by_opentelemetry
    finally:
        instrumentor.uninstrument()


def test_an_instrumentor_off_before_is_off_after(server):
    instrumentor = OpenAIInstrumentor()
    assert not instrumentor.is_instrumented_by_opentelemetry
    with InMemoryPipeline(instrument=[instrumentor]) as pipeline:
        chat(server)
        assert len(pipeline.llm_spans()) == 1
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_task_spans_go_to_the_pipeline_then_back_to_the_previous_providers(server):
    exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = telemetry.use_providers(app_provider, None)
    try:
        with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as pipeline:
            with tokentrail.task("inside", id="run-1"):
                chat(server)
            names = [s.name for s in pipeline.spans()]
            assert "task inside" in names and len(pipeline.llm_spans()) == 1
        with tokentrail.task("after", id="run-2"):
            pass
        assert [s.name for s in exporter.get_finished_spans()] == ["task after"]
    finally:
        telemetry.use_providers(*previous)
        app_provider.shutdown()
