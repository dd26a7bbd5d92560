"""Zero-code setup: ``opentelemetry-instrument python app.py`` with tokentrail installed.

``TokentrailDistro`` sets exporter defaults; ``TokentrailConfigurator`` builds the SDK through
the SDK's own ``_initialize_components`` hooks, adding:

* ``AttributionSpanProcessor`` first (owner on every span at start),
* ``CostSpanProcessor`` around each exporter's ``BatchSpanProcessor`` (prices foreign LLM
  spans into the exported copy, records cost metrics once per call),
* tokentrail's metric views (buckets, attribute allowlist, cardinality limit) on the
  MeterProvider the SDK builds from ``OTEL_METRICS_EXPORTER``.

When another configurator wins, our instrumentors still price their own spans before end,
record metrics via ``record_llm_call``, and ``post_instrument`` adds attribution to the global
TracerProvider. ``post_instrument`` also joins the parent's trace when the process was started
with ``TRACEPARENT``/``BAGGAGE`` in its environment (a subprocess hop needs no code change).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

from opentelemetry import trace as trace_api
from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk import _configuration as sdk_configuration
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tokentrail import propagation
from tokentrail.processor.attribution import AttributionSpanProcessor, ensure_installed
from tokentrail.processor.cost import CostSpanProcessor, pipeline_active
from tokentrail.processor.metrics import metric_views

_logger = logging.getLogger(__name__)

_OTEL_CONFIG_FILE = "OTEL_CONFIG_FILE"


class TokentrailDistro(BaseDistro):
    """Exporter defaults: OTLP traces and metrics unless the environment says otherwise."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        # Logs are not ours to turn on.
        os.environ.setdefault(OTEL_LOGS_EXPORTER, "none")


def _export_processor_factory(inner: Any = None):
    """``exporter -> CostSpanProcessor(BatchSpanProcessor(exporter))``; only the first wrapper
    records metrics, so several exporters do not count each call several times."""
    state = {"first": True}
    make_inner = inner or BatchSpanProcessor

    def factory(exporter: Any) -> CostSpanProcessor:
        record = state["first"]
        state["first"] = False
        return CostSpanProcessor(make_inner(exporter), record_metrics=record)

    return factory


class _MeterProviderWithViews(MeterProvider):
    def __init__(self, *args: Any, views: Any = (), **kwargs: Any) -> None:
        super().__init__(*args, views=(*tuple(views or ()), *metric_views()), **kwargs)


@contextmanager
def _sdk_meter_provider_with_views() -> Iterator[None]:
    # _initialize_components has no views hook: let it build the MeterProvider exactly as it
    # would from OTEL_METRICS_EXPORTER, with our views added.
    original = sdk_configuration.MeterProvider
    sdk_configuration.MeterProvider = _MeterProviderWithViews
    try:
        yield
    finally:
        sdk_configuration.MeterProvider = original


class TokentrailConfigurator(_OTelSDKConfigurator):
    """The SDK configurator plus tokentrail's processors and metric views."""

    def _configure(self, **kwargs: Any) -> None:
        if os.environ.get(_OTEL_CONFIG_FILE):
            # Declarative configuration describes its own pipeline; add attribution at least.
            super()._configure(**kwargs)
            ensure_installed()
            return
        kwargs["span_processors"] = [AttributionSpanProcessor(), *(kwargs.get("span_processors") or ())]
        kwargs["export_span_processor"] = _export_processor_factory(kwargs.get("export_span_processor"))
        with _sdk_meter_provider_with_views():
            sdk_configuration._initialize_components(**kwargs)
        provider = trace_api.get_tracer_provider()
        if hasattr(provider, "add_span_processor") and not pipeline_active(provider):
            # No trace exporter configured: still price and meter every LLM call.
            provider.add_span_processor(CostSpanProcessor(None))


def post_instrument() -> None:
    """``opentelemetry_post_instrument`` hook: runs after every instrumentor, whichever
    configurator set the SDK up."""
    ensure_installed()
    try:
        propagation.attach_from_environ()
    except Exception:  # never hurt the app: a bad TRACEPARENT only means a new trace
        _logger.debug("tokentrail: could not join the parent context from the environment", exc_info=True)
