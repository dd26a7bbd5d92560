"""Budget warnings to a webhook: a real HTTP server of the test on 127.0.0.1 (answering, down, stalled,
failing), the real openai SDK to the fake provider, the notifier's real worker thread."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import multiprocessing
import subprocess
import sys
import textwrap
import threading

import pytest

import tokentrail
from tokentrail import budgets, notify
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.testing import openai_api

from helpers import ask, free_port

# gpt-4o at $2.50 / $10 per M: 2,000 in / 500 out is $0.0100 a call (USERS.md)
CALL_NANO = 2000 * 2_500 + 500 * 10_000


class Webhook:
    """A webhook receiver: records each body and the order of events; ``stall()`` holds every answer
    until ``release()``; ``fail_first(n, status)`` answers the first n requests with an error."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.log: list[tuple[str, object]] = []  # ("received" | "responded", fraction or text)
        self.received = threading.Semaphore(0)
        self._gate = threading.Event()
        self._gate.set()
        self._failures: list[int] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = body.get("fraction", body.get("text"))
                with hook._lock:
                    status = hook._failures.pop(0) if hook._failures else 200
                    if status == 200:
                        hook.bodies.append(body)
                    hook.log.append(("received", key))
                hook.received.release()
                hook._gate.wait(30)
                with hook._lock:  # logged before the answer leaves, so the next post is always logged after it
                    hook.log.append(("responded", key))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stall(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def fail_first(self, n: int, status: int) -> None:
        self._failures = [status] * n

    def wait_received(self) -> None:
        assert self.received.acquire(timeout=30), "the webhook was never called"

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def write_budgets(tmp_path, monkeypatch, text):
    path = tmp_path / "budgets.yaml"
    path.write_text(textwrap.dedent(text))
    monkeypatch.setenv("TOKENTRAIL_BUDGETS", str(path))
    budgets.reload()
    return path


def day_budget(url: str, fmt: str = "json", extra: str = "") -> str:
    return f"""
        notify:
          webhook: {url}
          format: {fmt}
          backoff_s: 0.01
          {extra}
        budgets:
          - tenant: acme
            window: day
            limit_usd: 0.05
            warn: [0.5, 0.8]
        """


def spend(client, server, calls: int, tenant: str = "acme"):
    server.enqueue(*[openai_api.reply(prompt_tokens=2000, completion_tokens=500)] * calls)
    with tokentrail.attribute(tenant=tenant):
        for _ in range(calls):
            client.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=500)


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def test_each_warning_reaches_the_webhook_once_with_the_exact_body(pipeline, client, server, tmp_path, monkeypatch,
                                                                   webhook):
    write_budgets(tmp_path, monkeypatch, day_budget(webhook.url))
    spend(client, server, 8)  # $0.08 against $0.05: 50% at the 3rd call, 80% at the 4th, 100% at the 5th
    assert budgets.notifier().flush(30)

    def body(fraction, calls):
        return {"event": "tokentrail.budget.warning", "limit_name": "tenant:acme/day", "scope": "tenant",
                "owner": "acme", "window": "day", "period": today(), "fraction": fraction, "unit": "USD",
                "spent": calls * CALL_NANO / 1e9, "limit": 0.05, "spent_nano": calls * CALL_NANO,
                "limit_nano": 50_000_000}

    assert webhook.bodies == [body(0.5, 3), body(0.8, 4), body(1.0, 5)]
    priced = [s for s in pipeline.llm_spans() if s.attributes.get(attr.TOKENTRAIL_COST_NANO_USD) == CALL_NANO]
    assert len(priced) == 8  # every call priced as the worked number says
    # the same crossings as the span events and the warnings metric: one rule, once per window
    assert pipeline.metric_sum(names.TOKENTRAIL_BUDGET_WARNINGS, tenant="acme") == 3
    assert pipeline.metric_points(names.TOKENTRAIL_NOTIFY_FAILURES) == []


def test_slack_format(pipeline, client, server, tmp_path, monkeypatch, webhook):
    write_budgets(tmp_path, monkeypatch, day_budget(webhook.url, "slack"))
    spend(client, server, 3)
    assert budgets.notifier().flush(30)
    assert webhook.bodies == [{"text": f"tokentrail: tenant acme has used 50% of its day LLM budget tenant:acme/day "
                                       f"({today()}): $0.030000 of $0.05"}]


