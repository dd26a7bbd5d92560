"""The fault suite: a misbehaving server (``tokentrail.testing.faults``) and hostile values, through the
real openai SDK and tokentrail's whole pipeline. Never an exception of ours, never a changed SDK result,
never an absurd number in a metric, a cost or the ledger."""

from __future__ import annotations

import os
import sqlite3

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

from tokentrail.ledger import LedgerSpanExporter
from tokentrail.processor import usage as usage_module
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api
from tokentrail.testing.faults import Fault, FaultServer, http_reply, json_reply, sse_reply

import tokentrail


@pytest.fixture
def faults():
    with FaultServer() as server:
        yield server


def _client(server: FaultServer, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test-key", max_retries=0, **kwargs)


def _completion(prompt_tokens: int, completion_tokens: int, **usage) -> bytes:
    body = openai_api.chat_completion_json(
        openai_api.Reply(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens), "gpt-4o")
    body["usage"].update(usage)
    return json_reply(body)


def _ask(client: openai.OpenAI):
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def _otlp_encodes(pipeline) -> None:
    """What the real OTLP exporter does with the collected points (raises on an int64 overflow)."""
    encode_metrics(pipeline.metrics()).SerializeToString()


# --- absurd token counts ------------------------------------------------------------------------
@pytest.mark.parametrize("absurd", [10**19, 10**18, 100_000_001])
def test_an_absurd_token_count_is_no_usage_and_every_later_export_still_encodes(pipeline, faults, absurd):
    faults.script(_completion(absurd, 5), _completion(1000, 100))
    with _client(faults) as client, tokentrail.attribute(tenant="acme"):
        bad = _ask(client)
        _ask(client)

    assert bad.usage.prompt_tokens == absurd  # the SDK's result is untouched
    spans = sorted(pipeline.llm_spans(), key=lambda s: s.start_time)
    assert spans[0].attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.TOKENTRAIL_COST_NANO_USD not in spans[0].attributes
    assert attr.GEN_AI_USAGE_INPUT_TOKENS not in spans[0].attributes
    # gpt-4o at $2.50 / $10 per M: 1,000 in / 100 out = $0.0035
    assert spans[1].attributes[attr.TOKENTRAIL_COST_NANO_USD] == 3_500_000
    assert usage_module.implausible_count() == 1
    _otlp_encodes(pipeline)
    assert pipeline.metric_sum(names.TOKENTRAIL_TOKENS, tenant="acme", token_type="input") == 1000
    assert pipeline.metric_sum(names.TOKENTRAIL_COST, tenant="acme") == pytest.approx(0.0035)


def test_implausible_usage_is_counted_on_its_metric_and_no_other_call_loses_a_point(pipeline, faults):
    # Three calls: fine, absurd (10**19 prompt tokens), fine; gpt-4o at $2.50 / $10 per M.
    faults.script(_completion(1000, 100), _completion(10**19, 5), _completion(2000, 500))
    with _client(faults) as client:
        with tokentrail.attribute(tenant="acme"):
            _ask(client)
        with tokentrail.attribute(tenant="bad"):
            _ask(client)
        with tokentrail.attribute(tenant="globex"):
            _ask(client)

    [point] = pipeline.metric_points(names.TOKENTRAIL_USAGE_IMPLAUSIBLE)
    assert point.value == 1
    by_tenant = {s.attributes[attr.TOKENTRAIL_TENANT]: s.attributes for s in pipeline.llm_spans()}
    assert by_tenant["bad"][attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.TOKENTRAIL_COST_NANO_USD not in by_tenant["bad"]
    assert pipeline.metric_points(names.TOKENTRAIL_COST, tenant="bad") == []
    assert pipeline.metric_points(names.TOKENTRAIL_TOKENS, tenant="bad") == []
    # the other calls' points are all there: 1,000 in / 100 out = $0.0035; 2,000 in / 500 out = $0.0100
    assert pipeline.metric_sum(names.TOKENTRAIL_COST, tenant="acme") == pytest.approx(0.0035)
    assert pipeline.metric_sum(names.TOKENTRAIL_COST, tenant="globex") == pytest.approx(0.0100)
    assert pipeline.metric_count(names.TOKENTRAIL_COST) == 2
    assert pipeline.metric_sum(names.TOKENTRAIL_TOKENS, tenant="globex", token_type="output") == 500
    _otlp_encodes(pipeline)


def test_the_largest_plausible_count_is_priced(pipeline, faults):
    limit = usage_module.MAX_TOKENS_PER_CALL
    faults.script(_completion(limit, 0))
    with _client(faults) as client:
        _ask(client)
    [span] = pipeline.llm_spans()
    assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] == 250_000_000_000  # 100M tokens at $2.50 per M
    assert usage_module.implausible_count() == 0
    _otlp_encodes(pipeline)


def test_an_absurd_count_is_logged_once_and_counted_each_time(pipeline, faults, caplog):
    faults.script(_completion(10**19, 5))
    with _client(faults) as client:
        for _ in range(3):
            _ask(client)
    assert usage_module.implausible_count() == 3
    assert sum("implausible token counts" in r.getMessage() for r in caplog.records) == 1


def test_a_forged_cost_on_a_foreign_span_reaches_no_metric(pipeline):
    tracer = pipeline.tracer()
    for amount in (1e300, float("inf"), float("nan"), -5.0):
        with tracer.start_as_current_span("chat gpt-4o", attributes={
            attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai",
            attr.GEN_AI_REQUEST_MODEL: "gpt-4o", attr.TOKENTRAIL_COST_STATUS: "priced",
            attr.GEN_AI_USAGE_COST_AMOUNT: amount, attr.TOKENTRAIL_TENANT: "acme",
        }):
            pass
    pipeline.spans()
    assert pipeline.metric_points(names.TOKENTRAIL_COST, tenant="acme") == []
    _otlp_encodes(pipeline)


# --- the ledger -----------------------------------------------------------------------------------
def _ledger_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT tenant, input_tokens, cost_nano FROM spans WHERE llm = 1").fetchall()


def test_a_row_the_ledger_cannot_store_costs_only_itself(pipeline, faults, tmp_path):
    faults.script(_completion(1000, 100))
    with _client(faults) as client, tokentrail.attribute(tenant="acme"):
        for _ in range(20):
            _ask(client)
    tracer = pipeline.tracer()
    # a foreign span with an integer SQLite cannot hold (int64)
    with tracer.start_as_current_span("chat gpt-4o", attributes={
        attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_REQUEST_MODEL: "gpt-4o",
        attr.TOKENTRAIL_RETRY_ATTEMPT: 10**19, attr.TOKENTRAIL_TENANT: "acme",
    }):
        pass
    spans = pipeline.llm_spans()
    assert len(spans) == 21
    path = str(tmp_path / "ledger.db")
    exporter = LedgerSpanExporter(path)
    exporter.export(spans)
    exporter.shutdown()

    rows = _ledger_rows(path)
    assert len(rows) == 20 and exporter.written == 20 and exporter.dropped == 1
    assert sum(r[2] for r in rows) == 20 * 3_500_000


def test_absurd_usage_reaches_the_ledger_as_no_usage(pipeline, faults, tmp_path):
    faults.script(_completion(10**19, 5), _completion(1000, 100))
    with _client(faults) as client, tokentrail.attribute(tenant="acme"):
        _ask(client)
        _ask(client)
    path = str(tmp_path / "ledger.db")
    exporter = LedgerSpanExporter(path)
    exporter.export(pipeline.llm_spans())
    exporter.shutdown()
    assert sorted(_ledger_rows(path), key=str) == sorted([("acme", None, None), ("acme", 1000, 3_500_000)], key=str)
    assert exporter.dropped == 0


def test_a_ledger_deleted_while_running_is_noticed_and_started_again(pipeline, faults, tmp_path, caplog):
    faults.script(_completion(1000, 100))
    path = str(tmp_path / "ledger.db")
    exporter = LedgerSpanExporter(path)
    with _client(faults) as client, tokentrail.attribute(tenant="acme"):
        _ask(client)
        exporter.export(pipeline.llm_spans())
        pipeline.clear()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        _ask(client)
        _ask(client)
        exporter.export(pipeline.llm_spans())
    exporter.shutdown()

    assert len(_ledger_rows(path)) == 2  # the calls after the deletion are in the new ledger
    assert exporter.replaced == 1
    assert sum("deleted or replaced" in r.getMessage() for r in caplog.records) == 1


# --- a misbehaving server ----------------------------------------------------------------------------
_FAULTS = {
    "cut before any byte": Fault(_completion(10, 1), cut_after=0),
    "cut inside the head": Fault(_completion(10, 1), cut_after=20),
    "cut inside the body": Fault(_completion(10, 1), cut_after=len(_completion(10, 1)) - 30),
    "garbage bytes": Fault(b"\x00\xff not http at all\r\n\r\n"),
    "not json": Fault(http_reply(b"<html>502 bad gateway</html>", content_type="application/json")),
    "json but not an object": Fault(json_reply([1, 2, 3])),
    "usage a string": Fault(json_reply({**openai_api.chat_completion_json(openai_api.Reply(), "gpt-4o"),
                                        "usage": "lots"})),
    "stall past the timeout": Fault(_completion(10, 1), stall_s=30),
    "500 with absurd usage": Fault(json_reply({"error": {"message": "x"}, "usage": {"prompt_tokens": 10**30}},
                                              status=500)),
}


def _outcome(client: openai.OpenAI):
    try:
        return "ok", _ask(client)
    except Exception as exc:  # the SDK's own error is part of the outcome to compare
        return "raised", type(exc)


def _dump(result):
    return result.model_dump() if hasattr(result, "model_dump") else result


@pytest.mark.parametrize("name", list(_FAULTS))
def test_a_misbehaving_server_gives_the_sdk_its_own_outcome(make_pipeline, faults, name):
    faults.script(_FAULTS[name])
    with _client(faults, timeout=0.5) as client:
        bare = _outcome(client)
        pipeline = make_pipeline()
        instrumented = _outcome(client)

    assert instrumented[0] == bare[0]
    if bare[0] == "raised":
        assert instrumented[1] is bare[1] and not issubclass(bare[1], tokentrail.BudgetExceeded)
    else:
        assert _dump(instrumented[1]) == _dump(bare[1])
    [span] = pipeline.llm_spans()
    assert span.attributes.get(attr.TOKENTRAIL_COST_STATUS) in ("no_usage", "priced")
    _otlp_encodes(pipeline)


def test_a_stream_with_absurd_usage_is_no_usage(pipeline, faults):
    reply = openai_api.Reply(prompt_tokens=10**19, completion_tokens=5)
    faults.script(sse_reply(openai_api.chat_chunks(reply, "gpt-4o", include_usage=True)))
    with _client(faults) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    assert chunks[-1].usage.prompt_tokens == 10**19
    [span] = pipeline.llm_spans()
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    _otlp_encodes(pipeline)


# --- a budget store that does not answer --------------------------------------------------------------
def test_a_dead_redis_budget_store_is_asked_once_per_back_off_not_once_per_call(pipeline, faults, tmp_path,
                                                                                  monkeypatch):
    from tokentrail import budgets

    redis_faults = FaultServer().start()
    try:
        redis_faults.script(Fault(b"", stall_s=60))  # accepts, never answers: every command times out
        path = tmp_path / "budgets.yaml"
        path.write_text(f"store: redis://127.0.0.1:{redis_faults.url.rpartition(':')[2]}/0\n"
                        "budgets:\n  - tenant: acme\n    window: day\n    limit_usd: 10\n    enforce: true\n")
        monkeypatch.setenv("TOKENTRAIL_BUDGETS", str(path))
        budgets.reload()
        budgets.config()
        budgets._loaded.store.breaker.first_s = 3600.0  # no second try within the test
        faults.script(_completion(1000, 100))
        with _client(faults) as client, tokentrail.attribute(tenant="acme"):
            for _ in range(20):
                _ask(client)  # fail-open: every call is sent
        assert len(faults.requests) == 20
        assert redis_faults.connections == 1
    finally:
        redis_faults.stop()
    # 20 spend reads and 20 spend writes (and the spend gauge's reads) failed: only the first one really
    by_type = {p.attributes[attr.ERROR_TYPE]: p.value
               for p in pipeline.metric_points(names.TOKENTRAIL_BUDGET_STORE_ERRORS)}  # one collection
    assert by_type.pop("StoreUnavailable") >= 39
    assert list(by_type.values()) == [1]  # the one timeout
