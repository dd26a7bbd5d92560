"""Every Prometheus query of every dashboard panel, run against a real Prometheus that ingested a real workload
through the real OpenTelemetry Collector.

Path under test:
  instrumented workload -> tokentrail pipeline (pricing, attribution, metric views)
  -> OTel SDK OTLP/HTTP metric exporter -> otelcol (collector-config.yaml + the test overlay: trusted otlp door,
  metrics pipeline, prometheus exporter) <- scraped by /usr/bin/prometheus (exemplar storage on)
  <- dashboard PromQL via the HTTP API.
Expected numbers come from the same workload's exported spans, never from the metrics.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from collector_fixtures import running_collector
from tokentrail.dashboards import alerts, build, queries as q
from tokentrail.semconv import attributes as A
from tokentrail.testing.collector import free_port, stop_process

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (.ci/run installs it)")]

RANGE_S = 3600
STEP_S = 60
NANO = 1_000_000_000


class Prometheus:
    """/usr/bin/prometheus on a free loopback port with a temp data dir, scraping one target every second."""

    def __init__(self, workdir: Path, target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The shipped alert rules, evaluated every second instead of every minute.
        rules = yaml.safe_load((alerts.ALERTS_DIR / alerts.RULES_FILE).read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{workdir / 'rules.yaml'}']\n"
            "scrape_configs:\n  - job_name: otel-collector\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--enable-feature=exemplar-storage",
             "--storage.tsdb.retention.time=1d"],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait(lambda: self._get("/-/ready") is not None, "Prometheus did not become ready")
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def _get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.read()
        except Exception:
            return None

    def _wait(self, predicate, message: str, limit_s: float = 120) -> None:
        deadline = time.monotonic() + limit_s
        while not predicate():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.2)

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
        assert body["status"] == "success", (params, body)
        return body["data"]

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


# --- the workload -----------------------------------------------------------------------------------------
BUDGETS_YAML = """
budgets:
  - tenant: acme
    window: month
    limit_usd: 0.15
  - team: growth
    window: day
    limit_usd: 5.00
