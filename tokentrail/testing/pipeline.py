"""InMemoryPipeline: the whole tokentrail pipeline in memory, for tests (ours and users').

    with InMemoryPipeline() as pipeline:
        with tokentrail.attribute(tenant="acme"):
            client.chat.completions.create(...)
        [span] = pipeline.llm_spans()
        assert span.attributes["tokentrail.tenant"] == "acme"
        assert pipeline.metric_sum("tokentrail.cost", tenant="acme") == ...

It builds a TracerProvider with AttributionSpanProcessor + CostSpanProcessor(SimpleSpanProcessor(
InMemorySpanExporter)) and a MeterProvider with an InMemoryMetricReader and tokentrail's views.
What it changes in the process, and gives back on exit:

- ``tokentrail.state.reset()`` on enter and on exit: every registry and memo tokentrail keeps
  (seen spans, budgets, task admissions, inbound tenants...) starts empty, and the test leaves none behind;
- the installed tokentrail instrumentors are instrumented against its providers (one already
  instrumented is re-pointed), and uninstrumented on exit (one that was instrumented before is
  instrumented again, against the global providers);
- tokentrail's own task spans and task/budget/trust metrics go to its providers
  (``telemetry.use_providers``); the previous providers are restored on exit;
- the breakers are installed (``tokentrail.breakers.install()``, idempotent, left installed).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any, Iterable, Mapping

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tokentrail import breakers, state, telemetry
from tokentrail.processor.attribution import AttributionSpanProcessor
from tokentrail.processor.cost import CostSpanProcessor
from tokentrail.processor.metrics import metric_views
from tokentrail.processor.usage import is_genai_call
from tokentrail.semconv import attributes as attr

_logger = logging.getLogger(__name__)

_INSTRUMENTOR_GROUP = "opentelemetry_instrumentor"
_OUR_PREFIX = "tokentrail"

#: Short filter keys accepted by the metric helpers, e.g. ``metric_sum(name, tenant="acme")``.
_SHORT = {
    "tenant": attr.TOKENTRAIL_TENANT,
    "feature": attr.TOKENTRAIL_FEATURE,
    "team": attr.TOKENTRAIL_TEAM,
    "provider": attr.GEN_AI_PROVIDER_NAME,
    "model": attr.GEN_AI_REQUEST_MODEL,
    "operation": attr.GEN_AI_OPERATION_NAME,
    "status": attr.TOKENTRAIL_COST_STATUS,
    "token_type": attr.TOKENTRAIL_TOKEN_TYPE,
    "attributed": attr.TOKENTRAIL_ATTRIBUTED,
    "error_type": attr.ERROR_TYPE,
}


def tokentrail_instrumentors() -> list[Any]:
    """Instances of the installed tokentrail instrumentors (entry points named tokentrail_*).

    Loading one never needs its SDK (that is imported when it instruments), so a failure here is a bug.
    """
    return [ep.load()() for ep in entry_points(group=_INSTRUMENTOR_GROUP) if ep.name.startswith(_OUR_PREFIX)]


class InMemoryPipeline:
    """Context manager: in-memory providers with tokentrail's processors and views.

    ``instrument``: True (the installed tokentrail instrumentors whose SDK is installed), False,
    or an iterable of instrumentor instances (instrumented as given, no dependency check). ``resource_attributes`` e.g. ``{"deployment.environment.name": "prod"}``.
    """

    def __init__(
        self,
        *,
        instrument: bool | Iterable[Any] = True,
        resource_attributes: Mapping[str, Any] | None = None,
        cardinality_limit: int | None = None,
    ) -> None:
        self._instrument = instrument
        self.resource = Resource.create(dict(resource_attributes or {}))
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(
            metric_readers=[self.reader], resource=self.resource,
            views=metric_views(cardinality_limit), shutdown_on_exit=False)
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(AttributionSpanProcessor())
        self.cost_processor = CostSpanProcessor(SimpleSpanProcessor(self.exporter), meter_provider=self.meter_provider)
        self.tracer_provider.add_span_processor(self.cost_processor)
        self.instrumentors: list[Any] = []
        self._was_instrumented: list[Any] = []
        self._previous_providers: tuple[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> "InMemoryPipeline":
        state.reset()
        breakers.install()
        discovered = self._instrument is True
        targets = tokentrail_instrumentors() if discovered else list(self._instrument or ())
        self._previous_providers = telemetry.use_providers(self.tracer_provider, self.meter_provider)
        try:
            for inst in targets:
                if inst.is_instrumented_by_opentelemetry:
                    inst.uninstrument()  # re-point it at our providers
                    self._was_instrumented.append(inst)
                # OpenTelemetry's dependency check skips (and logs) a discovered one whose SDK is missing
                inst.instrument(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
                                skip_dep_check=not discovered)
                if inst.is_instrumented_by_opentelemetry:
                    self.instrumentors.append(inst)
        except BaseException:
            self.close()  # give back what was changed so far; the error is the test's to see
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for inst in reversed(self.instrumentors):
            try:
                inst.uninstrument()
                if inst in self._was_instrumented:
                    inst.instrument(skip_dep_check=True)
            except Exception:
                _logger.debug("could not uninstrument %r", inst, exc_info=True)
        self.instrumentors.clear()
        self._was_instrumented.clear()
        if self._previous_providers is not None:
            telemetry.use_providers(*self._previous_providers)
            self._previous_providers = None
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        state.reset()

    def tracer(self, name: str = "tokentrail.tests"):
        return self.tracer_provider.get_tracer(name)

    # -- spans -------------------------------------------------------------------------
    def spans(self) -> list[ReadableSpan]:
        """Every finished span, as exported (LLM spans of other instrumentations priced)."""
        self.tracer_provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if is_genai_call(s.attributes)]

    def clear(self) -> None:
        self.exporter.clear()

    # -- metrics -----------------------------------------------------------------------
    def metrics(self):
        """The reader's MetricsData (cumulative since the pipeline started)."""
        return self.reader.get_metrics_data()

    def metric_points(self, name: str, **filters: Any) -> list[Any]:
        """Data points of metric ``name`` whose attributes match ``filters`` (short keys such as
        tenant=, feature=, token_type=, or full attribute names via ``attributes={...}``)."""
        wanted = {_SHORT.get(k, k): v for k, v in filters.items() if k != "attributes"}
        wanted.update(filters.get("attributes") or {})
        data = self.metrics()
        points = []
        for rm in getattr(data, "resource_metrics", None) or ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attrs = point.attributes or {}
                        if all(attrs.get(k) == v for k, v in wanted.items()):
                            points.append(point)
        return points

    def metric_sum(self, name: str, **filters: Any) -> float:
        """Sum over matching points: counter values, or histogram sums (e.g. USD for tokentrail.cost)."""
        return sum(getattr(p, "value", None) if hasattr(p, "value") else p.sum
                   for p in self.metric_points(name, **filters))

    def metric_count(self, name: str, **filters: Any) -> int:
        """Number of recorded measurements for a histogram (e.g. calls for tokentrail.cost)."""
        return sum(p.count for p in self.metric_points(name, **filters))
