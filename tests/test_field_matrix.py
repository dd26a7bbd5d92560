"""The field matrix: one priced LLM span per billed request in the OpenTelemetry set-ups users have.

Each case is one real ``opentelemetry-instrument python app.py`` subprocess in this environment
(the ``test`` extra: opentelemetry-distro, the official GenAI instrumentations, OpenLLMetry's,
the anthropic and mistral SDKs' own telemetry), a combination chosen by hiding installed
distributions (an entry-point-less copy earlier on ``PYTHONPATH``), by their load order and by
``OTEL_PYTHON_CONFIGURATOR``. The app makes real SDK calls over HTTP to the fake provider, each
under its own ``feature``; spans go to the ledger and to a JSON-lines probe exporter, metrics to
the console. Per call: one LLM span, priced, with the SDK's HTTP span under it; the ledger total
and the metrics equal the real spend to the nano-dollar; no ``tokentrail.unverified`` mark.
The manual set-up cases run ``python app.py`` alone: the app builds its providers and calls the
instrumentors itself, in both orders. The set-ups tokentrail cannot vouch for say so once and
mark every LLM span and ledger row.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

from tokentrail.processor.usage import is_genai_call
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as m
from tokentrail.testing import fake_provider

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import os

    import anthropic
    import boto3
    import openai
    from botocore.config import Config
    from google import genai
    from mistralai.client import Mistral

    import tokentrail

    url = os.environ["FAKE_URL"]
    hi = [{"role": "user", "content": "hi"}]
    oai = openai.OpenAI(base_url=url + "/openai/v1", api_key="k", max_retries=0)
    claude = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    gemini = genai.Client(api_key="k", http_options={"base_url": url})
    mistral = Mistral(api_key="k", server_url=url)
    bedrock = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="A",
                           aws_secret_access_key="s", config=Config(retries={"total_max_attempts": 1}))

    def openai_stream():
        list(oai.chat.completions.create(model="gpt-5.4-mini", messages=hi, stream=True,
                                         stream_options={"include_usage": True}))

    def anthropic_stream():
        with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=hi) as s:
            s.get_final_message()

    calls = {
        "openai": lambda: oai.chat.completions.create(model="gpt-5.4-mini", messages=hi),
        "openai-stream": openai_stream,
        "anthropic": lambda: claude.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=hi),
        "anthropic-stream": anthropic_stream,
        "gemini": lambda: gemini.models.generate_content(model="gemini-2.5-flash", contents="hi"),
        "mistral": lambda: mistral.chat.complete(model="mistral-small-latest", messages=hi),
        "bedrock": lambda: bedrock.converse(modelId="us.anthropic.claude-sonnet-4-20250514-v1:0",
                                            messages=[{"role": "user", "content": [{"text": "hi"}]}]),
    }
    for feature, call in calls.items():
        with tokentrail.attribute(tenant="acme", feature=feature):
            call()
    """
)

PROBE = textwrap.dedent(
    """
    import json, os
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        def export(self, spans):
            with open(os.environ["PROBE_SPANS"], "a") as out:
                for s in spans:
                    out.write(json.dumps({
                        "name": s.name, "scope": s.instrumentation_scope.name if s.instrumentation_scope else "",
                        "trace": s.context.trace_id, "id": s.context.span_id,
                        "parent": s.parent.span_id if s.parent else None,
                        "attributes": {k: v if isinstance(v, (str, int, float, bool)) else str(v)
                                       for k, v in (s.attributes or {}).items()},
                    }) + "\\n")
            return SpanExportResult.SUCCESS
    """
)

# A manual set-up (no opentelemetry-instrument): the app builds its providers as the README shows
# (two export paths: the second CostSpanProcessor records no metrics) and calls the instrumentors
# named in MATRIX_INSTRUMENTORS, in that order; APP runs between MANUAL and MANUAL_END.
MANUAL = textwrap.dedent(
    """
    import importlib
    import os

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from tokentrail_matrix_probe import JsonLinesExporter

    from tokentrail.ledger import LedgerSpanExporter
    from tokentrail.processor.attribution import AttributionSpanProcessor
    from tokentrail.processor.cost import CostSpanProcessor
    from tokentrail.processor.metrics import metric_views

    def export_path(exporter, **kwargs):
        if os.environ.get("MATRIX_COST_PROCESSOR") == "none":  # a set-up tokentrail cannot vouch for
            return BatchSpanProcessor(exporter)
        return CostSpanProcessor(BatchSpanProcessor(exporter), **kwargs)

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(AttributionSpanProcessor())
    tracer_provider.add_span_processor(export_path(LedgerSpanExporter()))
    tracer_provider.add_span_processor(export_path(JsonLinesExporter(), record_metrics=False))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader], views=metric_views()))
    active = []
    for value in os.environ["MATRIX_INSTRUMENTORS"].split(","):
        module, _, name = value.partition(":")
        instrumentor = getattr(importlib.import_module(module), name)()
        instrumentor.instrument(skip_dep_check=True)
        if instrumentor.is_instrumented_by_opentelemetry:
            active.append(value)
    print("instrumented:", ",".join(active))
    """
)
MANUAL_END = textwrap.dedent(
    """
    tracer_provider.shutdown()
    print(reader.get_metrics_data().to_json())
    """
)