"""


def run_workload(server, environment: str, calls: list[dict]) -> tuple[list, list, object]:
    """The real openai SDK, instrumented by tokentrail, against the fake provider on 127.0.0.1, inside an
    InMemoryPipeline for one deployment environment. Returns (all spans, LLM spans, metrics data)."""
    import openai

    from tokentrail import attribute, task
    from tokentrail.instrumentation.openai import OpenAIInstrumentor
    from tokentrail.testing import InMemoryPipeline, openai_api

    with InMemoryPipeline(instrument=[OpenAIInstrumentor()],
                          resource_attributes={A.DEPLOYMENT_ENVIRONMENT_NAME: environment}) as p:
        with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=2) as client:
            for call in calls:
                if call.get("task"):
                    with attribute(**_owner(call)), task(call["task"]):
                        for step in call["steps"]:
                            _ask(client, server, {**call, **step})
                else:
                    with attribute(**_owner(call)):
                        _ask(client, server, call)
        spans = p.spans()
        llm = p.llm_spans()
        metrics = p.metrics()
    return spans, llm, metrics


def _owner(call: dict) -> dict:
    return {k: call[k] for k in ("tenant", "feature", "team") if call.get(k)}


def _ask(client, server, call: dict) -> None:
    from tokentrail import fallback, retry

    if call.get("retry"):
        with retry(call["retry"]):
            return _send(client, server, call)
    if call.get("fallback_from"):
        with fallback(call["fallback_from"]):
            return _send(client, server, call)
    return _send(client, server, call)


def _send(client, server, call: dict) -> None:
    from tokentrail.testing import openai_api

    for _ in range(call.get("throttled", 0)):  # 429s the SDK retries by itself inside the one call
        server.enqueue(openai_api.error(429))
    script = {"prompt_tokens": call["input"], "completion_tokens": call["output"],
              "cached_tokens": call.get("cache_read", 0), "reasoning_tokens": call.get("reasoning", 0)}
    client.chat.completions.create(model=call["model"], messages=[{"role": "user", "content": "Summarise."}],
                                   extra_headers={openai_api.HEADER: json.dumps(script)})


def workload_calls() -> dict[str, list[dict]]:
    """Several tenants, features, teams and models; cache-warm and cache-cold tenants; SDK retries on 429,
    application retries and a fallback; agent tasks; reasoning tokens; an unpriced model; unattributed calls
    (a script with no owner)."""
    prod, staging = [], []
    for i in range(6):  # acme: cache-warm chat on gpt-4o
        prod.append(dict(tenant="acme", feature="chat", team="core", model="gpt-4o",
                         input=10_000, cache_read=9_728, output=400 + i))
    for i in range(4):  # globex: cache-cold summarize; the first call is throttled twice then succeeds
        prod.append(dict(tenant="globex", feature="summarize", team="growth", model="gpt-4o",
                         input=8_000 + 100 * i, cache_read=0 if i else 4_864, output=1_200, throttled=2 * (i == 0)))
    # a globex job: the app asks again after a bad answer, then falls back to another model
    prod.append(dict(tenant="globex", feature="summarize", team="growth", model="gpt-4o", task="digest",
                     steps=[dict(input=8_000, output=1_200), dict(input=8_000, output=1_200, retry=1),
                            dict(input=8_000, output=1_200, fallback_from="gpt-4o-mini")]))
    for i in range(3):  # initech: an agent task per run on a reasoning model, growing context
        prod.append(dict(tenant="initech", feature="agent", team="core", model="o3-mini", task="research",
                         steps=[dict(input=2_000 * (k + 1), cache_read=1_024 * k, output=3_000, reasoning=2_400)
                                for k in range(2 + i)]))
    prod.append(dict(tenant="initech", feature="agent", team="core",
                     model="tokentrail-unknown-finetune", input=500, output=50))  # unpriced
    prod.append(dict(feature="nightly-script", team="data", model="gpt-4o-mini", input=3_000, output=300))
    prod.append(dict(model="gpt-4o-mini", input=1_000, output=100))  # no owner at all
    for i in range(3):  # staging traffic of acme: another instance and environment
        staging.append(dict(tenant="acme", feature="chat", team="core", model="gpt-4o-mini",
                            input=5_000, cache_read=2_048 * i, output=200))
    return {"production": prod, "staging": staging}


class Truth:
    """Totals computed from the exported spans (the source of truth the dashboards must match)."""

    def __init__(self, spans_by_env: dict[str, list], all_spans: list):
        self.tasks = [dict(s.attributes) for s in all_spans if A.TOKENTRAIL_TASK_COST_NANO_USD in s.attributes
                      and A.TOKENTRAIL_TASK_OUTCOME in s.attributes]
        self.calls = []
        for env, spans in spans_by_env.items():
            for span in spans:
                a = dict(span.attributes)
                self.calls.append({
                    "env": env, "tenant": a.get(A.TOKENTRAIL_TENANT), "feature": a.get(A.TOKENTRAIL_FEATURE),
                    "team": a.get(A.TOKENTRAIL_TEAM), "provider": a.get(A.GEN_AI_PROVIDER_NAME),
                    "model": a.get(A.GEN_AI_REQUEST_MODEL), "status": a.get(A.TOKENTRAIL_COST_STATUS),
                    "nano": a.get(A.TOKENTRAIL_COST_NANO_USD),
                    "input": a.get(A.GEN_AI_USAGE_INPUT_TOKENS, 0),
                    "cache_read": a.get(A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0),
                    "output": a.get(A.GEN_AI_USAGE_OUTPUT_TOKENS, 0),
                    "reasoning": a.get(A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, 0),
                    "trace_id": format(span.context.trace_id, "032x"),
                    "saved": a.get(A.TOKENTRAIL_COST_CACHE_SAVINGS, 0.0),
                    "cost_input": a.get(A.TOKENTRAIL_COST_INPUT), "cost_cache_read": a.get(A.TOKENTRAIL_COST_CACHE_READ),
                    "retry": a.get(A.TOKENTRAIL_RETRY_ATTEMPT, 0), "fallback": a.get(A.TOKENTRAIL_FALLBACK_FROM),
                })
        self.priced = [c for c in self.calls if c["status"] == "priced"]

    def usd(self, **where) -> float:
        return sum(c["nano"] for c in self.priced if all(c[k] == v for k, v in where.items())) / NANO

    def group_usd(self, *keys) -> dict[tuple, float]:
        out = defaultdict(int)
        for c in self.priced:
            out[tuple(c[k] for k in keys)] += c["nano"]
        return {k: v / NANO for k, v in out.items()}

    def cache_ratio(self, **where) -> float:
        rows = [c for c in self.calls if all(c[k] == v for k, v in where.items()) and c["status"] != "no_usage"]
        return sum(c["cache_read"] for c in rows) / sum(c["input"] for c in rows)


# --- fixture: workload -> Collector -> Prometheus ---------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    from tokentrail import budgets
    from tokentrail.testing import fake_provider

    workdir = tmp_path_factory.mktemp("prometheus")
    (workdir / "budgets.yaml").write_text(BUDGETS_YAML)
    with running_collector(workdir) as collector, fake_provider() as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKENTRAIL_BUDGETS", str(workdir / "budgets.yaml"))
        budgets.reload()
        prom = Prometheus(workdir, f"127.0.0.1:{collector.ports['PROMETHEUS']}")
        try:
            spans_by_env, all_spans = {}, []
            started = time.time()
            for env, calls in workload_calls().items():
                spans, llm, metrics = run_workload(server, env, calls)
                spans_by_env[env] = llm
                all_spans += spans
                # The real SDK exporter, over real HTTP, exactly as an app sends to the Collector.
                exporter = OTLPMetricExporter(endpoint=collector.url("OTLP_HTTP") + "/v1/metrics")
                assert exporter.export(metrics) == MetricExportResult.SUCCESS
                exporter.shutdown()
            truth = Truth(spans_by_env, all_spans)
            truth.started = started
            expected_calls = len(truth.priced)
            count_q = f"sum({q.COST}_count)"
            prom._wait(lambda: (r := prom.api("query", query=count_q)["result"]) and
                       float(r[0]["value"][1]) == expected_calls, "Prometheus never saw all calls")
            # The Collector may still have been applying the last batch during that scrape: one more scrape.
            seen = time.time()
            prom._wait(lambda: (r := prom.api("query", query="max(timestamp(up))")["result"]) and
                       float(r[0]["value"][1]) > seen, "Prometheus stopped scraping the Collector")
            yield prom, truth, time.time()
        finally:
            prom.stop()
            mp.delenv("TOKENTRAIL_BUDGETS")
            budgets.reload()


# --- the dashboards' queries ------------------------------------------------------------------------------
def _panels(dash: dict):
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def prometheus_targets() -> list[tuple[str, str, dict, dict]]:
    """(dashboard, panel title, panel, target) for every Prometheus target of every panel."""
    out = []
    for name, text in build.generate().items():
        dash = json.loads(text)
        for panel in _panels(dash):
            for target in panel.get("targets", []) or []:
                if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus":
                    out.append((name, panel["title"], panel, target))
    return out


ALL = {"tenant": ".*", "feature": ".*", "team": ".*", "model": ".*", "environment": ".*", "min_cost": "0"}


def substitute(expr: str, variables: dict, interval_s: int) -> str:
    expr = expr.replace("$__range_s", str(RANGE_S)).replace("$__range", f"{RANGE_S}s")
    expr = expr.replace("$__rate_interval", f"{max(4, interval_s)}s").replace("$__interval", f"{interval_s}s")
    for k, v in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${k}", v)
    assert "$" not in expr, expr
    return expr


def _interval_s(panel: dict) -> int:
    return 86400 if panel.get("interval") == "1d" else STEP_S


def run_target(prom: Prometheus, at: float, panel: dict, target: dict, variables: dict = ALL):
    interval = _interval_s(panel)
    expr = substitute(target["expr"], variables, interval)
    if target.get("instant"):
        return prom.api("query", query=expr, time=at)["result"]
    end = at
    start = at - RANGE_S + interval if interval < RANGE_S else at
    return prom.api("query_range", query=expr, start=start, end=end, step=interval)["result"]


def total(result) -> float:
    """Sum of every value of every series (instant vector or matrix)."""
    s = 0.0
    for series in result:
        for _, v in series.get("values", [series.get("value")]):
            s += float(v)
    return s


def by_labels(result, *labels) -> dict[tuple, float]:
    out = defaultdict(float)
    for series in result:
        key = tuple(series["metric"].get(l) for l in labels)
        for _, v in series.get("values", [series.get("value")]):
            out[key] += float(v)
    return dict(out)


def scalar(result) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


# --- tests ------------------------------------------------------------------------------------------------
def test_the_workload_is_the_one_described(stack):
    _, t, _ = stack
    assert {c["tenant"] for c in t.calls} == {"acme", "globex", "initech", None}
    assert {c["env"] for c in t.calls} == {"production", "staging"}
    assert sorted(c["retry"] for c in t.calls if c["retry"]) == [1, 2]  # app retry, and 2 SDK retries on 429
    assert [c["fallback"] for c in t.calls if c["fallback"]] == ["gpt-4o-mini"]
    assert sum(c["status"] == "unpriced" for c in t.calls) == 1
    print({k: round(v, 6) for k, v in t.group_usd("tenant").items()}, round(t.usd(), 6))


def test_every_prometheus_query_of_every_panel_runs(stack):
    prom, truth, at = stack
    targets = prometheus_targets()
    assert len(targets) >= 25
    for dash, title, panel, target in targets:
        result = run_target(prom, at, panel, target)
        assert isinstance(result, list), (dash, title)


def _target(dash_file: str, title: str) -> tuple[dict, dict]:
    for dash, t, panel, target in prometheus_targets():
        if dash == dash_file and t == title:
            return panel, target
    raise KeyError(title)


def value(stack, dash_file, title, variables=ALL):
    prom, _, at = stack
    panel, target = _target(dash_file, title)
    return run_target(prom, at, panel, target, variables)


MICRO = 1e-6


def test_overview_numbers_equal_span_totals(stack):
    _, t, _ = stack
    assert t.usd() > 0.05
    assert scalar(value(stack, "overview.json", "Total spend")) == pytest.approx(t.usd(), abs=MICRO)
    # Spend over time: intervals tile the range, so the series sum to the total.
    assert total(value(stack, "overview.json", "Spend over time")) == pytest.approx(t.usd(), abs=MICRO)
    got = by_labels(value(stack, "overview.json", "Spend by provider and model"), q.PROVIDER, q.MODEL)
    want = t.group_usd("provider", "model")
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=MICRO), k
    for title, key, lbl in (("Top tenants", "tenant", q.TENANT), ("Top features", "feature", q.FEATURE),
                            ("Top teams", "team", q.TEAM)):
        got = by_labels(value(stack, "overview.json", title), lbl)
        want = t.group_usd(key)
        assert got.keys() == want.keys(), title
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=MICRO), (title, k)
    unattributed = sum(c["nano"] for c in t.priced if not c["tenant"]) / NANO
    assert unattributed > 0
    assert scalar(value(stack, "overview.json", "Unattributed share")) == pytest.approx(
        100 * unattributed / t.usd(), abs=1e-6)
    assert scalar(value(stack, "overview.json", "Unpriced calls")) == sum(
        1 for c in t.calls if c["status"] == "unpriced") == 1
    assert scalar(value(stack, "overview.json", "Priced calls")) == len(t.priced)
    assert scalar(value(stack, "overview.json", "Cache-hit ratio")) == pytest.approx(100 * t.cache_ratio(), abs=1e-9)
    assert scalar(value(stack, "overview.json", "Cache-read tokens")) == sum(c["cache_read"] for c in t.calls)
    reasoning = sum(c["reasoning"] for c in t.calls) / sum(c["output"] for c in t.calls)
    assert scalar(value(stack, "overview.json", "Reasoning share of output")) == pytest.approx(100 * reasoning)
    retried = sum(c["nano"] for c in t.priced if c["retry"]) / NANO
    fell_back = sum(c["nano"] for c in t.priced if c["fallback"]) / NANO
    assert retried > 0 and fell_back > 0
    assert scalar(value(stack, "overview.json", "Retries share of spend")) == pytest.approx(100 * retried / t.usd())
    assert scalar(value(stack, "overview.json", "Fallbacks share of spend")) == pytest.approx(
        100 * fell_back / t.usd())
    staging = dict(ALL, environment="staging")  # no retries there: 0%, not "No data"
    assert scalar(value(stack, "overview.json", "Retries share of spend", staging)) == 0
    # Dollars saved by cache: each cached call's cache reads at its fresh input rate (derived from the span's own
    # uncached-input cost) minus what they cost.
    expected_saved = 0.0
    for c in t.priced:
        if c["cache_read"]:
            rate = c["cost_input"] / (c["input"] - c["cache_read"])
            assert c["saved"] == pytest.approx(c["cache_read"] * rate - c["cost_cache_read"], rel=1e-6)
            expected_saved += c["saved"]
    assert expected_saved > 0.05
    assert scalar(value(stack, "overview.json", "Dollars saved by cache")) == pytest.approx(expected_saved, abs=MICRO)
    # No previous period in a fresh Prometheus: the change is undefined, shown as no value.
    assert value(stack, "overview.json", "Change against previous period") == []


def test_overview_environment_filter(stack):
    _, t, _ = stack
    staging = dict(ALL, environment="staging")
    assert scalar(value(stack, "overview.json", "Total spend", staging)) == pytest.approx(
        t.usd(env="staging"), abs=MICRO)


def test_owner_drilldown_numbers(stack):
    _, t, _ = stack
    acme = dict(ALL, tenant="acme")
    assert scalar(value(stack, "owner-drilldown.json", "Spend in range", acme)) == pytest.approx(
        t.usd(tenant="acme"), abs=MICRO)
    got = by_labels(value(stack, "owner-drilldown.json", "Spend over time by tenant and feature"),
                    q.TENANT, q.FEATURE)
    want = t.group_usd("tenant", "feature")
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=MICRO), k
    per_day = by_labels(value(stack, "owner-drilldown.json", "Cost per tenant per day"), q.TENANT)
    for (tenant,), usd in t.group_usd("tenant").items():
        assert per_day[(tenant,)] == pytest.approx(usd, abs=MICRO)
    tenants = {c["tenant"] for c in t.priced if c["tenant"]}
    attributed = sum(t.usd(tenant=x) for x in tenants)
    assert scalar(value(stack, "owner-drilldown.json", "Average cost per active tenant per day")) == pytest.approx(
        attributed / len(tenants) / (RANGE_S / 86400), abs=MICRO)
    # Cache-hit dispersion: each tenant's ratio, then the median and p10 across tenants (PromQL quantile).
    ratios = by_labels(value(stack, "owner-drilldown.json", "Cache-hit ratio by tenant"), q.TENANT)
    every = {c["tenant"] for c in t.calls if c["tenant"]}
    assert {k[0] for k in ratios} == every
    for tenant in every:
        assert ratios[(tenant,)] == pytest.approx(100 * t.cache_ratio(tenant=tenant), abs=1e-9), tenant
    assert ratios[("acme",)] > 80 > ratios[("globex",)]
    values = sorted(ratios.values())
    assert scalar(value(stack, "owner-drilldown.json", "Cache-hit ratio: median tenant")) == pytest.approx(
        statistics.median(values))
    assert scalar(value(stack, "owner-drilldown.json", "Cache-hit ratio: p10 tenant")) == pytest.approx(
        _prom_quantile(0.1, values))


def test_cache_hit_median_and_p10_hour_per_tenant(stack):
    """Evaluated just after the next hour boundary, the range holds one whole hour containing the workload, so
    each tenant's hourly median and p10 both equal its ratio over the workload."""
    prom, t, at = stack
    panel, _ = _target("owner-drilldown.json", "Cache-hit ratio per tenant: median and p10 hour")
    boundary = math.ceil(at / 3600) * 3600
    results = [prom.api("query", query=substitute(target["expr"], ALL, STEP_S), time=boundary + 1)["result"]
               for target in panel["targets"]]
    if t.started < boundary - 3600:  # the workload straddled an hour boundary: two hours, no single ratio
        return
    for result in results:
        got = by_labels(result, q.TENANT)
        for tenant in {c["tenant"] for c in t.calls if c["tenant"]}:
            assert got[(tenant,)] == pytest.approx(100 * t.cache_ratio(tenant=tenant), abs=1e-9), tenant