def test_a_webhook_that_is_down_never_fails_a_call_and_is_counted_and_logged_once(
        pipeline, client, server, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.notify")
    write_budgets(tmp_path, monkeypatch, day_budget(f"http://127.0.0.1:{free_port()}/hook", extra="retries: 2"))
    spend(client, server, 5)  # three warnings, each tried 3 times against a closed port
    assert len(server.requests) == 5
    hook = budgets.notifier()
    assert hook.flush(30)
    assert (hook.delivered, hook.failed, hook.dropped) == (0, 3, 0)
    assert pipeline.metric_sum(names.TOKENTRAIL_NOTIFY_FAILURES,
                               attributes={attr.ERROR_TYPE: "ConnectionRefusedError"}) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "tokentrail.notify"]
    assert len(lines) == 1 and "not delivered (ConnectionRefusedError)" in lines[0]
    assert "secret" not in lines[0] and f"http://127.0.0.1:" in lines[0]


def test_a_stalled_webhook_does_not_hold_the_calls(pipeline, client, server, tmp_path, monkeypatch, webhook):
    monkeypatch.setattr(notify, "TIMEOUT_S", 60.0)  # a loaded machine must not time the stalled post out
    write_budgets(tmp_path, monkeypatch, day_budget(webhook.url))
    webhook.stall()
    spend(client, server, 3)  # crosses 50%: the worker posts it and the webhook holds the answer
    webhook.wait_received()
    spend(client, server, 2)  # crosses 80% and 100% while the worker is stuck in the first post
    with webhook._lock:
        when_calls_returned = list(webhook.log)
    webhook.release()
    assert budgets.notifier().flush(30)
    # the calls were done while the first post was still unanswered and the next two were only queued
    assert when_calls_returned == [("received", 0.5)]
    assert webhook.log == [("received", 0.5), ("responded", 0.5), ("received", 0.8), ("responded", 0.8),
                           ("received", 1.0), ("responded", 1.0)]
    assert [b["fraction"] for b in webhook.bodies] == [0.5, 0.8, 1.0]
    assert len(server.requests) == 5


def test_a_failing_webhook_is_retried_with_backoff_until_it_answers(pipeline, client, server, tmp_path,
                                                                    monkeypatch, webhook):
    write_budgets(tmp_path, monkeypatch, day_budget(webhook.url, extra="retries: 3"))
    webhook.fail_first(2, 503)
    spend(client, server, 3)
    hook = budgets.notifier()
    assert hook.flush(30)
    assert [key for event, key in webhook.log if event == "received"] == [0.5, 0.5, 0.5]
    assert [b["fraction"] for b in webhook.bodies] == [0.5]
    assert (hook.delivered, hook.failed) == (1, 0)
    assert pipeline.metric_points(names.TOKENTRAIL_NOTIFY_FAILURES) == []


def test_a_refused_body_is_not_retried(pipeline, client, server, tmp_path, monkeypatch, webhook):
    write_budgets(tmp_path, monkeypatch, day_budget(webhook.url, extra="retries: 3"))
    webhook.fail_first(1, 400)
    spend(client, server, 3)
    assert budgets.notifier().flush(30)
    assert [event for event, _ in webhook.log] == ["received", "responded"]
    assert pipeline.metric_sum(names.TOKENTRAIL_NOTIFY_FAILURES, attributes={attr.ERROR_TYPE: "400"}) == 1


def notice(fraction: float) -> notify.Notice:
    return notify.Notice("tenant:acme/day", "tenant", "acme", "day", "2026-12-01", fraction, 1, 2)


def test_a_margin_notice_in_slack_says_the_plan_and_its_revenue():
    n = notify.Notice("tenant:acme/day", "tenant", "acme", "day", "2026-12-01", 0.8, 147_096_774, 183_870_967,
                      "starter", 0.3, 612_903_225)
    assert notify.slack_body(n) == {"text": "tokentrail: tenant acme has used 80% of its day LLM budget "
                                            "tenant:acme/day (2026-12-01): $0.147097 of $0.18 (30% of plan "
                                            "starter's $0.61 for this day)"}


