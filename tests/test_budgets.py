"""Circuit breakers before the call is sent, and tenant/team budgets, through the real openai SDK."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest
import redis

import tokentrail
from tokentrail import breakers, budgets
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api

from helpers import ask, free_port, task_span, usd


def realistic(completion_tokens: int = 300):
    """A fake answer whose prompt token count follows the prompt (about 4 characters a token),
    and whose content is never valid JSON."""

    def answer(request):
        chars = sum(len(m.get("content") or "") for m in request.json["messages"])
        return openai_api.reply(prompt_tokens=chars // 4 + 8, completion_tokens=completion_tokens,
                                content="Sure! Here is the data you asked for: {invoice: 42")(request)

    return answer


def runaway_agent(client):
    """Keeps asking again while the answer is not valid JSON: the $2,847 retry loop."""
    messages = [{"role": "user", "content": "Extract the invoice fields as JSON. " + "Line item, qty 1. " * 400}]
    attempt = 0
    while True:
        with tokentrail.retry(attempt):
            reply = client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=400)
        text = reply.choices[0].message.content
        try:
            return json.loads(text)
        except ValueError:
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": "That was not valid JSON. Answer again with JSON only."}]
            attempt += 1


def test_runaway_loop_is_stopped_at_the_budget_with_zero_overshoot(pipeline, client, server):
    server.enqueue(*[realistic()] * 200)
    with pytest.raises(tokentrail.BudgetExceeded) as caught:
        with tokentrail.attribute(tenant="acme", feature="invoices"):
            with tokentrail.task("extract-invoice", budget_usd=0.25) as t:
                runaway_agent(client)

    exc = caught.value
    assert exc.limit_name == "budget_usd" and exc.task == "extract-invoice" and exc.limit == 0.25
    assert exc.unit == "USD"
    assert "budget_usd limit 0.25 USD" in str(exc) and "extract-invoice" in str(exc)
    sent = [s for s in pipeline.llm_spans() if s.attributes.get(attr.TOKENTRAIL_COST_STATUS) == "priced"]
    # every admitted call was sent and paid; the stopped one never reached the provider
    assert len(server.requests) == t.calls == len(sent) >= 5
    spent = sum(usd(s) for s in sent)
    assert spent == Decimal(t.spent_nano) / 10**9
    assert spent <= Decimal("0.25")  # zero overshoot
    assert exc.spent + exc.estimate_usd > 0.25  # stopped because the next call could cross it, not earlier
    assert exc.spent == pytest.approx(float(spent))

    [blocked] = [s for s in pipeline.llm_spans() if s.attributes.get(attr.TOKENTRAIL_BUDGET_EXCEEDED)]
    assert blocked.attributes[attr.TOKENTRAIL_BUDGET_EXCEEDED] == "budget_usd"
    assert blocked.attributes[attr.ERROR_TYPE] == "BudgetExceeded"
    assert blocked.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    task = task_span(pipeline, "extract-invoice").attributes
    assert task[attr.TOKENTRAIL_TASK_OUTCOME] == "budget_exceeded"
    assert task[attr.TOKENTRAIL_BUDGET_EXCEEDED] == "budget_usd"
    assert task[attr.TOKENTRAIL_TASK_CALLS] == t.calls
    assert task[attr.TOKENTRAIL_TASK_COST_RETRIES] > 0  # every call after the first was a retry
    assert pipeline.metric_sum(names.TOKENTRAIL_BUDGET_BLOCKED,
                               attributes={attr.TOKENTRAIL_BUDGET_EXCEEDED: "budget_usd"}) == 1
    assert pipeline.metric_count(names.TOKENTRAIL_TASK_COST,
                                 attributes={attr.TOKENTRAIL_TASK_OUTCOME: "budget_exceeded"}) == 1


def test_max_calls_stops_the_next_call_without_sending_it(pipeline, client, server):
    server.enqueue(*[openai_api.reply()] * 5)
    with tokentrail.task("loop", max_calls=3) as t:
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=ask())
        with pytest.raises(tokentrail.BudgetExceeded, match="max_calls limit 3 calls") as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    assert caught.value.limit_name == "max_calls"
    assert (caught.value.limit, caught.value.spent, caught.value.unit) == (3, 3, "calls")
    assert len(server.requests) == 3 and t.calls == 3
    assert t.outcome == "budget_exceeded"  # the task went on, but a breaker fired in it


def test_max_usd_per_minute(pipeline, client, server):
    # gpt-4o: 2,000 in / 500 out = $0.01 a call; worst case with max_tokens=500 is also $0.01 + prompt estimate
    server.enqueue(*[openai_api.reply(prompt_tokens=2000, completion_tokens=500)] * 5)
    with tokentrail.task("burst", max_usd_per_minute=0.025) as t:
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
        with pytest.raises(tokentrail.BudgetExceeded) as caught:
            for _ in range(4):
                client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
    assert caught.value.limit_name == "max_usd_per_minute"
    assert t.spent_nano <= 25_000_000
    assert len(server.requests) == t.calls == 2


def test_an_unpriced_model_is_not_blocked_by_a_usd_budget(pipeline, client, server):
    server.enqueue(openai_api.reply())
    with tokentrail.task("private-model", budget_usd=0.0001) as t:
        client.chat.completions.create(model="our-private-llm-7b", messages=ask())
    assert t.calls == 1 and t.unpriced == 1


def write_budgets(tmp_path, monkeypatch, text):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    monkeypatch.setenv("TOKENTRAIL_BUDGETS", str(path))
    budgets.reload()


def test_tenant_budget_warns_at_fractions_then_blocks_when_enforced(pipeline, client, server, tmp_path, monkeypatch,
                                                                    caplog):
    write_budgets(tmp_path, monkeypatch, """
