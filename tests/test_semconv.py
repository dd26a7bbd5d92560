"""The registry is the single source of names: generated files must agree with it."""

import ast
import subprocess
import sys
from pathlib import Path

from tokentrail.semconv import attributes, generate, metrics

ROOT = Path(__file__).resolve().parents[1]


def test_generated_files_match_registry():
    result = subprocess.run(
        [sys.executable, "-m", "tokentrail.semconv.generate", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_constants_equal_registry_entries():
    registry = generate.load_registry()
    assert {e["constant"]: e["id"] for e in registry["attributes"]} == {
        name: getattr(attributes, name) for name in dir(attributes) if name.isupper() and name != "ALL_ATTRIBUTES"
    }
    assert {e["constant"]: e["id"] for e in registry["metrics"]} == {
        name: getattr(metrics, name) for name in dir(metrics) if name.isupper() and name != "ALL_METRICS"
    }


def test_every_entry_is_complete_and_unique():
    registry = generate.load_registry()
    ids = [e["id"] for e in registry["attributes"] + registry["metrics"]]
    assert len(ids) == len(set(ids))
    for entry in registry["attributes"]:
        assert {"id", "constant", "type", "origin", "brief"} <= entry.keys(), entry
    for entry in registry["metrics"]:
        assert {"id", "constant", "instrument", "unit", "origin", "brief"} <= entry.keys(), entry
        assert entry["instrument"] in {"counter", "histogram", "gauge", "updowncounter"}


def test_no_name_literals_outside_semconv():
    """Attribute and metric names are imported from semconv, never spelled as string literals."""
    registry = generate.load_registry()
    names = {e["id"] for e in registry["attributes"] + registry["metrics"]}
    offenders = []
    for folder in ("tokentrail", "instrumentation", "processor", "dashboards"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert not offenders, "\n".join(offenders)
