"""A small stand-in for the Collector's ``prometheus`` exporter, used by the tests.

The deployed path is: app (OTel SDK, OTLP/HTTP) -> Collector (``otlp`` receiver -> ``prometheus`` exporter with
``enable_open_metrics: true``) <- scraped by Prometheus with exemplar storage. The Collector cannot run in CI, and
the Debian Prometheus (2.42) predates Prometheus' OTLP receiver (2.47+), so the test path replaces only the
Collector hop with this server: it accepts the very OTLP/HTTP protobuf requests the SDK's exporter sends,
keeps cumulative state per series like the exporter's accumulator, and serves an OpenMetrics page with the
Collector's naming (``promnames``), its ``job``/``instance`` mapping from ``service.name``/``service.instance.id``,
``otel_scope_name``/``otel_scope_version`` labels,
exemplars with ``trace_id``/``span_id``, and the one transform collector-config.yaml applies to metrics (copy the
``deployment.environment.name`` resource attribute onto the points).
"""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tokentrail.dashboards.promnames import label, metric_name
from tokentrail.semconv import attributes

_CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
# Resource attributes the Collector config copies onto metric points (transform/resource-to-points).
RESOURCE_TO_POINTS = (attributes.DEPLOYMENT_ENVIRONMENT_NAME,)
_SERVICE_NAME, _SERVICE_NAMESPACE, _SERVICE_INSTANCE = "service.name", "service.namespace", "service.instance.id"


def _any_value(value) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    raw = getattr(value, kind)
    if kind == "bool_value":
        return "true" if raw else "false"
    if kind == "double_value":
        return _num(raw)
    if kind in ("array_value", "kvlist_value"):
        return str(raw)
    if kind == "bytes_value":
        return raw.hex()
    return str(raw)


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: tuple[tuple[str, str], ...], extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = list(pairs) + list(extra)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.series: dict[tuple, dict] = {}


class OpenMetricsBridge:
    """OTLP/HTTP metrics in (``POST /v1/metrics``), OpenMetrics out (``GET /metrics``) on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self.pushes = 0
        self.scrapes_after_push = 0
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 200
                try:
                    bridge.ingest(ExportMetricsServiceRequest.FromString(body))
                except Exception:  # a malformed request is the sender's problem, as in the Collector
                    status = 400
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                page = bridge.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                with bridge._lock:
                    bridge.scrapes_after_push += 1

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "OpenMetricsBridge":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- OTLP -> state -------------------------------------------------------------------------------
    def ingest(self, request: ExportMetricsServiceRequest) -> None:
        with self._lock:
            for rm in request.resource_metrics:
                res = {kv.key: _any_value(kv.value) for kv in rm.resource.attributes}
                job = res.get(_SERVICE_NAME, "")
                if res.get(_SERVICE_NAMESPACE):
                    job = f"{res[_SERVICE_NAMESPACE]}/{job}"
                base = []
                if job:
                    base.append(("job", job))
                if res.get(_SERVICE_INSTANCE):
                    base.append(("instance", res[_SERVICE_INSTANCE]))
                copied = {label(k): res[k] for k in RESOURCE_TO_POINTS if k in res}
                for sm in rm.scope_metrics:
                    # Like the exporter (and the OTel Prometheus compatibility spec): every point carries its
                    # instrumentation scope, so the dashboards must aggregate it away.
                    scope = [("otel_scope_name", sm.scope.name)] if sm.scope.name else []
                    if sm.scope.version:
                        scope.append(("otel_scope_version", sm.scope.version))
                    for metric in sm.metrics:
                        self._ingest_metric(metric, base + scope, copied)
            self.pushes += 1
            self.scrapes_after_push = 0

    def _family(self, metric, instrument: str, kind: str) -> _Family:
        name = metric_name(metric.name, metric.unit, instrument)
        if name.endswith("_total") and kind == "counter":
            name = name[: -len("_total")]  # OpenMetrics family names omit the counter suffix
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _Family(name, kind, metric.description)
        return fam

    @staticmethod
    def _key(point, base, copied) -> tuple:
        attrs = {label(kv.key): _any_value(kv.value) for kv in point.attributes}
        for k, v in copied.items():
            attrs.setdefault(k, v)
        return tuple(base) + tuple(sorted(attrs.items()))

    def _ingest_metric(self, metric, base, copied) -> None:
        kind = metric.WhichOneof("data")
        if kind == "sum":
            monotonic = metric.sum.is_monotonic
            fam = self._family(metric, "counter" if monotonic else "updowncounter", "counter" if monotonic else "gauge")
            for p in metric.sum.data_points:
                key = self._key(p, base, copied)
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                if metric.sum.aggregation_temporality != _CUMULATIVE and key in fam.series:
                    value += fam.series[key]["value"]
                fam.series[key] = {"value": value}
        elif kind == "gauge":
            fam = self._family(metric, "gauge", "gauge")
            for p in metric.gauge.data_points:
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                fam.series[self._key(p, base, copied)] = {"value": value}
        elif kind == "histogram":
            fam = self._family(metric, "histogram", "histogram")
            for p in metric.histogram.data_points:
                key = self._key(p, base, copied)
                counts = list(p.bucket_counts)
                total, count = p.sum, p.count
                old = fam.series.get(key)
                if metric.histogram.aggregation_temporality != _CUMULATIVE and old:
                    counts = [a + b for a, b in zip(counts, old["counts"])]
                    total += old["sum"]
                    count += old["count"]
                exemplars = dict(old["exemplars"]) if old else {}
                bounds = list(p.explicit_bounds)
                for ex in p.exemplars:
                    value = ex.as_double if ex.WhichOneof("value") == "as_double" else float(ex.as_int)
                    idx = next((i for i, b in enumerate(bounds) if value <= b), len(bounds))
                    exemplars[idx] = (value, ex.trace_id.hex(), ex.span_id.hex(), ex.time_unix_nano)
                fam.series[key] = {"bounds": bounds, "counts": counts, "sum": total, "count": count,
                                   "exemplars": exemplars}
        # Exponential histograms and summaries are not produced by tokentrail's views.

    # --- state -> OpenMetrics ------------------------------------------------------------------------
    def render(self) -> str:
        out = []
        with self._lock:
            for fam in sorted(self._families.values(), key=lambda f: f.name):
                out.append(f"# TYPE {fam.name} {fam.kind}")
                if fam.help:
                    out.append(f"# HELP {fam.name} {_escape(fam.help)}")
                for key, s in sorted(fam.series.items()):
                    if fam.kind == "counter":
                        out.append(f"{fam.name}_total{_labels(key)} {_num(s['value'])}")
                    elif fam.kind == "gauge":
                        out.append(f"{fam.name}{_labels(key)} {_num(s['value'])}")
                    else:
                        cumulative = 0
                        les = [_num(b) for b in s["bounds"]] + ["+Inf"]
                        for i, (le, c) in enumerate(zip(les, s["counts"])):
                            cumulative += c
                            line = f"{fam.name}_bucket{_labels(key, (('le', le),))} {cumulative}"
                            if i in s["exemplars"]:
                                value, trace_id, span_id, ts = s["exemplars"][i]
                                line += f' # {{trace_id="{trace_id}",span_id="{span_id}"}} {_num(value)} {ts / 1e9:.3f}'
                            out.append(line)
                        out.append(f"{fam.name}_sum{_labels(key)} {_num(s['sum'])}")
                        out.append(f"{fam.name}_count{_labels(key)} {s['count']}")
        out.append("# EOF")
        return "\n".join(out) + "\n"