def _send_in_child(hook):
    hook.send(notice(0.9))  # the child: its own queue, its own worker
    sys.exit(0 if hook.flush(20) else 1)


def test_a_forked_child_does_not_send_its_parents_queue(pipeline, webhook):
    hook = notify.Notifier(notify.NotifyConfig(webhook.url))
    try:
        webhook.stall()
        hook.send(notice(0.1))
        webhook.wait_received()
        hook.send(notice(0.2))  # queued behind the stalled post
        child = multiprocessing.get_context("fork").Process(target=_send_in_child, args=(hook,))
        child.start()
        webhook.wait_received()  # the child's 0.9, while the parent's worker is still stalled
        webhook.release()
        child.join(60)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0
        assert hook.flush(30)
    finally:
        hook.close()
    assert sorted(b["fraction"] for b in webhook.bodies) == [0.1, 0.2, 0.9]  # 0.2 once: the child did not resend it


def test_a_full_queue_drops_the_oldest_and_counts_it(pipeline, webhook):
    hook = notify.Notifier(notify.NotifyConfig(webhook.url), capacity=2)
    try:
        webhook.stall()
        hook.send(notice(0.1))
        webhook.wait_received()  # 0.1 is being delivered; the queue is empty
        for fraction in (0.2, 0.3, 0.4, 0.5):
            hook.send(notice(fraction))  # 0.2 and 0.3 are pushed out by 0.4 and 0.5
        webhook.release()
        assert hook.flush(30)
    finally:
        hook.close()
    assert [b["fraction"] for b in webhook.bodies] == [0.1, 0.4, 0.5]
    assert hook.dropped == 2
    assert pipeline.metric_sum(names.TOKENTRAIL_NOTIFY_FAILURES,
                               attributes={attr.ERROR_TYPE: notify.QUEUE_FULL}) == 2


EXIT_SCRIPT = """
import sys
from tokentrail import notify
hook = notify.Notifier(notify.NotifyConfig(sys.argv[1]))
hook.send(notify.Notice("tenant:acme/month", "tenant", "acme", "month", "2026-12", 0.8, 4, 5))
print("sent")
"""


def test_queued_warnings_are_flushed_at_exit(webhook):
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, webhook.url], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sent"]
    assert [(b["limit_name"], b["fraction"]) for b in webhook.bodies] == [("tenant:acme/month", 0.8)]


@pytest.mark.slow
def test_a_stalled_webhook_does_not_hold_the_exit(webhook):
    webhook.stall()  # never answers while the process lives: the exit flush gives up after its bound
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, webhook.url], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with webhook._lock:
        assert webhook.log == [("received", 0.8)]  # the process ended while its post was unanswered


@pytest.mark.parametrize("config, message", [
    ({"webhook": "ftp://example.com/x"}, "http:// or https:// URL"),
    ({"webhook": "https://hooks.example.com/x", "format": "teams"}, "must be slack or json"),
    ({"webhook": "https://hooks.example.com/x", "retries": -1}, "retries=-1"),
    ({"webhook": "https://hooks.example.com/x", "backoff_s": "soon"}, "backoff_s='soon'"),
    ({"webhook": "https://hooks.example.com/x", "url": "x"}, "unknown key 'url'"),
    ("https://hooks.example.com/x", "expected a mapping"),
])
def test_notify_config_errors_name_the_field(config, message):
    with pytest.raises(ValueError, match=message):
        notify.parse_config(config)


def test_a_bad_notify_block_is_one_line_and_the_file_is_ignored(pipeline, client, server, tmp_path, monkeypatch,
                                                                 caplog):
    caplog.set_level(logging.WARNING, logger="tokentrail.budgets")
    write_budgets(tmp_path, monkeypatch, day_budget("hooks.slack.com/x"))
    assert "notify.webhook='hooks.slack.com/x': expected an http:// or https:// URL" in caplog.text
    assert budgets.notifier() is None and budgets.config().budgets == ()
    spend(client, server, 1)
    assert len(server.requests) == 1