budgets:
  - tenant: acme
    window: day
    limit_usd: 0.05
    enforce: true
  - team: support
    window: month
    limit_usd: 100
""")
    server.enqueue(*[openai_api.reply(prompt_tokens=2000, completion_tokens=500)] * 10)  # $0.01 each
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    with tokentrail.attribute(tenant="acme", team="support"):
        for _ in range(5):  # each call's worst case is ~$0.005 + its prompt: the 5th still fits
            client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)  # $0.05 spent
        with pytest.raises(tokentrail.BudgetExceeded, match="tenant:acme/day") as caught:
            client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
    with tokentrail.attribute(tenant="globex"):
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)  # other tenants unaffected
    assert caught.value.spent == pytest.approx(0.05)
    assert len(server.requests) == 6

    events = [(e.attributes[attr.TOKENTRAIL_BUDGET_FRACTION], s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX]
               if attr.TOKENTRAIL_TASK_CALL_INDEX in s.attributes else None)
              for s in pipeline.llm_spans() for e in s.events if e.name == budgets.WARNING_EVENT]
    assert sorted(f for f, _ in events) == [0.5, 0.8, 1.0]  # crossed at $0.03, $0.04, $0.05
    assert "tenant:acme/day budget of 0.05 USD at 50%" in caplog.text
    assert "tenant:acme/day budget of 0.05 USD at 80%" in caplog.text
    assert pipeline.metric_sum(names.TOKENTRAIL_BUDGET_WARNINGS, tenant="acme") == 3

    limits = {(tuple(sorted(p.attributes.items())), p.value) for p in pipeline.metric_points(names.TOKENTRAIL_BUDGET_LIMIT)}
    assert ((( attr.TOKENTRAIL_BUDGET_WINDOW, "day"), (attr.TOKENTRAIL_TENANT, "acme")), 0.05) in limits
    assert (((attr.TOKENTRAIL_BUDGET_WINDOW, "month"), (attr.TOKENTRAIL_TEAM, "support")), 100.0) in limits
    [spent] = pipeline.metric_points(names.TOKENTRAIL_BUDGET_SPENT, tenant="acme")
    assert spent.value == pytest.approx(0.05)


def test_shared_redis_counter_spans_processes(pipeline, client, server, tmp_path, monkeypatch, redis_url):
    redis.Redis.from_url(redis_url).flushdb()
    write_budgets(tmp_path, monkeypatch, f"""
