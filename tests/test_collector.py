"""collector-config.yaml, deploy/ and the Grafana provisioning files, parsed and cross-checked (promtool on the
Prometheus config). The real Collector runs the same config in tests/test_collector_live.py and
tests/test_prometheus.py; Tempo and Grafana cannot run here (README "Grafana")."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tokentrail.dashboards import build, queries as q
from tokentrail.semconv import attributes as A
from tokentrail.semconv import generate

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COLLECTOR = yaml.safe_load((ROOT / "collector-config.yaml").read_text())
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
PROM_CONFIG = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
TEMPO = yaml.safe_load((DEPLOY / "tempo" / "tempo.yaml").read_text())
DATASOURCES = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/tokentrail.yaml").read_text())
PROVIDERS = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/tokentrail.yaml").read_text())
PIPELINES = COLLECTOR["service"]["pipelines"]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _published(service: str) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in COMPOSE["services"][service].get("ports", [])}


def _mounts(service: str) -> list[tuple[Path, str]]:
    out = []
    for volume in COMPOSE["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append(((DEPLOY / source).resolve(), target))
    return out


# --- collector-config.yaml: internal consistency ----------------------------------------------------------
def test_every_pipeline_component_is_defined_and_every_definition_used():
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in PIPELINES.values():
        for kind in used:
            used[kind] |= set(pipeline.get(kind, []))
    connectors = set(COLLECTOR.get("connectors", {}))
    assert used["receivers"] - connectors <= set(COLLECTOR["receivers"])
    assert used["exporters"] - connectors <= set(COLLECTOR["exporters"])
    assert used["processors"] <= set(COLLECTOR["processors"])
    assert set(COLLECTOR["receivers"]) <= used["receivers"]
    assert set(COLLECTOR["processors"]) <= used["processors"]
    assert set(COLLECTOR["exporters"]) <= used["exporters"]
    assert set(COLLECTOR["service"]["extensions"]) <= set(COLLECTOR["extensions"])


def test_connectors_join_pipelines_of_the_same_signal():
    for name in COLLECTOR["connectors"]:
        as_exporter = [p for p, c in PIPELINES.items() if name in c.get("exporters", [])]
        as_receiver = [p for p, c in PIPELINES.items() if name in c.get("receivers", [])]
        assert as_exporter and as_receiver, name
        assert {p.split("/")[0] for p in as_exporter + as_receiver} == {as_exporter[0].split("/")[0]}, name


def test_memory_limiter_first_and_batch_last():
    for name, pipeline in PIPELINES.items():
        assert pipeline["processors"][0] == "memory_limiter", name
        if "batch" in pipeline["processors"]:
            assert pipeline["processors"][-1] == "batch", name


def test_metrics_are_never_sampled():
    """Spend totals stay exact: only trace pipelines sample; metrics pipelines carry every point."""
    for name, pipeline in PIPELINES.items():
        sampled = [p for p in pipeline["processors"] if "sampl" in p]
        if name.startswith("metrics"):
            assert sampled == [], name
    assert "tail_sampling" in PIPELINES["traces"]["processors"]


def test_tail_sampling_keeps_expensive_calls_tasks_errors_and_a_share():
    policies = {p["name"]: p for p in COLLECTOR["processors"]["tail_sampling"]["policies"]}
    call = policies["expensive-llm-call"]["numeric_attribute"]
    assert call["key"] == A.TOKENTRAIL_COST_NANO_USD  # integer nano-USD: numeric_attribute compares ints
    assert call["min_value"] == 50_000_000  # $0.05
    assert policies["expensive-task"]["numeric_attribute"]["key"] == A.TOKENTRAIL_TASK_COST_NANO_USD
    assert policies["errors"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["budget-blocked"]["string_attribute"]["key"] == A.TOKENTRAIL_BUDGET_EXCEEDED
    assert 0 < policies["baseline-share"]["probabilistic"]["sampling_percentage"] < 100


def test_untrusted_edge_drops_exactly_the_tokentrail_attributes():
    edge = {n: p for n, p in PIPELINES.items() if "otlp/edge" in p["receivers"]}
    assert set(edge) == {"traces/edge", "metrics/edge"}
    for pipeline in edge.values():
        assert "transform/untrusted" in pipeline["processors"]
        assert all(e.startswith("forward/") for e in pipeline["exporters"])
    transform = COLLECTOR["processors"]["transform/untrusted"]
    contexts = {}
    for key in ("trace_statements", "metric_statements"):
        for block in transform[key]:
            for stmt in block["statements"]:
                m = re.fullmatch(r'delete_matching_keys\(attributes, "(.+)"\)', stmt)
                if m:  # an OTTL string literal: \\ is one backslash
                    contexts.setdefault(block["context"], set()).add(m.group(1).replace("\\\\", "\\"))
    assert set(contexts) == {"resource", "span", "spanevent", "datapoint"}
    [pattern] = set.union(*contexts.values())
    registry = generate.load_registry()
    names = [e["id"] for e in registry["attributes"]]
    dropped = {n for n in names if re.search(pattern, n)}
    assert dropped == {n for n in names if n.startswith("tokentrail.")}
    assert A.TOKENTRAIL_TENANT in dropped and A.GEN_AI_REQUEST_MODEL not in dropped
    # on metric points, what a point measures is put back after the strip (tests/test_collector_live.py: else the
    # token types of one call collapse into one series)
    restored = {m.group(1) for b in transform["metric_statements"] if b["context"] == "datapoint"
                for s in b["statements"] if (m := re.match(r'set\(attributes\["([^"]+)"\], cache\[', s))}
    assert restored == {A.TOKENTRAIL_TOKEN_TYPE, A.TOKENTRAIL_COST_STATUS}
    # a trusted receiver never passes through the stripping transform
    assert all("transform/untrusted" not in p["processors"] for n, p in PIPELINES.items() if n not in edge)


def test_metrics_pipeline_puts_the_environment_on_every_point():
    statements = " ".join(s for b in COLLECTOR["processors"]["transform/environment"]["metric_statements"]
                          for s in b["statements"])
    key = A.DEPLOYMENT_ENVIRONMENT_NAME
    assert f'set(attributes["{key}"], resource.attributes["{key}"])' in statements
    assert PIPELINES["metrics"]["processors"][1] == "transform/environment"


def test_prometheus_exporter_settings_match_the_dashboard_names():
    exporter = COLLECTOR["exporters"]["prometheus"]
    assert exporter["enable_open_metrics"] is True  # exemplars
    assert exporter.get("add_metric_suffixes", True) is True  # tokentrail_cost_USD_*, *_total
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is False
    assert q.COST == "tokentrail_cost_USD" and q.TOKENS == "tokentrail_tokens_total"


# --- cross-file agreement ---------------------------------------------------------------------------------
def test_compose_images_are_pinned():
    for name, service in COMPOSE["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith((":latest", ":main")), name
        assert re.search(r":v?\d+\.\d+\.\d+$", image), image


def test_every_mounted_file_exists():
    for service in COMPOSE["services"]:
        for source, _ in _mounts(service):
            assert source.exists(), (service, source)


def test_collector_mounts_this_config_and_publishes_its_receivers():
    [(source, target)] = _mounts("otel-collector")
    assert source == (ROOT / "collector-config.yaml").resolve()
    assert f"--config={target}" in COMPOSE["services"]["otel-collector"]["command"]
    ports = {_port(proto["endpoint"]) for r in COLLECTOR["receivers"].values() for proto in r["protocols"].values()}
    assert ports == {4317, 4318, 4319, 4320}
    assert ports <= _published("otel-collector")


def test_prometheus_scrapes_the_collector_exporter_and_loads_the_rules():
    [job] = PROM_CONFIG["scrape_configs"]
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "otel-collector" and host in COMPOSE["services"]
    assert int(port) == _port(COLLECTOR["exporters"]["prometheus"]["endpoint"])
    assert job["honor_labels"] is True
    service = COMPOSE["services"]["prometheus"]
    assert "--enable-feature=exemplar-storage" in service["command"]
    config_target = next(c.split("=", 1)[1] for c in service["command"] if c.startswith("--config.file="))
    mounts = dict((t, s) for s, t in _mounts("prometheus"))
    assert mounts[config_target] == (DEPLOY / "prometheus" / "prometheus.yml").resolve()
    [pattern] = PROM_CONFIG["rule_files"]
    rule_mounts = [t for t in mounts if Path(t).match(pattern)]
    assert [mounts[t] for t in rule_mounts] == [(ROOT / "dashboards/alerts/tokentrail-rules.yaml").resolve()]


def test_collector_exports_traces_to_tempo_otlp():
    host, port = COLLECTOR["exporters"]["otlp/tempo"]["endpoint"].split(":")
    assert host == "tempo" and host in COMPOSE["services"]
    assert int(port) == _port(TEMPO["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])
    [(source, target)] = _mounts("tempo")
    assert f"-config.file={target}" in COMPOSE["services"]["tempo"]["command"]


def test_grafana_datasources_point_at_the_compose_services():
    by_uid = {d["uid"]: d for d in DATASOURCES["datasources"]}
    prom, tempo = by_uid[build.PROMETHEUS.uid], by_uid[build.TEMPO.uid]
    assert prom["type"] == "prometheus" and tempo["type"] == "tempo"
    assert prom["url"] == f"http://prometheus:{9090}" and 9090 in _published("prometheus")
    assert tempo["url"] == f"http://tempo:{TEMPO['server']['http_listen_port']}"
    # exemplar label from the Collector's OpenMetrics output -> the Tempo data source
    [dest] = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert dest == {"name": "trace_id", "datasourceUid": tempo["uid"]}


def test_grafana_loads_the_generated_dashboards():
    mounts = dict((t, s) for s, t in _mounts("grafana"))
    assert mounts["/etc/grafana/provisioning"] == (ROOT / "dashboards/provisioning").resolve()
    [provider] = PROVIDERS["providers"]
    assert mounts[provider["options"]["path"]] == build.JSON_DIR.resolve()
    uids = {d["uid"] for d in DATASOURCES["datasources"]}
    for name in build.generate():
        dash = json.loads((build.JSON_DIR / name).read_text())
        refs = {p["datasource"]["uid"] for p in dash["panels"] if p.get("datasource")}
        refs |= {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", []) if t.get("datasource")}
        assert refs <= uids, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_config():
    out = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_config_with_the_mounted_rules(tmp_path):
    """The same config with rule_files pointing where compose mounts them from: promtool loads the rules too."""
    config = dict(PROM_CONFIG, rule_files=[str(ROOT / "dashboards/alerts/tokentrail-rules.yaml")])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rules = yaml.safe_load((ROOT / "dashboards/alerts/tokentrail-rules.yaml").read_text())
    assert f"SUCCESS: {sum(len(g['rules']) for g in rules['groups'])} rules found" in out.stdout