def _prom_quantile(phi: float, values: list[float]) -> float:
    rank = phi * (len(values) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return values[lo] + (values[hi] - values[lo]) * (rank - lo)


def _bucket_of(value: float, bounds) -> int:
    return next((i for i, b in enumerate(bounds) if value <= b), len(bounds))


def test_cost_quantiles_land_in_the_true_bucket(stack):
    from tokentrail.processor.metrics import COST_BUCKETS_USD

    _, t, _ = stack
    costs = sorted(c["nano"] / NANO for c in t.priced)
    for title, phi in (("Cost per request p50", 0.5), ("Cost per request p95", 0.95)):
        got = scalar(value(stack, "owner-drilldown.json", title))
        true = costs[max(0, math.ceil(phi * len(costs)) - 1)]
        assert _bucket_of(got, COST_BUCKETS_USD) == _bucket_of(true, COST_BUCKETS_USD), (title, got, true)


def test_cost_histogram_counts_and_exemplars(stack):
    from tokentrail.processor.metrics import COST_BUCKETS_USD

    prom, t, at = stack
    got = {float(k[0]): v for k, v in by_labels(value(stack, "expensive-requests.json", "Calls per cost bucket"),
                                                 "le").items()}
    for bound in list(COST_BUCKETS_USD) + [math.inf]:
        assert got[bound] == sum(1 for c in t.priced if c["nano"] / NANO <= bound), bound
    heat = by_labels(value(stack, "expensive-requests.json", "Cost per request (histogram)"), "le")
    assert heat[("+Inf",)] == len(t.priced)
    # Exemplars: the heatmap asks Prometheus for them; each links a real trace of the workload.
    panel, target = _target("expensive-requests.json", "Cost per request (histogram)")
    assert target.get("exemplar") is True
    expr = substitute(target["expr"], ALL, STEP_S)
    data = prom.api("query_exemplars", query=expr, start=at - RANGE_S, end=at)
    trace_ids = {ex["labels"]["trace_id"] for series in data for ex in series["exemplars"]}
    assert trace_ids and trace_ids <= {c["trace_id"] for c in t.priced}


def test_variable_queries_return_the_workload_owners(stack):
    prom, t, at = stack
    dash = json.loads(build.generate()["owner-drilldown.json"])
    seen = {}
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var.get("query") or "")
        if m:
            seen[var["name"]] = set(prom.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)}))
    assert seen["tenant"] == {c["tenant"] for c in t.priced if c["tenant"]}
    assert seen["environment"] == {"production", "staging"}
    assert "gpt-4o" in seen["model"]