store: {redis_url}
budgets:
  - tenant: acme
    window: month
    limit_usd: 0.025
    enforce: true
""")
    server.enqueue(*[openai_api.reply(prompt_tokens=2000, completion_tokens=500)] * 5)
    with tokentrail.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
        budgets.reload()  # a new process of the fleet: nothing in memory, the spend is in Redis
        with pytest.raises(tokentrail.BudgetExceeded, match="spent 0.020000 USD"):  # $0.02 + up to $0.005 more
            client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
    label, _ = budgets.period_start("month")
    assert int(redis.Redis.from_url(redis_url).get(f"tokentrail:budget:tenant:acme:month:{label}")) == 20_000_000


@pytest.mark.parametrize("failure, blocked", [("open", False), ("closed", True)])
def test_redis_down_fails_open_by_default_or_closed_when_asked(pipeline, client, server, tmp_path, monkeypatch,
                                                                failure, blocked):
    write_budgets(tmp_path, monkeypatch, f"""
store: redis://127.0.0.1:{free_port()}/0
failure: {failure}
budgets:
  - tenant: acme
    window: day
    limit_usd: 10
    enforce: true
""")
    server.enqueue(openai_api.reply())
    with tokentrail.attribute(tenant="acme"):
        if blocked:
            with pytest.raises(tokentrail.BudgetExceeded, match="fail-closed"):
                client.chat.completions.create(model="gpt-4o", messages=ask())
            assert server.requests == []
        else:
            client.chat.completions.create(model="gpt-4o", messages=ask())
            assert len(server.requests) == 1
    assert pipeline.metric_sum(names.TOKENTRAIL_BUDGET_STORE_ERRORS) >= 1


def test_bad_budget_file_is_reported_and_ignored(pipeline, client, server, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    write_budgets(tmp_path, monkeypatch, "budgets:\n  - tenant: acme\n    limit_usd: -3\n")
    assert "limit_usd=-3 must be a positive number" in caplog.text
    server.enqueue(openai_api.reply())
    with tokentrail.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o", messages=ask())
    assert len(server.requests) == 1


def test_parse_config_validates_entries():
    cfg = budgets.parse_config({"warn": [0.9], "budgets": [{"team": "support", "window": "day", "limit_usd": 5}]})
    [b] = cfg.budgets
    assert (b.scope, b.owner, b.window, b.limit_usd, b.enforce, b.warn) == ("team", "support", "day", 5.0, False, (0.9,))
    for bad, message in [({"budgets": [{"limit_usd": 1}]}, "exactly one of tenant"),
                         ({"budgets": [{"tenant": "a", "window": "week", "limit_usd": 1}]}, "window"),
                         ({"failure": "maybe"}, "open or closed"),
                         ({"warn": [2]}, "fractions")]:
        with pytest.raises(ValueError, match=message):
            budgets.parse_config(bad)


def test_ledger_store_counts_what_this_machine_already_spent(pipeline, client, server, tmp_path, monkeypatch):
    from tokentrail.ledger import LedgerSpanExporter

    server.enqueue(*[openai_api.reply(prompt_tokens=2000, completion_tokens=500)] * 5)  # $0.01 each
    with tokentrail.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
    ledger = tmp_path / "ledger.db"
    exporter = LedgerSpanExporter(str(ledger))  # what the ledger exporter wrote for an earlier process
    exporter.export(pipeline.spans())
    exporter.shutdown()

    write_budgets(tmp_path, monkeypatch, f"""
