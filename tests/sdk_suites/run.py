"""The SDK-suite gate: the openai and anthropic SDKs' own tests, bare and with tokentrail on.

For each SDK: its source distribution of the installed (pinned: the ``sdk-suites`` extra) version
from PyPI, cached in ``.cache/sdk-suites``; the subset below run bare, then with
``-p tokentrail.testing.sdk_suite_plugin``. It fails when a test that passes bare does not pass
instrumented (except ``NATIVE_SPAN_TESTS``, each with its reason), or when the pipeline produced
no LLM span. ``python tests/sdk_suites/run.py [openai] [anthropic]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "sdk-suites"
PLUGIN = "tokentrail.testing.sdk_suite_plugin"

SUITES = {
    "openai": {
        "paths": ["tests/lib/chat", "tests/lib/responses", "tests/test_streaming.py", "tests/test_client.py"],
        "addopts": "--tb=short",
    },
    "anthropic": {
        "paths": ["tests/lib/streaming", "tests/test_streaming.py", "tests/test_client.py",
                  "tests/test_tracing.py", "tests/test_open_telemetry.py"],
        "addopts": "--tb=short -p tests._alias_httpx",
    },
}

# The SDK's own tests of its native spans for the calls tokentrail traces (one LLM span per call:
# the native one is replaced by ours), by test id prefix.
NATIVE_SPAN_TESTS: dict[str, dict[str, str]] = {
    "openai": {},
    "anthropic": {
        "tests.test_open_telemetry.TestCallSpans::test_unary_attributes":
            "the native span (kept: the client has its own tracer provider) is a child of tokentrail's LLM span "
            "of the call, not of the application's span",
        "tests.test_open_telemetry.TestPropagationOption::test_false_keeps_a_span_that_the_sampler_dropped":
            "tokentrail's span of the call, not the application's dropped one, is current while the request is sent",
        "tests.test_open_telemetry.TestTracingFailures::test_disabled_spans_call_nothing_of_opentelemetry":
            "with the SDK's telemetry off, tokentrail's own span of the call still uses OpenTelemetry",
    },
}


def sdist(name: str) -> Path:
    """The SDK's sources of the installed version, downloaded once."""
    wanted = version(name)
    target = CACHE / f"{name}-{wanted}"
    if (target / "tests").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"{name}-{wanted}.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                        f"{name}=={wanted}", "-d", str(CACHE)], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return target


def run(name: str, tree: Path, instrumented: bool, workdir: Path,
        only: list[str] | None = None) -> tuple[dict[str, str], float]:
    """{test id: outcome} of one run (of the suite, or of the ``only`` node ids), and its wall time."""
    suite = SUITES[name]
    report = workdir / f"{name}-{'on' if instrumented else 'bare'}{'-again' if only else ''}.xml"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", f"addopts={suite['addopts']}",
            "-n", os.environ.get("SDK_SUITES_WORKERS", "2"), f"--junitxml={report}", *(only or suite["paths"])]
    env = dict(os.environ)
    if instrumented:
        args[3:3] = ["-p", PLUGIN]
        env["TOKENTRAIL_SDK_SUITE_SPANS"] = str(workdir / f"{name}-spans")
    started = time.monotonic()
    subprocess.run(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return outcomes(report), time.monotonic() - started


def outcomes(report: Path) -> dict[str, str]:
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        results[test_id] = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds
                            else "passed")
    return results


def node_id(test_id: str, tree: Path) -> str:
    """``tests.lib.x.TestA::test_b[p]`` (junit) -> ``tests/lib/x.py::TestA::test_b[p]``."""
    dotted, _, name = test_id.partition("::")
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = Path(*parts[:cut]).with_suffix(".py")
        if (tree / path).is_file():
            return "::".join([path.as_posix(), *parts[cut:], name])
    return test_id


def lost_tests(bare: dict[str, str], on: dict[str, str], allowed: dict[str, str]) -> list[str]:
    return sorted(t for t, outcome in bare.items() if outcome == "passed" and on.get(t) != "passed"
                  and not any(t.startswith(prefix) for prefix in allowed))


def gate(name: str, workdir: Path) -> list[str]:
    tree = sdist(name)
    bare, bare_s = run(name, tree, False, workdir)
    on, on_s = run(name, tree, True, workdir)
    allowed = NATIVE_SPAN_TESTS[name]
    lost = lost_tests(bare, on, allowed)
    if lost:  # some of the suites' tests are timing-sensitive on loaded machines: a loss must repeat
        ids = [node_id(t, tree) for t in lost]
        lost = lost_tests(run(name, tree, False, workdir, ids)[0], run(name, tree, True, workdir, ids)[0], allowed)
    counts = [json.loads(p.read_text()) for p in (workdir / f"{name}-spans").glob("*.json")]
    llm_spans = sum(c["llm_spans"] for c in counts)
    passed = sum(1 for o in on.values() if o == "passed")
    print(f"{name} {version(name)}: {len(bare)} tests; bare {bare_s:.0f}s, with tokentrail {on_s:.0f}s; "
          f"{passed} passed with tokentrail; {llm_spans} LLM spans; {len(lost)} lost")
    problems = [f"{name}: passes bare, not with tokentrail: {t}" for t in lost]
    if not llm_spans:
        problems.append(f"{name}: the pipeline produced no LLM span (is the plugin active?)")
    return problems


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
    with tempfile.TemporaryDirectory(prefix="sdk-suites-") as tmp:
        problems = [p for name in names for p in gate(name, Path(tmp))]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
