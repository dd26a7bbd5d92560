"""The ledger fed by the real pipeline: the openai SDK over HTTP to the fake provider, tokentrail's
instrumentation and processors, then the ledger exporter; and zero-code with
``OTEL_TRACES_EXPORTER=tokentrail_ledger``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import openai
import pytest

import tokentrail
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.ledger.queries import Ledger, Period
from tokentrail.semconv import attributes as a
from tokentrail.testing import InMemoryPipeline, fake_provider, openai_api


def _call(client, model, **usage):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}],
        extra_headers={openai_api.HEADER: json.dumps(usage)},
    )


def test_pipeline_spans_land_in_the_ledger_owned_and_priced_exactly(tmp_path):
    path = str(tmp_path / "l.db")
    with fake_provider() as server, InMemoryPipeline() as pipeline:
        client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="k", max_retries=0)
        with pipeline.tracer().start_as_current_span("POST /answer"):
            with tokentrail.attribute(tenant="acme", feature="answers", team="support", user="u-42"):
                with tokentrail.task("triage", id="triage-1"):
                    _call(client, "gpt-4o", prompt_tokens=2000, completion_tokens=500)  # $0.0100
                    with tokentrail.retry(1):
                        _call(client, "gpt-4o-mini", prompt_tokens=10000, cached_tokens=2000, completion_tokens=1200)
                    with tokentrail.fallback("gpt-4o-mini"):
                        _call(client, "gpt-4o", prompt_tokens=100, completion_tokens=10)
        _call(client, "gpt-4o", prompt_tokens=100, completion_tokens=10)  # nobody owns this one
        spans = pipeline.spans()
    exporter = LedgerSpanExporter(path)
    assert exporter.export(spans).name == "SUCCESS"

    llm = [s for s in spans if a.TOKENTRAIL_COST_STATUS in s.attributes]
    assert len(llm) == 4
    conn = sqlite3.connect(path)
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT span_id, cost_nano, tenant, feature, team, user_id, task_name, task_id, retry_attempt,"
            " fallback_from, input_tokens, cache_read_tokens, output_tokens, rate_card_version, pricing_tier"
            " FROM spans WHERE llm = 1"
        )
    }
    for s in llm:
        row = rows[format(s.context.span_id, "016x")]
        assert row[0] == s.attributes[a.TOKENTRAIL_COST_NANO_USD]
        assert row[12] == s.attributes[a.TOKENTRAIL_RATE_CARD_VERSION]
        assert row[13] == s.attributes[a.TOKENTRAIL_PRICING_TIER]
    owned = [r for r in rows.values() if r[1] == "acme"]
    assert len(owned) == 3
    assert {r[1:7] for r in owned} == {("acme", "answers", "support", "u-42", "triage", "triage-1")}
    assert sorted(r[0] for r in rows.values()).count(10_000_000) == 1  # GPT-4o 2,000 in / 500 out = $0.0100
    assert any(r[7] == 1 for r in owned)
    assert any(r[8] == "gpt-4o-mini" for r in owned)
    # every span of the request is in the ledger, tree intact (request span, task span, HTTP spans...)
    assert conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == len(spans)

    with Ledger(path) as ledger:
        report = ledger.report(["tenant"], Period.parse(None, None))
        total = sum(s.attributes[a.TOKENTRAIL_COST_NANO_USD] for s in llm)
        assert report["total"]["cost_nano_usd"] == total
        assert {r["tenant"] for r in report["rows"]} == {"acme", "(unattributed)"}
        top = ledger.top(Period.parse(None, None))
        [task] = top["tasks"]
        assert task["task_id"] == "triage-1" and task["calls"] == 3
        assert any("retries" in r for r in task["reasons"]) and any("fallback" in r for r in task["reasons"])
        tree = ledger.trace(top["traces"][0]["trace_id"][:8])
        assert tree["spans"][0]["name"] == "POST /answer" and tree["spans"][0]["depth"] == 0
        assert tree["spans"][-1]["cumulative_cost_nano_usd"] == tree["cost_nano_usd"]


def test_v5_columns_output_cap_tier_and_task_outcome(tmp_path):
    path = str(tmp_path / "l.db")
    with fake_provider() as server, InMemoryPipeline() as pipeline:
        client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="k", max_retries=0)
        with tokentrail.attribute(tenant="acme"):
            with tokentrail.task("digest", id="d-1"):
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=300, service_tier="flex",
                )
            with pytest.raises(RuntimeError), tokentrail.task("digest", id="d-2"):
                _call(client, "gpt-4o", prompt_tokens=10, completion_tokens=5)
                raise RuntimeError("agent failed")
        spans = pipeline.spans()
    LedgerSpanExporter(path).export(spans)
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT task_id, request_max_tokens, service_tier, unverified FROM spans WHERE llm = 1 ORDER BY task_id"
    ).fetchall()
    # the tier the response reports wins over the requested one (the fake answers "default")
    assert rows == [("d-1", 300, "default", None), ("d-2", None, "default", None)]
    outcomes = conn.execute("SELECT task_id, task_outcome FROM spans WHERE task_outcome IS NOT NULL ORDER BY task_id")
    assert outcomes.fetchall() == [("d-1", "ok"), ("d-2", "error")]


APP = textwrap.dedent(
    """
    import os
    import openai
    import tokentrail

    client = openai.OpenAI(base_url=os.environ["FAKE_OPENAI_BASE_URL"], api_key="test-key", max_retries=0)
    with tokentrail.attribute(tenant="acme", feature="summarize"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    """
)


@pytest.mark.slow  # opentelemetry-instrument in a subprocess
@pytest.mark.parametrize("exporters", ["tokentrail_ledger", "console,tokentrail_ledger"])
def test_zero_code_otel_traces_exporter_tokentrail_ledger(tmp_path, exporters):
    (tmp_path / "app.py").write_text(APP)
    exe = shutil.which("opentelemetry-instrument") or str(Path(sys.executable).with_name("opentelemetry-instrument"))
    with fake_provider() as server:
        server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
        env = dict(
            os.environ,
            OTEL_SERVICE_NAME="support-bot",
            OTEL_TRACES_EXPORTER=exporters,
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            OTEL_PYTHON_DISTRO="tokentrail",
            OTEL_PYTHON_CONFIGURATOR="tokentrail",
            OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai",
            TOKENTRAIL_LEDGER=str(tmp_path / "app.db"),
            FAKE_OPENAI_BASE_URL=openai_api.base_url(server),
        )
        proc = subprocess.run([exe, sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Ledger(str(tmp_path / "app.db")) as ledger:
        report = ledger.report(["tenant", "feature"], Period.parse(None, None))
    [row] = report["rows"]
    assert (row["tenant"], row["feature"], row["calls"], row["cost_nano_usd"]) == ("acme", "summarize", 1, 10_000_000)
    if exporters.startswith("console"):
        assert '"name"' in proc.stdout  # the other exporter still got the spans
