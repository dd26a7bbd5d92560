"""The SDK-suite gate's own logic: the plugin's span check on a real pytest session, and the verdict
over the instrumented, bare and second instrumented outcomes (tests/sdk_suites/run.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("sdk_suites_run", Path(__file__).with_name("run.py"))
gate = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(gate)

ONE_CALL = """
import openai
from tokentrail.testing import fake_provider, openai_api

def test_one_chat_call():
    with fake_provider() as server, openai.OpenAI(
            base_url=openai_api.base_url(server), api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
"""

NO_CALL = """
def test_nothing_of_an_llm():
    assert 1 + 1 == 2
"""


def _session(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, Path]:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(body))
    counts = tmp_path / "spans.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", gate.PLUGIN, "-o", "addopts=",
         "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, gate.SPANS_FILE_ENV: str(counts)})
    return result, counts


@pytest.mark.slow
def test_plugin_counts_the_priced_llm_span_of_a_real_call(tmp_path):
    result, counts = _session(tmp_path, ONE_CALL)
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads(counts.read_text())
    assert (written["llm_spans"], written["priced"]) == (1, 1)
    assert "OpenAIInstrumentor" in written["instrumentors"]
    assert "tokentrail: 1 LLM spans (1 priced)" in result.stdout


@pytest.mark.slow
def test_plugin_fails_a_passing_session_that_made_no_llm_span(tmp_path):
    result, counts = _session(tmp_path, NO_CALL)
    assert "1 passed" in result.stdout
    assert result.returncode == 1
    assert "the pipeline made no LLM span" in result.stdout
    assert json.loads(counts.read_text())["llm_spans"] == 0


NATIVE = {"tests.test_otel.TestSpans::test_parent": "the native span's parent is tokentrail's span"}


def test_verdict_sorts_each_test_that_did_not_pass_instrumented():
    first_on = {
        "tests.test_a::test_ok": "passed",
        "tests.test_a::test_broken_by_us": "failed",
        "tests.test_a::test_broken_anyway": "failed",
        "tests.test_a::test_timing": "failed",
        "tests.test_a::test_skipped_by_us": "skipped",
        "tests.test_a::test_skipped_always": "skipped",
        "tests.test_otel.TestSpans::test_parent[sync]": "failed",
    }
    bare = {"tests.test_a::test_broken_by_us": "passed", "tests.test_a::test_broken_anyway": "failed",
            "tests.test_a::test_timing": "passed", "tests.test_a::test_skipped_by_us": "passed",
            "tests.test_a::test_skipped_always": "skipped", "tests.test_otel.TestSpans::test_parent[sync]": "passed"}
    again_on = {**{t: o for t, o in first_on.items() if o != "passed"}, "tests.test_a::test_timing": "passed"}

    verdict = gate.classify(first_on, bare, again_on, NATIVE)

    assert verdict.lost == ["tests.test_a::test_broken_by_us", "tests.test_a::test_skipped_by_us"]
    assert verdict.allowed == ["tests.test_otel.TestSpans::test_parent[sync]"]
    assert verdict.both == ["tests.test_a::test_broken_anyway"]
    assert verdict.flaky == ["tests.test_a::test_timing"]


def test_a_test_the_reruns_did_not_report_is_never_taken_for_passing():
    verdict = gate.classify({"tests.test_a::test_x": "failed"}, {}, {}, {})
    assert verdict.lost == [] and verdict.flaky == [] and verdict.both == ["tests.test_a::test_x"]


def test_junit_ids_map_back_to_node_ids(tmp_path):
    (tmp_path / "tests" / "lib" / "chat").mkdir(parents=True)
    (tmp_path / "tests" / "lib" / "chat" / "test_stream.py").write_text("")
    (tmp_path / "tests" / "test_client.py").write_text("")

    assert gate.node_id("tests.lib.chat.test_stream::test_parse[a.b-sync]", tmp_path) == \
        "tests/lib/chat/test_stream.py::test_parse[a.b-sync]"
    assert gate.node_id("tests.test_client.TestOpenAI::test_retry[2]", tmp_path) == \
        "tests/test_client.py::TestOpenAI::test_retry[2]"