def test_task_panels(stack):
    from tokentrail.telemetry import TASK_COST_BUCKETS_USD

    _, t, _ = stack
    assert len(t.tasks) == 4
    assert scalar(value(stack, "owner-drilldown.json", "Tasks")) == len(t.tasks)
    assert scalar(value(stack, "owner-drilldown.json", "Tasks", dict(ALL, tenant="acme"))) == 0
    from tokentrail.telemetry import TASK_CALLS_BUCKETS

    calls = sorted(task[A.TOKENTRAIL_TASK_CALLS] for task in t.tasks)
    assert calls == [2, 3, 3, 4]
    assert scalar(value(stack, "owner-drilldown.json", "Calls per task (average)")) == pytest.approx(
        sum(calls) / len(calls))
    got = scalar(value(stack, "owner-drilldown.json", "Calls per task p95"))
    assert _bucket_of(got, TASK_CALLS_BUCKETS) == _bucket_of(calls[-1], TASK_CALLS_BUCKETS)
    costs = sorted(task[A.TOKENTRAIL_TASK_COST_NANO_USD] / NANO for task in t.tasks)
    for title, phi in (("Cost per task p50", 0.5), ("Cost per task p95", 0.95)):
        got = scalar(value(stack, "owner-drilldown.json", title))
        true = costs[max(0, math.ceil(phi * len(costs)) - 1)]
        assert _bucket_of(got, TASK_COST_BUCKETS_USD) == _bucket_of(true, TASK_COST_BUCKETS_USD), (title, got, true)