# The fake provider's default usage of each call at the published prices, in nano-USD.
EXPECTED_NANO = {
    "openai": 60_000,  # gpt-5.4-mini: 20 in at $0.75/M + 10 out at $4.50/M
    "openai-stream": 60_000,
    "anthropic": 42_000_000,  # claude-sonnet-4-5: 8,000 in at $3/M + 1,200 out at $15/M
    "anthropic-stream": 42_000_000,
    "gemini": 23_600,  # gemini-2.5-flash: 12 in at $0.30/M + 8 out at $2.50/M
    "mistral": 5_100,  # mistral-small-latest: 10 in at $0.15/M + 6 out at $0.60/M
    "bedrock": 42_000_000,  # us.anthropic.claude-sonnet-4: 8,000 in at $3/M + 1,200 out at $15/M
}
TOTAL_NANO = 126_148_700  # $0.1261487 for the 7 calls


OFFICIAL = ("opentelemetry-instrumentation-genai-openai", "opentelemetry-instrumentation-genai-anthropic",
            "opentelemetry-instrumentation-google-genai")
OPENLLMETRY = ("opentelemetry-instrumentation-openai", "opentelemetry-instrumentation-anthropic",
               "opentelemetry-instrumentation-google-generativeai", "opentelemetry-instrumentation-bedrock")
NATIVE = {"ANTHROPIC_OPEN_TELEMETRY": "true", "MISTRAL_SDK_TELEMETRY": "global"}


def _dist_info(root: Path, name: str, *, entry_points: str = "") -> None:
    info = root / f"{name.replace('-', '_')}-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)


def _hidden(root: Path, names: tuple[str, ...]) -> Path:
    """importlib.metadata keeps the first distribution of a name on sys.path: these copies
    without entry points hide the installed ones."""
    for name in names:
        _dist_info(root, name)
    return root


def _first(root: Path, names: tuple[str, ...]) -> Path:
    """Copies of installed distributions' entry points ahead of site-packages: opentelemetry-
    instrument loads (and patches with) them before the others."""
    for name in names:
        try:
            _dist_info(root, name, entry_points=distribution(name).read_text("entry_points.txt") or "")
        except Exception:
            pytest.skip(f"{name} is not installed")
    return root


CASES = {
    # name: (distributions hidden, loaded first, environment)
    "tokentrail_alone": (("opentelemetry-distro", *OFFICIAL, *OPENLLMETRY), (), {}),
    "beside_distro_nothing_set": ((), (), NATIVE),
    "other_configurator_named": ((), (), {**NATIVE, "OTEL_PYTHON_DISTRO": "distro",
                                          "OTEL_PYTHON_CONFIGURATOR": "configurator"}),
    "tokentrail_configurator": ((), (), {**NATIVE, "OTEL_PYTHON_DISTRO": "tokentrail",
                                         "OTEL_PYTHON_CONFIGURATOR": "tokentrail"}),
    "official_only": (OPENLLMETRY, (), NATIVE),
    "openllmetry_only": (OFFICIAL, (), NATIVE),
    "others_loaded_first": ((), (*OFFICIAL, *OPENLLMETRY), NATIVE),
    "others_first_tokentrail_configurator": ((), (*OPENLLMETRY, *OFFICIAL), {
        **NATIVE, "OTEL_PYTHON_DISTRO": "tokentrail", "OTEL_PYTHON_CONFIGURATOR": "tokentrail"}),
}


def _entry_points(names: tuple[str, ...]) -> list[str]:
    """The instrumentors (module:class) the distributions ``names`` register, in that order."""
    found = []
    for name in names:
        try:
            dist = distribution(name)
        except Exception:
            pytest.skip(f"{name} is not installed")
        found += [ep.value for ep in dist.entry_points if ep.group == "opentelemetry_instrumentor"]
    return found


