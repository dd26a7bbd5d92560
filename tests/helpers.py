"""Plain helpers shared by the test modules (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import socket
from decimal import Decimal

from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.semconv import attributes as attr


def usd(span) -> Decimal:
    """The span's exact cost in USD, from the integer nano-USD attribute."""
    return Decimal(span.attributes[attr.TOKENTRAIL_COST_NANO_USD]) / Decimal(10**9)


def only_llm_span(pipeline):
    spans = pipeline.llm_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def task_span(pipeline, name):
    """The ended span of the task ``name`` (the one with an outcome)."""
    [span] = [s for s in pipeline.spans() if s.attributes.get(attr.TOKENTRAIL_TASK_NAME) == name
              and attr.TOKENTRAIL_TASK_OUTCOME in s.attributes]
    return span


def user_message(text: str = "Summarise the quarterly report for me."):
    return [{"role": "user", "content": text}]


ask = user_message


def reinstrument(pipeline):
    """Instrument OpenAI again, for a test that changed the environment: it is read by ``instrument()``."""
    instrumentor = OpenAIInstrumentor()  # the pipeline's (instrumentors are singletons)
    instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
