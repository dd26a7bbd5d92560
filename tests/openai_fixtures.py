"""Shared fixtures for the OpenAI instrumentation tests: the real openai SDK against the fake
provider on 127.0.0.1, spans collected by the in-memory tokentrail pipeline."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline, fake_provider, openai_api


@pytest.fixture(scope="module")
def server():
    with fake_provider() as running:
        yield running


@pytest.fixture
def pipeline(server):
    server.reset()
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as running:
        yield running


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
def aclient(server):
    return openai.AsyncOpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0)


def reinstrument(pipeline):
    """Instrument again, for a test that changed the environment: it is read by ``instrument()``."""
    instrumentor = OpenAIInstrumentor()  # the pipeline's (instrumentors are singletons)
    instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider)


def only_llm_span(pipeline):
    spans = pipeline.llm_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def usd(span) -> Decimal:
    """The span's exact cost in USD, from the integer nano-USD attribute."""
    return Decimal(span.attributes[attr.TOKENTRAIL_COST_NANO_USD]) / Decimal(10**9)


def user_message(text: str = "Summarise the quarterly report for me."):
    return [{"role": "user", "content": text}]
