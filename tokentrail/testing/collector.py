"""A real OpenTelemetry Collector binary in tests: started with config files on loopback, ready once its health
check answers, always stopped; plus readers for what it writes (file exporter JSON lines, Prometheus text page)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class CollectorFailed(RuntimeError):
    pass


def validate(binary: Path, configs: Iterable[Path], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``otelcol validate``: exit code 0 when the Collector accepts the merged configs."""
    return subprocess.run([str(binary), "validate", *(f"--config={c}" for c in configs)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


class Collector:
    """``binary --config=...`` with ``env`` added; ``health_port`` is its health_check extension's port."""

    def __init__(self, binary: Path, configs: Iterable[Path], *, health_port: int, log_path: Path,
                 env: Mapping[str, str] | None = None, feature_gates: Iterable[str] = ()) -> None:
        self.args = [str(binary), *(f"--config={c}" for c in configs)]
        if feature_gates:
            self.args.append("--feature-gates=" + ",".join(feature_gates))
        self.env = {**os.environ, **(env or {})}
        self.health_url = f"http://127.0.0.1:{health_port}/"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, limit_s: float = 60) -> "Collector":
        log = self.log_path.open("w")
        try:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        try:
            deadline = time.monotonic() + limit_s
            while not self._healthy():
                if self.proc.poll() is not None:
                    raise CollectorFailed(f"the Collector exited with {self.proc.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise CollectorFailed(f"the Collector was not healthy within {limit_s:.0f}s:\n{self.log_tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- OTLP/JSON in, as any language's SDK sends it -------------------------------------------------------------
def _otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def otlp_json(spans: Iterable[tuple[str, str, int, Mapping[str, Any]]], service: str = "service",
              scope: str = "instrumentation") -> bytes:
    """An ExportTraceServiceRequest (OTLP/JSON) of (trace id, span id, start ns, attributes) client spans."""
    out = [{
        "traceId": trace_id, "spanId": span_id, "name": "chat", "kind": 3,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000_000),
        "attributes": [{"key": k, "value": _otlp_value(v)} for k, v in attributes.items()],
    } for trace_id, span_id, start, attributes in spans]
    request = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": scope}, "spans": out}],
    }]}
    return json.dumps(request).encode()


def post_otlp(base_url: str, body: bytes) -> None:
    """POST an OTLP/JSON body to a Collector's OTLP/HTTP receiver (``/v1/traces``)."""
    request = urllib.request.Request(base_url + "/v1/traces", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        if resp.status != 200:
            raise CollectorFailed(f"OTLP/HTTP answered {resp.status}")


# --- the file exporter's OTLP JSON lines -------------------------------------------------------------------
@dataclass
class ExportedSpan:
    trace_id: str
    span_id: str
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    error: bool = False


def _value(v: Mapping[str, Any]) -> Any:
    if "intValue" in v:
        return int(v["intValue"])  # int64 is a JSON string in OTLP/JSON
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if key in v:
            return v[key]
    return None


def _attributes(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value", {})) for kv in items or ()}


_STATUS_ERROR = 2


def read_spans(path: Path) -> list[ExportedSpan]:
    """Every span the file exporter wrote so far (one ExportTraceServiceRequest per line; a line still being
    written is left for the next read)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            request = json.loads(line)
        except ValueError:
            continue
        for rs in request.get("resourceSpans", []):
            resource = _attributes(rs.get("resource", {}).get("attributes"))
            for ss in rs.get("scopeSpans", []):
                scope = _attributes(ss.get("scope", {}).get("attributes"))
                for s in ss.get("spans", []):
                    out.append(ExportedSpan(
                        trace_id=s["traceId"], span_id=s["spanId"], name=s.get("name", ""),
                        attributes=_attributes(s.get("attributes")), resource=resource, scope=scope,
                        events=[_attributes(e.get("attributes")) for e in s.get("events", [])],
                        error=s.get("status", {}).get("code") == _STATUS_ERROR))
    return out


# --- the prometheus exporter's page ------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> list[Sample]:
    """The samples of a Prometheus text-format page (``text/plain; version=0.0.4``)."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain; version=0.0.4"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append(Sample(m.group(1), labels, float(m.group(3))))
    return out
