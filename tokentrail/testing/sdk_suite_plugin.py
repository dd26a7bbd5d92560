"""pytest plugin: a provider SDK's own test suite with tokentrail's whole pipeline on.

``pytest -p tokentrail.testing.sdk_suite_plugin`` enters an ``InMemoryPipeline`` with every
installed tokentrail instrumentor for the session (in each xdist worker; the controller only adds
up the workers' counts). At the end it fails the session if no LLM span was made (the plugin was
loaded but instrumented nothing), and writes the counts as JSON to the file that
``TOKENTRAIL_SDK_SUITE_SPANS`` names, for the gate (``tests/sdk_suites/run.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tokentrail.semconv import attributes as attr
from tokentrail.testing.pipeline import InMemoryPipeline

SPANS_FILE_ENV = "TOKENTRAIL_SDK_SUITE_SPANS"
_KEY = "tokentrail_sdk_suite"

_pipeline: InMemoryPipeline | None = None
_counts: dict[str, Any] = {"spans": 0, "llm_spans": 0, "priced": 0, "instrumentors": []}


def _is_xdist_controller(config: Any) -> bool:
    return not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"


def pytest_configure(config: Any) -> None:
    global _pipeline
    if not _is_xdist_controller(config):
        _pipeline = InMemoryPipeline(instrument=True).__enter__()
        _counts["instrumentors"] = sorted(type(i).__name__ for i in _pipeline.instrumentors)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist installed, pytest must not refuse the plugin
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: a worker's counts (sent back in its ``workeroutput``)."""
    worker = getattr(node, "workeroutput", {}).get(_KEY)
    if worker:
        for key in ("spans", "llm_spans", "priced"):
            _counts[key] += worker[key]
        _counts["instrumentors"] = sorted(set(_counts["instrumentors"]) | set(worker["instrumentors"]))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    global _pipeline
    config = session.config
    if _pipeline is not None:
        llm_spans = _pipeline.llm_spans()
        _counts["spans"] = len(_pipeline.spans())
        _counts["llm_spans"] = len(llm_spans)
        _counts["priced"] = sum(1 for s in llm_spans if attr.TOKENTRAIL_COST_NANO_USD in (s.attributes or {}))
        _pipeline.close()
        _pipeline = None
    if hasattr(config, "workerinput"):
        config.workeroutput[_KEY] = dict(_counts)
        return
    out = os.environ.get(SPANS_FILE_ENV)
    if out:
        Path(out).write_text(json.dumps(_counts))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    line = (f"tokentrail: {_counts['llm_spans']} LLM spans ({_counts['priced']} priced) from "
            f"{', '.join(_counts['instrumentors']) or 'no instrumentor'}")
    if not _counts["llm_spans"] and session.testscollected:
        line += ": the pipeline made no LLM span"
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if reporter is not None:
        reporter.write_line(line)
