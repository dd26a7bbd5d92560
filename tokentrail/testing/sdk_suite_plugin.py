"""pytest plugin: a provider SDK's own test suite with tokentrail's whole pipeline on.

``pytest -p tokentrail.testing.sdk_suite_plugin`` enters an ``InMemoryPipeline`` with every
installed tokentrail instrumentor for the session (each xdist worker its own) and, when
``TOKENTRAIL_SDK_SUITE_SPANS`` names a directory, writes there how many spans and LLM spans it
produced, so the gate (``tests/sdk_suites/run.py``) can check the pipeline really ran.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SPANS_DIR_ENV = "TOKENTRAIL_SDK_SUITE_SPANS"

_pipeline: Any = None


def pytest_configure(config: Any) -> None:
    global _pipeline
    from tokentrail.testing import InMemoryPipeline

    _pipeline = InMemoryPipeline(instrument=True).__enter__()


def pytest_unconfigure(config: Any) -> None:
    global _pipeline
    if _pipeline is None:
        return
    counts = {"spans": len(_pipeline.spans()), "llm_spans": len(_pipeline.llm_spans()),
              "instrumentors": [type(i).__name__ for i in _pipeline.instrumentors]}
    out = os.environ.get(SPANS_DIR_ENV)
    if out:
        worker = getattr(config, "workerinput", {}).get("workerid", "main")  # xdist: one file per worker
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{worker}.json").write_text(json.dumps(counts))
    _pipeline.close()
    _pipeline = None