def test_budget_burn(stack):
    _, t, _ = stack
    got = by_labels(value(stack, "owner-drilldown.json", "Budget burn against budget"), q.TENANT, q.TEAM,
                    q.BUDGET_WINDOW)
    # Each environment is a process with its own in-memory spend store (InMemoryPipeline starts afresh):
    # the panel shows the larger of their burns.
    envs = {c["env"] for c in t.priced}
    assert got[("acme", None, "month")] == pytest.approx(
        100 * max(t.usd(tenant="acme", env=e) for e in envs) / 0.15, abs=1e-4)
    assert got[(None, "growth", "day")] == pytest.approx(
        100 * max(t.usd(team="growth", env=e) for e in envs) / 5.00, abs=1e-4)


@pytest.mark.parametrize("variable,field", [("tenant", "tenant"), ("feature", "feature"), ("team", "team"),
                                            ("model", "model"), ("environment", "env")])
def test_owner_drilldown_variables_filter_exactly(stack, variable, field):
    _, t, _ = stack
    values = {c[field] for c in t.priced if c[field]}
    assert len(values) >= 2
    for v in values:
        got = scalar(value(stack, "owner-drilldown.json", "Spend in range", dict(ALL, **{variable: v})))
        assert got == pytest.approx(t.usd(**{field: v}), abs=MICRO), (variable, v)
    # multi-select, as Grafana sends it: a|b
    a, b = sorted(values)[:2]
    got = scalar(value(stack, "owner-drilldown.json", "Spend in range", dict(ALL, **{variable: f"{a}|{b}"})))
    assert got == pytest.approx(t.usd(**{field: a}) + t.usd(**{field: b}), abs=MICRO)


