"""Dashboards as code: the committed JSON is what the builders generate, it round-trips through the
grafana-foundation-sdk's typed model, and every name in every query exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from tokentrail.dashboards import build, promnames, queries as q
from tokentrail.semconv import generate

REGISTRY = generate.load_registry()
ATTRIBUTES = {e["id"] for e in REGISTRY["attributes"]}
LABELS = {promnames.label(a) for a in ATTRIBUTES} | {"le", "job", "instance"}
FAMILIES = {promnames.prom(m["id"]) for m in REGISTRY["metrics"]}
SERIES = set(FAMILIES) | {f"{f}_{s}" for f in FAMILIES for s in ("bucket", "sum", "count")}


def dashboards() -> dict[str, dict]:
    return {name: json.loads(text) for name, text in build.generate().items()}


def panels(dash):
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels") or []


def test_committed_json_is_what_the_builders_generate():
    assert build.stale() == [], "run: python -m tokentrail.dashboards.build"
    assert sorted(p.name for p in build.JSON_DIR.glob("*.json")) == sorted(build.generate())


@pytest.mark.parametrize("name", sorted(build.generate()))
def test_json_round_trips_through_the_typed_model(name):
    plugins.register_default_plugins()
    data = json.loads((build.JSON_DIR / name).read_text())
    model = Dashboard.from_json(data)
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == data
    assert all(type(p).__name__ in {"Panel", "RowPanel"} for p in model.panels)
    typed = [p for p in model.panels if type(p).__name__ == "Panel"]
    assert all(p.options is not None and not isinstance(p.options, dict) for p in typed), \
        "panel options decoded into the SDK's typed option classes"


def test_three_dashboards_with_the_required_variables():
    d = dashboards()
    assert set(d) == {"overview.json", "owner-drilldown.json", "expensive-requests.json"}
    names = lambda dash: {v["name"] for v in dash["templating"]["list"]}
    assert {"tenant", "feature", "team", "model", "environment"} <= names(d["owner-drilldown.json"])
    assert {"tenant", "feature"} <= names(d["expensive-requests.json"])
    assert len({dash["uid"] for dash in d.values()}) == 3


def test_every_panel_has_a_unit_thresholds_and_a_what_to_do_description():
    for name, dash in dashboards().items():
        for panel in panels(dash):
            if panel["type"] == "row":
                continue
            title = f"{name}: {panel['title']}"
            assert len(panel.get("description", "")) > 60, title
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults.get("unit") in {build.USD, build.PERCENT, build.TOKENS, build.CALLS}, title
            assert defaults["thresholds"]["steps"], title
            if len(defaults["thresholds"]["steps"]) > 1:  # a red state exists: say what to do
                assert re.search(r"[Rr]ed|over|above|below", panel["description"]), title


def test_spend_units_are_usd_and_shares_are_percent():
    for dash in dashboards().values():
        for panel in panels(dash):
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if panel["type"] == "row":
                continue
            if re.search(r"share|ratio", panel["title"]):
                if panel["type"] != "table":
                    assert unit == build.PERCENT, panel["title"]
            elif re.search(r"spend|cost|Spend|Cost", panel["title"]) and "bucket" not in panel["title"]:
                assert unit == build.USD, panel["title"]


def test_every_promql_name_is_a_collector_name_from_the_registry():
    exprs = [t["expr"] for dash in dashboards().values() for p in panels(dash) for t in p.get("targets", [])
             if "expr" in t]
    assert len(exprs) >= 25
    for expr in exprs:
        for name in re.findall(r"\b((?:tokentrail|gen_ai)_[A-Za-z0-9_]+)\b(?!\s*[=!~])", expr):
            assert name in SERIES or name in LABELS, (name, expr)
        for lbl in re.findall(r"\b([a-z_]+)\s*(?:=~|!=|=)\s*\"", expr):
            assert lbl in LABELS, (lbl, expr)
        for lbl in re.findall(r"by \(([^)]*)\)", expr):
            assert {x.strip() for x in lbl.split(",")} <= LABELS, expr


def test_every_traceql_attribute_is_in_the_registry():
    queries = [t["query"] for dash in dashboards().values() for p in panels(dash) for t in p.get("targets", [])
               if t.get("queryType") == "traceql"]
    assert len(queries) >= 4
    for query in queries:
        for attr in re.findall(r"span\.([A-Za-z0-9_.]+)", query):
            assert attr in ATTRIBUTES, (attr, query)


def test_exemplars_requested_on_the_cost_histogram():
    dash = dashboards()["expensive-requests.json"]
    exemplar_targets = [t for p in panels(dash) for t in p.get("targets", []) if t.get("exemplar")]
    assert exemplar_targets and all(f"{q.COST}_bucket" in t["expr"] for t in exemplar_targets)


def test_tenant_and_feature_rows_link_to_the_expensive_requests_view():
    linked = {}
    for dash in dashboards().values():
        for panel in panels(dash):
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                m = re.search(rf"/d/{build.UID_EXPENSIVE}/.*var-(\w+)=\$\{{__data\.fields\.(\w+)\}}", link["url"])
                assert m, link
                linked.setdefault(m.group(1), set()).add(m.group(2))
    assert linked["tenant"] == {q.TENANT} and linked["feature"] == {q.FEATURE}


def test_unattributed_and_unpriced_are_never_hidden():
    overview = {p["title"]: p for p in panels(dashboards()["overview.json"])}
    for title in ("Unattributed share", "Unpriced calls"):
        assert "or vector(0)" in overview[title]["targets"][0]["expr"]  # zero, not "No data", when there is spend
    assert overview["Unpriced calls"]["fieldConfig"]["defaults"]["noValue"] == "0"
    expensive = {p["title"]: p for p in panels(dashboards()["expensive-requests.json"])}
    assert "= false" in expensive["Most expensive unattributed LLM calls"]["targets"][0]["query"]


@pytest.mark.parametrize("name,unit,instrument,expected", [
    ("tokentrail.cost", "USD", "histogram", "tokentrail_cost_USD"),
    ("tokentrail.tokens", "{token}", "counter", "tokentrail_tokens_total"),
    ("gen_ai.client.operation.duration", "s", "histogram", "gen_ai_client_operation_duration_seconds"),
    ("gen_ai.client.token.usage", "{token}", "histogram", "gen_ai_client_token_usage"),
    ("system.memory.usage", "By", "updowncounter", "system_memory_usage_bytes"),
    ("http.server.requests", "1", "gauge", "http_server_requests_ratio"),
    ("net.io", "By/s", "gauge", "net_io_bytes_per_second"),
    ("jobs.total", "{job}", "counter", "jobs_total"),
    ("duration.seconds", "s", "histogram", "duration_seconds"),
])
def test_collector_naming_rules(name, unit, instrument, expected):
    assert promnames.metric_name(name, unit, instrument) == expected


def test_label_naming_rules():
    assert promnames.label("tokentrail.tenant") == "tokentrail_tenant"
    assert promnames.label("deployment.environment.name") == "deployment_environment_name"
    assert promnames.label("0abc") == "key_0abc"


def test_traceql_queries_are_well_formed():
    """No Tempo here: check the shape (one span filter, optional select), operators and variables."""
    variables = {"$min_cost", "$tenant", "$feature"}
    for dash in dashboards().values():
        for panel in panels(dash):
            for target in panel.get("targets", []):
                if target.get("queryType") != "traceql":
                    continue
                query = target["query"]
                m = re.fullmatch(r"\{ (.+) \}( \| select\((span\.[\w.]+(, span\.[\w.]+)*)\))?", query)
                assert m, query
                for cond in re.split(r" && | \|\| ", m.group(1)):
                    assert re.fullmatch(r'span\.[\w.]+ (>=|>|=|=~) (\$\w+|"\$\w+"|"\$\{\w+:regex\}"|\d+(\.\d+)?|false|true)',
                                        cond), cond
                used = set(re.findall(r"\$(\w+)|\$\{(\w+):regex\}", query))
                assert {"$" + (a or b) for a, b in used} <= variables, query


def _panel(dashboard: str, title: str) -> dict:
    [panel] = [p for p in panels(dashboards()[dashboard]) if p["title"] == title]
    return panel


def test_owner_drilldown_shows_burn_against_plan_revenue():
    panel = _panel("owner-drilldown.json", "Burn against plan revenue")
    [target] = panel["targets"]
    assert q.PLAN_BURN in target["expr"] and f'{q.TENANT}=~"$tenant"' in target["expr"]
    steps = [(s["value"], s["color"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [(None, build.GREEN), (50, build.YELLOW), (80, build.ORANGE), (100, build.RED)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs it)")
def test_burn_panel_query_evaluated_by_promtool(tmp_path):
    """The panel's own PromQL on series as the Collector exports them: percent of plan revenue per tenant and
    window, one value for a fleet of instances reporting the same shared counter, filtered by $tenant."""
    [target] = _panel("owner-drilldown.json", "Burn against plan revenue")["targets"]
    burn, tenant, window = q.PLAN_BURN, q.TENANT, q.BUDGET_WINDOW
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'{burn}{{{tenant}="acme",{window}="month",instance="a"}}', "values": "0.25x5"},
            {"series": f'{burn}{{{tenant}="acme",{window}="month",instance="b"}}', "values": "0.25x5"},
            {"series": f'{burn}{{{tenant}="acme",{window}="day",instance="a"}}', "values": "1.5x5"},
            {"series": f'{burn}{{{tenant}="globex",{window}="month",instance="a"}}', "values": "0.1x5"},
        ],
        "promql_expr_test": [
            {"expr": target["expr"].replace("$tenant", "acme"), "eval_time": "5m", "exp_samples": [
                {"labels": f'{{{tenant}="acme",{window}="month"}}', "value": 25},
                {"labels": f'{{{tenant}="acme",{window}="day"}}', "value": 150}]},
            {"expr": target["expr"].replace("$tenant", ".*"), "eval_time": "5m", "exp_samples": [
                {"labels": f'{{{tenant}="acme",{window}="month"}}', "value": 25},
                {"labels": f'{{{tenant}="acme",{window}="day"}}', "value": 150},
                {"labels": f'{{{tenant}="globex",{window}="month"}}', "value": 10}]},
        ]}]}
    (tmp_path / "burn.test.yaml").write_text(yaml.safe_dump(tests))
    out = subprocess.run(["promtool", "test", "rules", "burn.test.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
