"""The real Collector of deploy/collector/ in tests: the binary for the current manifest (a failure that says how to
build it when missing), and collector-config.yaml + the test overlay running on free loopback ports."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tokentrail.testing.collector import Collector, free_port

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "collector-config.yaml"
OVERLAY = ROOT / "deploy" / "collector" / "test-overlay.yaml"
BUILD = ROOT / "deploy" / "collector" / "build.sh"
SKIP = "TOKENTRAIL_SKIP_COLLECTOR"
PORTS = ("HEALTH", "OTLP_GRPC", "OTLP_HTTP", "EDGE_GRPC", "EDGE_HTTP", "PROMETHEUS")


def collector_binary() -> Path:
    """The Collector built from deploy/collector/manifest.yaml; fails the test when it was not built (CI always
    builds it first), skips only when TOKENTRAIL_SKIP_COLLECTOR=1 says so."""
    found = subprocess.run([str(BUILD), "--path"], capture_output=True, text=True)
    path = Path(found.stdout.strip()) if found.returncode == 0 else None
    if path is not None and path.is_file():
        return path
    if os.environ.get(SKIP) == "1":
        pytest.skip(f"{SKIP}=1: real-Collector tests skipped")
    why = found.stderr.strip() or "not built for the current deploy/collector/manifest.yaml"
    pytest.fail(f"no OpenTelemetry Collector binary ({why}): run deploy/collector/build.sh "
                f"(or set {SKIP}=1 to skip these tests)", pytrace=False)


@dataclass
class RunningCollector:
    collector: Collector
    ports: dict[str, int]
    traces_file: Path

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    @property
    def metrics_url(self) -> str:
        return self.url("PROMETHEUS") + "/metrics"


def overlay_env(workdir: Path) -> tuple[dict[str, str], dict[str, int], Path]:
    ports = {name: free_port() for name in PORTS}
    traces_file = workdir / "traces.jsonl"
    env = {f"OTELCOL_TEST_{name}_PORT": str(port) for name, port in ports.items()}
    env["OTELCOL_TEST_TRACES_FILE"] = str(traces_file)
    return env, ports, traces_file


@contextmanager
def running_collector(workdir: Path, feature_gates: tuple[str, ...] = ()):
    """collector-config.yaml with the test overlay, for the life of the block."""
    binary = collector_binary()
    env, ports, traces_file = overlay_env(workdir)
    collector = Collector(binary, [SHIPPED_CONFIG, OVERLAY], env=env, health_port=ports["HEALTH"],
                          log_path=workdir / "collector.log", feature_gates=feature_gates)
    with collector:
        yield RunningCollector(collector, ports, traces_file)
