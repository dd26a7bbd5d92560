"""Living with other GenAI instrumentations: which SDKs we patch, and the call context.

Ours wins by default: our span is the LLM span of the call, and the other instrumentation's
span of the same call is dropped at export (``tokentrail.processor.dedup``).
``TOKENTRAIL_COEXISTENCE=defer`` leaves the SDKs to the other instrumentation; our processor
then prices and attributes their spans.
"""

from __future__ import annotations

import os

from opentelemetry import context as otel_context

ENV = "TOKENTRAIL_COEXISTENCE"
DEFER = "defer"  # leave the SDKs to the other instrumentation; we only price and attribute

# OpenLLMetry's context key: its wrappers create no span while it is set (semconv_ai).
TRACELOOP_SUPPRESS_KEY = "suppress_language_model_instrumentation"


def deferring() -> bool:
    return os.environ.get(ENV, "").strip().lower() == DEFER


def should_instrument(provider: str) -> bool:
    """Whether our instrumentor patches ``provider``'s SDK (False only when the user defers)."""
    return not deferring()


def call_context(ctx: otel_context.Context) -> otel_context.Context:
    """``ctx`` as our wrapped SDK call runs in: OpenLLMetry makes no duplicate span inside it."""
    return otel_context.set_value(TRACELOOP_SUPPRESS_KEY, True, ctx)