HTTP = ("opentelemetry-instrumentation-httpx",)
MANUAL_CASES = {
    # name: (distributions whose instrumentors the app calls, in order; environment)
    "manual_tokentrail_alone": ((*HTTP, "tokentrail"), {}),
    "manual_others_first": ((*HTTP, *OFFICIAL, *OPENLLMETRY, "tokentrail"), NATIVE),
    "manual_tokentrail_first": ((*HTTP, "tokentrail", *OPENLLMETRY, *OFFICIAL), NATIVE),
}


def _instrument_exe() -> str:
    return shutil.which("opentelemetry-instrument") or str(Path(sys.executable).with_name("opentelemetry-instrument"))


def _json_documents(text: str) -> list[dict]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        try:
            doc, i = decoder.raw_decode(text, i)
            docs.append(doc)
        except json.JSONDecodeError:
            i += 1
    return docs


def _cost_points(stdout: str) -> list[dict]:
    points = []
    for doc in _json_documents(stdout):
        for rm in doc.get("resource_metrics") or ():
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] == m.TOKENTRAIL_COST:
                        points.extend(metric["data"]["data_points"])
    return points


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    (root / "tokentrail_matrix_probe.py").write_text(PROBE)
    _dist_info(root, "tokentrail-matrix-probe",
               entry_points="[opentelemetry_traces_exporter]\nmatrix_probe = tokentrail_matrix_probe:JsonLinesExporter\n")
    return root


def run_app(tmp_path: Path, probe: Path, hidden=(), first=(), env_extra=None, app: str = APP, *, manual=False):
    (tmp_path / "app.py").write_text(app)
    paths = [str(_first(tmp_path / "first", first)), str(_hidden(tmp_path / "hidden", hidden)), str(probe)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENTRAIL_", "ANTHROPIC_", "MISTRAL_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        OTEL_TRACES_EXPORTER="tokentrail_ledger,matrix_probe",
        OTEL_METRICS_EXPORTER="console",
        OTEL_LOGS_EXPORTER="none",
        TOKENTRAIL_LEDGER=str(tmp_path / "ledger.db"),
        PROBE_SPANS=str(tmp_path / "spans.jsonl"),
    )
    env.update(env_extra or {})
    with fake_provider() as server:
        env["FAKE_URL"] = server.url
        command = [sys.executable, "app.py"] if manual else [_instrument_exe(), sys.executable, "app.py"]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    spans_file = tmp_path / "spans.jsonl"
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()] if spans_file.exists() else []
    return proc, spans