def test_expensive_requests_filtered_by_tenant(stack):
    _, t, _ = stack
    got = by_labels(value(stack, "expensive-requests.json", "Calls per cost bucket", dict(ALL, tenant="globex")), "le")
    assert got[("+Inf",)] == sum(1 for c in t.priced if c["tenant"] == "globex")


def test_alert_rules_fire_on_the_workload(stack):
    """The shipped rules, evaluated by the real Prometheus over the workload: the unpriced model alerts at its
    first call, acme (over 50% but under 80% of its budget) gets exactly the 50% alert."""
    prom, t, _ = stack
    assert 50 < 100 * t.usd(tenant="acme") / 0.15 < 80

    def firing():
        return {(a["labels"]["alertname"], a["labels"].get(q.MODEL) or a["labels"].get(q.TENANT) or
                 a["labels"].get(q.TEAM)) for a in prom.api("alerts")["alerts"] if a["state"] == "firing"}

    want = {("TokentrailUnpricedCalls", "tokentrail-unknown-finetune"), ("TokentrailBudgetTenant50", "acme")}
    prom._wait(lambda: want <= firing(), f"alerts never fired: {want - firing()}")
    names = {name for name, _ in firing()}
    assert "TokentrailBudgetTenant80" not in names and "TokentrailBudgetTeam50" not in names