store: ledger:{ledger}
budgets:
  - tenant: acme
    window: month
    limit_usd: 0.035
    enforce: true
""")
    with tokentrail.attribute(tenant="acme"):
        client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)  # $0.02 + $0.01 fits
        with pytest.raises(tokentrail.BudgetExceeded, match="spent 0.030000 USD"):
            client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)
    assert len(server.requests) == 3


def test_concurrent_calls_reserve_their_worst_case_so_the_budget_holds(pipeline, client, server):
    from concurrent.futures import ThreadPoolExecutor

    server.enqueue(*[realistic()] * 200)
    long_prompt = [{"role": "user", "content": "Classify this document. " + "Body text. " * 300}]

    def worker():
        stopped = 0
        for _ in range(50):
            try:
                client.chat.completions.create(model="gpt-4o", messages=long_prompt, max_tokens=400)
            except tokentrail.BudgetExceeded:
                stopped += 1
        return stopped

    with tokentrail.task("fan-out", budget_usd=0.05, max_calls=1000) as t:
        with ThreadPoolExecutor(max_workers=6) as pool:
            bound = tokentrail.wrap(worker)  # wrap here: it captures the task's context
            stopped = sum(pool.map(lambda _: bound(), range(6)))
    assert stopped > 0
    assert len(server.requests) == t.calls
    assert t.spent_nano <= 50_000_000  # in-flight worst cases were reserved: no overshoot under concurrency
    assert t.reserved_nano == 0
    spans = [s for s in pipeline.llm_spans() if s.attributes.get(attr.TOKENTRAIL_COST_STATUS) == "priced"]
    assert sorted(s.attributes[attr.TOKENTRAIL_TASK_CALL_INDEX] for s in spans) == list(range(1, t.calls + 1))


def test_breakers_stop_calls_only_once_installed(pipeline, client, server):
    server.enqueue(*[openai_api.reply()] * 3)
    breakers.uninstall()
    try:
        with tokentrail.task("loop", max_calls=0) as t:
            client.chat.completions.create(model="gpt-4o-mini", messages=ask())  # nothing checks it: sent
        assert len(server.requests) == 1 and t.calls == 0
    finally:
        breakers.install()
    breakers.install()  # idempotent: one check per breaker
    with tokentrail.task("loop", max_calls=1) as t:
        client.chat.completions.create(model="gpt-4o-mini", messages=ask())
        with pytest.raises(tokentrail.BudgetExceeded) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    assert len(server.requests) == 2 and t.calls == 1
    assert (caught.value.limit_name, caught.value.limit, caught.value.spent) == ("max_calls", 1, 1)
    assert pipeline.metric_sum(names.TOKENTRAIL_BUDGET_BLOCKED) == 1


def test_importing_tokentrail_installs_no_breaker(tmp_path):
    """Only tokentrail.breakers.install() does (the instrumentors and InMemoryPipeline call it)."""
    (tmp_path / "budgets.yaml").write_text("budgets:\n  - tenant: acme\n    window: day\n    limit_usd: 0.000001\n"
                                           "    enforce: true\n")
    code = textwrap.dedent("""
        import tokentrail, tokentrail.budgets, tokentrail.tasks
        from tokentrail import preflight
        planned = preflight.PlannedCall(provider="openai", model="gpt-4o", estimated_input_tokens=100,
                                        max_output_tokens=100)

        def attempt():
            with tokentrail.attribute(tenant="acme"), tokentrail.task("t", max_calls=5) as t:
                try:
                    preflight.check(planned)
                    return f"sent:{t.calls}"
                except tokentrail.BudgetExceeded as exc:
                    return f"stopped:{exc.limit_name}"

        print(attempt())
        from tokentrail import breakers
        breakers.install()
        print(attempt())
    """)
    env = {**os.environ, "TOKENTRAIL_BUDGETS": str(tmp_path / "budgets.yaml")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sent:0", "stopped:tenant:acme/day"]
