"""Limits and scopes under hostile use (part of the fault suite): concurrent calls against one task
limit, scopes left out of order, non-finite limits."""

from __future__ import annotations

import threading

import pytest

import tokentrail
from tokentrail import tasks
from tokentrail.semconv import attributes as attr


def _ask(client, **kwargs):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                          **kwargs)


# --- the task breaker -------------------------------------------------------------------------------
def test_concurrent_calls_never_pass_a_task_limit_together(pipeline, openai_client, server, monkeypatch):
    crossed = tasks._crossed_limit

    def slow_check(*args):  # a 2 ms delay between a call's limit check and its admission
        result = crossed(*args)
        threading.Event().wait(0.002)
        return result

    monkeypatch.setattr(tasks, "_crossed_limit", slow_check)
    outcomes: list[str] = []
    start = threading.Barrier(40)

    with tokentrail.task("fan-out", max_calls=20) as t:
        @tokentrail.wrap
        def call():
            start.wait()
            try:
                _ask(openai_client)
                outcomes.append("sent")
            except tokentrail.BudgetExceeded:
                outcomes.append("stopped")

        threads = [threading.Thread(target=call) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert outcomes.count("sent") == 20 and outcomes.count("stopped") == 20
    assert len([r for r in server.requests if r.path.endswith("/chat/completions")]) == 20
    assert t.calls == 20


@pytest.mark.parametrize("field, value", [("budget_usd", float("inf")), ("budget_usd", float("nan")),
                                          ("max_usd_per_minute", float("inf")), ("max_calls", float("nan"))])
def test_a_non_finite_limit_is_a_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        tokentrail.task("t", **{field: value})


# --- scopes left out of order ------------------------------------------------------------------------
def _tenant_of_next_call(pipeline, client) -> str | None:
    pipeline.clear()
    _ask(client)
    [span] = pipeline.llm_spans()
    return span.attributes.get(attr.TOKENTRAIL_TENANT)


def test_scopes_exited_out_of_order_leave_no_owner_behind(pipeline, openai_client, caplog):
    outer, inner = tokentrail.attribute(tenant="outer"), tokentrail.attribute(feature="inner")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert tokentrail.current_owner() == {"feature": "inner"}  # the open one stays, the closed one is gone
    inner.__exit__(None, None, None)
    assert tokentrail.current_owner() == {}
    assert _tenant_of_next_call(pipeline, openai_client) is None
    assert sum("out of order" in r.getMessage() for r in caplog.records) == 1


def test_a_scope_in_a_generator_closed_after_the_callers_block(pipeline, openai_client):
    def pages():
        with tokentrail.attribute(tenant="generator"):
            yield 1
            yield 2

    with tokentrail.attribute(tenant="caller"):
        gen = pages()
        next(gen)
    gen.close()
    assert tokentrail.current_owner() == {}
    assert _tenant_of_next_call(pipeline, openai_client) is None


def test_a_task_left_out_of_order_still_ends_and_leaves_nothing(pipeline, openai_client):
    owner = tokentrail.attribute(tenant="acme")
    run = tokentrail.task("late")
    owner.__enter__()
    state = run.__enter__()
    owner.__exit__(None, None, None)
    assert tasks.current_task() is state  # the task is still open, without the tenant
    _ask(openai_client)
    run.__exit__(None, None, None)
    assert tasks.current_task() is None and tokentrail.current_owner() == {}
    assert state.calls == 1 and state.outcome == "ok"
    [span] = pipeline.llm_spans()
    assert attr.TOKENTRAIL_TENANT not in span.attributes
    assert span.attributes[attr.TOKENTRAIL_TASK_NAME] == "late"
