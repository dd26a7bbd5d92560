"""Zero-code setup: ``opentelemetry-instrument python app.py`` with tokentrail installed.

``TokentrailDistro`` sets exporter defaults; ``TokentrailConfigurator`` builds the SDK through
the SDK's own ``_initialize_components`` hooks, adding:

* ``AttributionSpanProcessor`` first (owner on every span at start),
* ``CostSpanProcessor`` around each exporter's ``BatchSpanProcessor`` (prices foreign LLM
  spans into the exported copy, records cost metrics once per call),
* tokentrail's metric views (buckets, attribute allowlist, cardinality limit) on the
  MeterProvider the SDK builds from ``OTEL_METRICS_EXPORTER``.

``post_instrument`` runs after every instrumentor whichever configurator won (another
distro's, ``OTEL_PYTHON_CONFIGURATOR``): it leaves one instrumentation per SDK call
(``coexistence.settle``), adds attribution, and wraps each processor of the global
TracerProvider in a ``CostSpanProcessor``, so every export path drops duplicates, prices and
meters each call once. Metric views cannot be added to a MeterProvider already built: buckets
come from the instruments' advice, the cardinality limit is then the SDK's default. It also joins
the parent's trace when the process was started with ``TRACEPARENT``/``BAGGAGE`` in its
environment (a subprocess hop needs no code change).
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
from tokentrail.instrumentation import coexistence
from tokentrail.processor import exactness, sdk
from tokentrail.processor.attribution import AttributionSpanProcessor, ensure_installed
from tokentrail.processor.cost import CostSpanProcessor, pipeline_active
from tokentrail.processor.metrics import metric_views
from tokentrail.semconv import attributes as attr

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

    def factory(exporter: Any) -> Any:
        if isinstance(exporter, (AttributionSpanProcessor, CostSpanProcessor)):
            return exporter  # already ours (wrapping a built provider's processors)
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


def price_every_export_path(tracer_provider: Any = None) -> bool:
    """Wrap each processor of an SDK TracerProvider (the global one by default) built without
    CostSpanProcessor; one that meters only when it has none. False, and a warning naming the
    fix, for a provider tokentrail cannot see into."""
    provider = tracer_provider if tracer_provider is not None else trace_api.get_tracer_provider()
    try:
        if pipeline_active(provider):
            return True
        if isinstance(provider, trace_api.ProxyTracerProvider):
            return False  # set later by the app: its set-up decides (see the README)
        if not sdk.wrap_span_processors(provider, _export_processor_factory(lambda processor: processor)):
            mark = exactness.note(exactness.FOREIGN_TRACER_PROVIDER, type(provider).__name__)
            _logger.warning(
                "tokentrail: the TracerProvider is %s, not the OpenTelemetry SDK's: tokentrail cannot drop other "
                "instrumentations' duplicate LLM spans or price them, so exported spans may count a call twice; "
                "LLM spans are marked %s=%s. Fix: add tokentrail.processor.cost.CostSpanProcessor in front of its "
                "exporter, or keep only tokentrail's instrumentation.",
                type(provider).__name__, attr.TOKENTRAIL_UNVERIFIED, mark)
            return False
        if not pipeline_active(provider):
            provider.add_span_processor(CostSpanProcessor(None))  # no exporter: still meter each call
        return True
    except Exception:  # never hurt the app
        _logger.debug("tokentrail: could not add CostSpanProcessor", exc_info=True)
        return False


def post_instrument() -> None:
    """``opentelemetry_post_instrument`` hook: runs after every instrumentor, whichever
    configurator set the SDK up."""
    coexistence.settle()
    ensure_installed()
    price_every_export_path()
    try:
        propagation.attach_from_environ()
    except Exception:  # never hurt the app: a bad TRACEPARENT only means a new trace
        _logger.debug("tokentrail: could not join the parent context from the environment", exc_info=True)