def ledger_llm_rows(tmp_path: Path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        return db.execute("SELECT feature, cost_status, cost_nano, unverified FROM spans WHERE llm = 1").fetchall()


def assert_one_priced_span_per_call(proc, spans, tmp_path: Path) -> None:
    by_feature: dict[str, list[dict]] = {}
    for span in spans:
        if is_genai_call(span["attributes"], strict=True):
            by_feature.setdefault(span["attributes"].get(attr.TOKENTRAIL_FEATURE), []).append(span)
    counts = {feature: [(s["name"], s["scope"]) for s in found] for feature, found in by_feature.items()}
    assert {f: len(found) for f, found in by_feature.items()} == dict.fromkeys(EXPECTED_NANO, 1), counts
    for feature, [llm] in by_feature.items():
        a = llm["attributes"]
        assert a[attr.TOKENTRAIL_TENANT] == "acme"
        assert (a[attr.TOKENTRAIL_COST_STATUS], a[attr.TOKENTRAIL_COST_NANO_USD]) == ("priced", EXPECTED_NANO[feature]), feature
        assert attr.TOKENTRAIL_UNVERIFIED not in a, feature  # exact: nothing to mark
        # The SDK's HTTP spans of the call (Bedrock's botocore has none here) stay under it.
        http = [s for s in spans if s["scope"] == "opentelemetry.instrumentation.httpx"
                and s["attributes"].get(attr.TOKENTRAIL_FEATURE) == feature]
        assert {(s["trace"], s["parent"]) for s in http} <= {(llm["trace"], llm["id"])}, feature
        if feature != "bedrock":
            assert http, feature
    rows = ledger_llm_rows(tmp_path)
    assert sorted((f, n) for f, _, n, _ in rows) == sorted(EXPECTED_NANO.items())
    assert sum(n for _, _, n, _ in rows) == TOTAL_NANO == sum(EXPECTED_NANO.values())
    assert [u for *_, u in rows] == [None] * len(EXPECTED_NANO)
    points = _cost_points(proc.stdout)
    assert sum(p["count"] for p in points) == len(EXPECTED_NANO)
    assert sum(p["sum"] for p in points) == pytest.approx(TOTAL_NANO / 1e9)


@pytest.mark.parametrize("case", list(CASES))
def test_one_priced_llm_span_per_call(tmp_path, probe, case):
    hidden, first, env = CASES[case]
    proc, spans = run_app(tmp_path, probe, hidden, first, env)
    assert "tokentrail:" not in proc.stderr, proc.stderr[-3000:]  # nothing to warn about
    assert_one_priced_span_per_call(proc, spans, tmp_path)


@pytest.mark.parametrize("case", list(MANUAL_CASES))
def test_manual_set_up_one_priced_llm_span_per_call(tmp_path, probe, case):
    dists, env = MANUAL_CASES[case]
    instrumentors = _entry_points(dists)
    assert sum(v.startswith("tokentrail.") for v in instrumentors) == 5
    proc, spans = run_app(tmp_path, probe, env_extra={**env, "MATRIX_INSTRUMENTORS": ",".join(instrumentors)},
                          app=MANUAL + APP + MANUAL_END, manual=True)
    assert f"instrumented: {','.join(instrumentors)}\n" in proc.stdout  # every one of them patched
    assert "tokentrail:" not in proc.stderr, proc.stderr[-3000:]
    assert_one_priced_span_per_call(proc, spans, tmp_path)


def test_defer_with_two_instrumentations_of_one_sdk_says_so_with_the_fix(tmp_path, probe):
    # Deferring, tokentrail leaves the SDKs to the others: two of them on one SDK cannot be told
    # apart, so it cannot vouch for one span per call and says so at start-up.
    proc, spans = run_app(tmp_path, probe, env_extra={"TOKENTRAIL_COEXISTENCE": "defer"})
    for sdk in ("openai", "anthropic"):
        assert f"TOKENTRAIL_COEXISTENCE=defer and 2 instrumentations of {sdk}" in proc.stderr, proc.stderr[-3000:]
    assert "Fix: unset TOKENTRAIL_COEXISTENCE" in proc.stderr
    assert not [s for s in spans if s["scope"].startswith("tokentrail")]
    # ... and marks what it cannot vouch for: every LLM span and ledger row carries the reason
    mark = "defer_shared_sdk:anthropic,openai"
    assert f"tokentrail.unverified={mark}" in proc.stderr
    llm = [s for s in spans if is_genai_call(s["attributes"], strict=True)]
    assert llm and {(s["scope"], s["attributes"].get(attr.TOKENTRAIL_UNVERIFIED)) for s in llm} == {
        (s["scope"], mark) for s in llm}
    rows = ledger_llm_rows(tmp_path)
    assert rows and {u for *_, u in rows} == {mark}


def test_manual_ledger_without_cost_processor_marks_every_row_and_the_report_says_how_much(tmp_path, probe):
    # The official instrumentations alone and the ledger straight behind a BatchSpanProcessor:
    # their spans reach it unpriced, so it cannot vouch for one row per call; it says so with
    # the fix and marks each row; the report tells that share of the spend.
    instrumentors = _entry_points((*HTTP, *OFFICIAL))
    proc, _ = run_app(tmp_path, probe, env_extra={"MATRIX_INSTRUMENTORS": ",".join(instrumentors),
                                                  "MATRIX_COST_PROCESSOR": "none"},
                      app=MANUAL + APP + MANUAL_END, manual=True)
    assert proc.stderr.count("LLM spans reach LedgerSpanExporter without CostSpanProcessor") == 1, proc.stderr[-3000:]
    rows = ledger_llm_rows(tmp_path)
    # The three SDKs they instrument, priced from their spans; each anthropic call twice: the
    # SDK's own span beside the official one, which nothing dropped (exactly what the mark is for).
    once = ("openai", "openai-stream", "gemini")
    assert sorted((f, s, n) for f, s, n, _ in rows) == sorted(
        [(f, "priced", EXPECTED_NANO[f]) for f in once] + [(f, "priced", 42_000_000) for f in ("anthropic", "anthropic-stream")] * 2)
    [mark] = {u for *_, u in rows}
    assert mark.startswith("ledger_without_cost_processor:opentelemetry.instrumentation.")
    assert f"tokentrail.unverified={mark}" in proc.stderr
    unverified = sum(n for _, _, n, _ in rows)
    assert unverified == 60_000 * 2 + 23_600 + 42_000_000 * 4
    report = subprocess.run([sys.executable, "-m", "tokentrail.cli", "report", "--ledger", str(tmp_path / "ledger.db"),
                             "--format", "json"], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    total = json.loads(report.stdout)["total"]
    assert (total["cost_nano_usd"], total["unverified_calls"], total["unverified_cost_nano_usd"]) == (
        unverified, 7, unverified)
