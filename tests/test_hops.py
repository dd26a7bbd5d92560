"""The trace id, the owner and the task survive every hop: threads, asyncio, a subprocess, an
HTTP worker in another process (httpx and requests, standard OTel propagators) and a Redis
stream consumed by another process. LLM calls are real openai SDK calls to the fake provider."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
import requests

import tokentrail
from tokentrail.semconv import attributes as attr
from tokentrail.testing import openai_api

from helpers import ask, task_span

WORKER = str(Path(__file__).with_name("hop_worker.py"))
SECRET = "fleet-shared-secret-for-tests"


def owned(span, tenant="acme", task="research"):
    a = span.attributes
    return a.get(attr.TOKENTRAIL_TENANT) == tenant and a.get(attr.TOKENTRAIL_TASK_NAME) == task


def assert_one_trace_every_llm_call_owned(pipeline, expected_calls):
    task = task_span(pipeline, "research")
    llm = [s for s in pipeline.spans() if attr.TOKENTRAIL_COST_STATUS in s.attributes]
    assert len(llm) == expected_calls
    for span in llm:
        assert span.context.trace_id == task.context.trace_id
        assert owned(span)
        assert span.attributes[attr.TOKENTRAIL_TASK_ID] == "R-1"
    # calls made from other threads/tasks still count in the task and are numbered uniquely
    assert sorted(s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX] for s in llm) == list(range(1, expected_calls + 1))
    assert task.attributes[attr.TOKENTRAIL_TASK_CALLS] == expected_calls
    return task


# --------------------------------------------------------------------------------------------
# in-process hops
# --------------------------------------------------------------------------------------------
def test_thread_pool_executor(pipeline, client, server):
    def step(i):
        return client.chat.completions.create(model="gpt-4o-mini", messages=ask(f"step {i}"))

    with tokentrail.attribute(tenant="acme"), tokentrail.task("research", id="R-1"):
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(tokentrail.wrap(step), range(6)))
    assert len(results) == 6
    assert_one_trace_every_llm_call_owned(pipeline, 6)


def test_plain_threads_with_wrap(pipeline, client, server):
    def step():
        client.chat.completions.create(model="gpt-4o-mini", messages=ask())

    with tokentrail.attribute(tenant="acme"), tokentrail.task("research", id="R-1"):
        threads = [threading.Thread(target=tokentrail.wrap(step)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert_one_trace_every_llm_call_owned(pipeline, 3)


def test_plain_thread_without_wrap_loses_the_context(pipeline, client, server):
    # documented: OpenTelemetry's context does not flow into a new thread by itself
    with tokentrail.attribute(tenant="acme"), tokentrail.task("research", id="R-1"):
        t = threading.Thread(target=lambda: client.chat.completions.create(model="gpt-4o-mini", messages=ask()))
        t.start()
        t.join()
    [llm] = [s for s in pipeline.spans() if attr.TOKENTRAIL_COST_STATUS in s.attributes]
    assert attr.TOKENTRAIL_TENANT not in llm.attributes
    assert llm.context.trace_id != task_span(pipeline, "research").context.trace_id


def test_asyncio_tasks_and_gather(pipeline, aclient, server):
    async def step(i):
        await asyncio.sleep(0)
        return await aclient.chat.completions.create(model="gpt-4o-mini", messages=ask(f"step {i}"))

    async def agent():
        with tokentrail.attribute(tenant="acme"):
            async with tokentrail.task("research", id="R-1"):
                background = asyncio.create_task(step(0))
                await asyncio.gather(*(step(i) for i in range(1, 4)))
                await background

    asyncio.run(agent())
    assert_one_trace_every_llm_call_owned(pipeline, 4)


# --------------------------------------------------------------------------------------------
# other processes
# --------------------------------------------------------------------------------------------
def read_spans(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def worker_env(server, extra=None):
    env = {**os.environ, "HOP_BASE_URL": openai_api.base_url(server)}
    env.pop("TOKENTRAIL_TRUST_INBOUND_BAGGAGE", None)
    env.update(extra or {})
    return env


def child_llm_spans(path):
    return [s for s in read_spans(path) if attr.TOKENTRAIL_COST_STATUS in s["attributes"]]


@pytest.mark.slow
@pytest.mark.parametrize("signed", [True, False])
def test_subprocess_gets_trace_and_owner_from_the_environment(pipeline, client, server, tmp_path, monkeypatch,
                                                               signed):
    if signed:
        monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    out = tmp_path / "spans.jsonl"
    with tokentrail.attribute(tenant="acme", feature="research"), tokentrail.task("research", id="R-1"):
        client.chat.completions.create(model="gpt-4o", messages=ask())
        env = worker_env(server, tokentrail.environ())
        assert "TRACEPARENT" in env and "BAGGAGE" in env
        subprocess.run([sys.executable, WORKER, "env", str(out)], env=env, check=True, timeout=120)

    task = task_span(pipeline, "research")
    [child] = child_llm_spans(out)
    [work] = [s for s in read_spans(out) if s["name"] == "child.work"]
    assert child["trace_id"] == work["trace_id"] == format(task.context.trace_id, "032x")
    assert work["parent_id"] == format(task.context.span_id, "016x")
    assert child["attributes"][attr.TOKENTRAIL_COST_STATUS] == "priced"
    if signed:  # the fleet shares the secret: the child trusts the signed owner and task
        assert child["attributes"][attr.TOKENTRAIL_TENANT] == "acme"
        assert child["attributes"][attr.TOKENTRAIL_FEATURE] == "research"
        assert child["attributes"][attr.TOKENTRAIL_TASK_NAME] == "research"
        assert child["attributes"][attr.TOKENTRAIL_TASK_ID] == "R-1"
    else:  # unsigned inbound attribution is not trusted by default: same trace, no owner
        assert attr.TOKENTRAIL_TENANT not in child["attributes"]
        assert child["attributes"][attr.TOKENTRAIL_ATTRIBUTION_REJECTION] == "unsigned"


@pytest.fixture
def http_clients_instrumented(pipeline):
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentors = [HTTPXClientInstrumentor(), RequestsInstrumentor()]
    for inst in instrumentors:
        inst.instrument(tracer_provider=pipeline.tracer_provider)
    yield
    for inst in instrumentors:
        inst.uninstrument()


@pytest.mark.slow
def test_http_worker_in_another_process_via_httpx_and_requests(pipeline, client, server, tmp_path, monkeypatch,
                                                                http_clients_instrumented):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    out = tmp_path / "spans.jsonl"
    worker = subprocess.Popen([sys.executable, WORKER, "http", str(out), "2"], env=worker_env(server),
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(worker.stdout.readline())
        url = f"http://127.0.0.1:{port}/work"
        with tokentrail.attribute(tenant="acme"), tokentrail.task("research", id="R-1"):
            client.chat.completions.create(model="gpt-4o", messages=ask())
            # the standard OTel propagators (tracecontext + baggage) inject the headers
            assert httpx.post(url, json={"step": 1}, timeout=60).json() == {"ok": True}
            assert requests.post(url, json={"step": 2}, timeout=60).json() == {"ok": True}
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    task = task_span(pipeline, "research")
    client_spans = {s.context.span_id for s in pipeline.spans() if s.name == "POST"}
    assert len(client_spans) == 2  # one from httpx, one from requests
    handled = [s for s in read_spans(out) if s["name"] == "worker.handle"]
    assert {int(s["parent_id"], 16) for s in handled} == client_spans
    children = child_llm_spans(out)
    assert len(children) == 2
    for span in children:
        assert span["trace_id"] == format(task.context.trace_id, "032x")
        assert span["attributes"][attr.TOKENTRAIL_TENANT] == "acme"
        assert span["attributes"][attr.TOKENTRAIL_TASK_ID] == "R-1"


@pytest.mark.slow
def test_redis_stream_consumer_in_another_process(pipeline, client, server, tmp_path, monkeypatch, redis_url):
    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    r = redis.Redis.from_url(redis_url)
    stream = f"agent-steps-{os.getpid()}"
    r.delete(stream)
    traces = {}
    for tenant, name in (("acme", "research"), ("globex", "billing")):
        with tokentrail.attribute(tenant=tenant), tokentrail.task(name, id=f"{name}-1"):
            headers = tokentrail.inject({})
            r.xadd(stream, {**headers, "payload": json.dumps({"step": name})})
        traces[tenant] = format(task_span(pipeline, name).context.trace_id, "032x")

    out = tmp_path / "spans.jsonl"
    subprocess.run([sys.executable, WORKER, "redis", str(out), redis_url, stream, "2"], env=worker_env(server),
                   check=True, timeout=120)
    children = child_llm_spans(out)
    assert len(children) == 2
    for span in children:
        tenant = span["attributes"][attr.TOKENTRAIL_TENANT]
        assert span["trace_id"] == traces[tenant]
        assert span["attributes"][attr.TOKENTRAIL_TASK_NAME] == {"acme": "research", "globex": "billing"}[tenant]
    r.delete(stream)


@pytest.mark.slow
def test_multi_process_run_is_one_trace_in_the_ledger_with_its_full_cost(pipeline, client, server, tmp_path,
                                                                          monkeypatch):
    from tokentrail.ledger import LedgerSpanExporter

    monkeypatch.setenv("TOKENTRAIL_BAGGAGE_SECRET", SECRET)
    ledger = tmp_path / "ledger.db"
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))  # parent: gpt-4o, $0.01
    with tokentrail.attribute(tenant="acme"), tokentrail.task("research", id="R-1"):
        client.chat.completions.create(model="gpt-4o", messages=ask())
        env = worker_env(server, {**tokentrail.environ(), "HOP_LEDGER": str(ledger)})
        subprocess.run([sys.executable, WORKER, "env", str(tmp_path / "spans.jsonl")], env=env, check=True,
                       timeout=120)
    exporter = LedgerSpanExporter(str(ledger))
    exporter.export(pipeline.spans())
    exporter.shutdown()

    trace_id = format(task_span(pipeline, "research").context.trace_id, "032x")
    [child] = child_llm_spans(tmp_path / "spans.jsonl")
    child_nano = child["attributes"][attr.TOKENTRAIL_COST_NANO_USD]
    shown = subprocess.run([sys.executable, "-m", "tokentrail.cli", "trace", trace_id, "--ledger", str(ledger),
                            "--format", "json"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["calls"] == 2
    assert data["cost_nano_usd"] == 10_000_000 + child_nano  # both processes' calls, one trace
    [root] = [s for s in data["spans"] if s["depth"] == 0]
    assert root["name"] == "task research" and root["subtree_cost_nano_usd"] == data["cost_nano_usd"]
    llm = [s for s in data["spans"] if s["llm"]]
    assert {s["name"] for s in llm} == {"chat gpt-4o", "chat gpt-4o-mini"}
    assert all(s["owner"] == {"tenant": "acme", "task": "research", "task_id": "R-1"} for s in llm)
