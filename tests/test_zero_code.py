"""Zero-code: ``opentelemetry-instrument python app.py`` in a real subprocess.

The app only calls the openai SDK (against the fake provider) inside
``tokentrail.attribute(...)``; the console exporters print what would be exported, parsed
here as JSON. Three set-ups:

(a) tokentrail is the only distro/configurator installed,
(b) beside opentelemetry-distro, chosen with OTEL_PYTHON_DISTRO/OTEL_PYTHON_CONFIGURATOR,
(c) another configurator won: the post-instrument hook adds attribution and wraps the SDK's
    export processors in CostSpanProcessor, so spans are owned, priced and metered once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as m
from tokentrail.testing import fake_provider, openai_api

pytestmark = pytest.mark.slow  # every test starts Python subprocesses

APP = textwrap.dedent(
    """
    import os
    import openai
    import tokentrail

    client = openai.OpenAI(base_url=os.environ["FAKE_OPENAI_BASE_URL"], api_key="test-key", max_retries=0)
    with tokentrail.attribute(tenant="acme", feature="summarize"):
        client.chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "Summarise this ticket"}]
        )
    """
)

# gpt-5.4-mini, 10000 prompt tokens of which 2000 cached, 1200 completion -> $0.01155
WORKED_USD = 0.01155


def _instrument_cmd() -> list[str]:
    exe = shutil.which("opentelemetry-instrument") or str(Path(sys.executable).with_name("opentelemetry-instrument"))
    return [exe, sys.executable, "app.py"]


def _json_documents(text: str) -> list[dict]:
    """The console exporters print indented JSON documents one after another."""
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return docs
        try:
            doc, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        docs.append(doc)
        i = end


def _metric_points(docs: list[dict], name: str) -> list[dict]:
    points = []
    for doc in docs:
        for rm in doc.get("resource_metrics") or ():
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] == name:
                        points.extend(metric["data"]["data_points"])
    return points


def _run(tmp_path: Path, extra_env: dict[str, str], pythonpath: list[str] = ()) -> tuple[list[dict], list[dict]]:
    (tmp_path / "app.py").write_text(APP)
    with fake_provider() as server:
        server.enqueue(openai_api.reply(prompt_tokens=10000, cached_tokens=2000, completion_tokens=1200))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENTRAIL_"))}
        env.update(
            OTEL_SERVICE_NAME="support-bot",
            TOKENTRAIL_ATTRIBUTES="team=support",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=test",
            OTEL_TRACES_EXPORTER="console",
            OTEL_METRICS_EXPORTER="console",
            OTEL_LOGS_EXPORTER="none",
            FAKE_OPENAI_BASE_URL=openai_api.base_url(server),
        )
        env.update(extra_env)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        proc = subprocess.run(_instrument_cmd(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    docs = _json_documents(proc.stdout)
    spans = [d for d in docs if "context" in d and "name" in d]
    return spans, docs


def _assert_owned_priced(spans: list[dict], docs: list[dict]) -> None:
    llm = [s for s in spans if attr.GEN_AI_OPERATION_NAME in s["attributes"]]
    assert len(llm) == 1, [s["name"] for s in llm]
    a = llm[0]["attributes"]
    assert a[attr.TOKENTRAIL_TENANT] == "acme"
    assert a[attr.TOKENTRAIL_FEATURE] == "summarize"
    assert a[attr.TOKENTRAIL_TEAM] == "support"  # from TOKENTRAIL_ATTRIBUTES
    assert a[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(WORKED_USD)
    assert a[attr.TOKENTRAIL_COST_NANO_USD] == 11_550_000
    assert a[attr.TOKENTRAIL_COST_STATUS] == "priced"
    assert a[attr.TOKENTRAIL_RATE_CARD_VERSION]
    assert llm[0]["resource"]["attributes"]["service.name"] == "support-bot"
    # The SDK's HTTP span under the LLM span is owned too (attribution at span start).
    http = [s for s in spans if s is not llm[0] and s["context"]["trace_id"] == llm[0]["context"]["trace_id"]]
    assert http and all(s["attributes"].get(attr.TOKENTRAIL_TENANT) == "acme" for s in http)
    # One cost point for the call, owned, environment from the resource.
    [point] = _metric_points(docs, m.TOKENTRAIL_COST)
    assert point["count"] == 1
    assert point["sum"] == pytest.approx(WORKED_USD)
    assert point["attributes"][attr.TOKENTRAIL_TENANT] == "acme"
    assert point["attributes"][attr.TOKENTRAIL_TEAM] == "support"
    assert point["attributes"][attr.DEPLOYMENT_ENVIRONMENT_NAME] == "test"
    tokens = {p["attributes"][attr.TOKENTRAIL_TOKEN_TYPE]: p["value"] for p in _metric_points(docs, m.TOKENTRAIL_TOKENS)}
    assert tokens == {"input": 8000, "cache_read": 2000, "output": 1200}


def _hide_distributions(tmp_path: Path, *names: str) -> str:
    """A PYTHONPATH entry that shadows installed distributions with entry-point-less copies:
    importlib.metadata keeps the first distribution of a name on sys.path, so the child
    process runs as on a machine without them (their entry points are not found)."""
    shadow = tmp_path / "shadow"
    for name in names:
        info = shadow / f"{name.replace('-', '_')}-0.0.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n")
    return str(shadow)


def _only_tokentrail_distro(tmp_path: Path) -> str:
    return _hide_distributions(tmp_path, "opentelemetry-distro")


# The official OpenAI instrumentation, if installed, is left out here (its coexistence with
# ours is tested on its own below).
NO_OFFICIAL = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai"}


def test_a_tokentrail_as_the_only_distro(tmp_path):
    shadow = _only_tokentrail_distro(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "from opentelemetry.util._importlib_metadata import entry_points as e;"
         "print(sorted(x.name for x in e(group='opentelemetry_configurator')))"],
        env={**os.environ, "PYTHONPATH": shadow}, capture_output=True, text=True,
    )
    assert probe.stdout.strip() == "['tokentrail']"
    spans, docs = _run(tmp_path, dict(NO_OFFICIAL), pythonpath=[shadow])
    _assert_owned_priced(spans, docs)


def test_b_beside_opentelemetry_distro_chosen_by_env(tmp_path):
    spans, docs = _run(tmp_path, {**NO_OFFICIAL, "OTEL_PYTHON_DISTRO": "tokentrail",
                                  "OTEL_PYTHON_CONFIGURATOR": "tokentrail"})
    _assert_owned_priced(spans, docs)


def test_c_another_configurator_won(tmp_path):
    spans, docs = _run(tmp_path, {**NO_OFFICIAL, "OTEL_PYTHON_DISTRO": "distro",
                                  "OTEL_PYTHON_CONFIGURATOR": "configurator"})
    # The post-instrument hook added attribution and wrapped the export processor.
    _assert_owned_priced(spans, docs)


def test_child_started_with_traceparent_joins_the_parent_trace(tmp_path):
    """A process started with the parent's TRACEPARENT in its environment (a subprocess hop)
    continues the parent's trace with no code change: the post-instrument hook attaches it."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans, docs = _run(tmp_path, {**NO_OFFICIAL, "TRACEPARENT": f"00-{trace_id}-{parent_id}-01"})
    _assert_owned_priced(spans, docs)
    assert {s["context"]["trace_id"] for s in spans} == {f"0x{trace_id}"}
    [llm] = [s for s in spans if attr.GEN_AI_OPERATION_NAME in s["attributes"]]
    assert llm["parent_id"] == f"0x{parent_id}"


OPENLLMETRY_OPENAI = "opentelemetry-instrumentation-openai"


def test_one_llm_span_with_the_official_openai_instrumentation_installed(tmp_path):
    """Official OpenAI instrumentation installed too (OpenLLMetry's hidden if present):
    one LLM span per call, ours, priced and owned; the official span is dropped."""
    shadow = _hide_distributions(tmp_path, OPENLLMETRY_OPENAI)
    spans, docs = _run(tmp_path, {"OTEL_PYTHON_DISTRO": "tokentrail", "OTEL_PYTHON_CONFIGURATOR": "tokentrail"},
                       pythonpath=[shadow])
    _assert_owned_priced(spans, docs)


def test_one_llm_span_with_openllmetry_openai_installed(tmp_path):
    shadow = _hide_distributions(tmp_path, "opentelemetry-instrumentation-genai-openai")
    spans, docs = _run(tmp_path, {"OTEL_PYTHON_DISTRO": "tokentrail", "OTEL_PYTHON_CONFIGURATOR": "tokentrail"},
                       pythonpath=[shadow])
    _assert_owned_priced(spans, docs)


def test_configurator_builds_the_sdk_with_our_processors_and_views(tmp_path):
    """What TokentrailConfigurator installs, inspected in a fresh process."""
    probe = textwrap.dedent(
        """
        import json
        from opentelemetry import metrics, trace
        from tokentrail.distro import TokentrailConfigurator
        from tokentrail.processor.attribution import AttributionSpanProcessor
        from tokentrail.processor.cost import CostSpanProcessor, pipeline_active

        TokentrailConfigurator().configure()
        tp, mp = trace.get_tracer_provider(), metrics.get_meter_provider()
        procs = tp._active_span_processor._span_processors
        print(json.dumps({
            "processors": [type(p).__name__ for p in procs],
            "inner": [type(p.next_processor).__name__ for p in procs if isinstance(p, CostSpanProcessor)],
            "records": [p._record_metrics for p in procs if isinstance(p, CostSpanProcessor)],
            "views": sorted(v._instrument_name for v in mp._sdk_config.views),
            "limits": sorted({v._aggregation_cardinality_limit for v in mp._sdk_config.views}),
            "readers": [type(r).__name__ for r in mp._all_metric_readers],
            "active": pipeline_active(tp),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENTRAIL_"))}
    env.update(OTEL_TRACES_EXPORTER="console,otlp_proto_http", OTEL_METRICS_EXPORTER="console",
               OTEL_LOGS_EXPORTER="none", TOKENTRAIL_METRICS_CARDINALITY_LIMIT="300")
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["processors"] == ["AttributionSpanProcessor", "CostSpanProcessor", "CostSpanProcessor"]
    assert out["inner"] == ["BatchSpanProcessor", "BatchSpanProcessor"]
    assert out["records"] == [True, False]  # two exporters, each call metered once
    assert {m.TOKENTRAIL_COST, m.TOKENTRAIL_TOKENS, m.TOKENTRAIL_CALLS_UNPRICED} <= set(out["views"])
    assert out["limits"] == [300]
    assert out["readers"] == ["PeriodicExportingMetricReader"]
    assert out["active"] is True
