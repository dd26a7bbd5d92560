"""Budget warnings delivered to a webhook (Slack-compatible or generic JSON), off the request path.

In the budgets file (``TOKENTRAIL_BUDGETS``)::

    notify:
      webhook: https://hooks.slack.com/services/T000/B000/XXXX
      format: slack        # slack: {"text": "..."} | json (default): the fields of ``json_body``
      retries: 3           # attempts after the first one (default 3)
      backoff_s: 1         # the wait before the first retry, doubling per retry (at most 30 s)

``Notifier.send`` runs on the caller's thread when a warning is crossed: it appends to a bounded
queue and returns (O(1), no I/O). One daemon worker thread posts each notice with
``urllib.request``. A full queue drops its oldest notice (the newest crossing says the most).
Drops and deliveries that failed every attempt are counted on ``tokentrail.notify.failures`` by
``error.type``; the first failure of a webhook is logged, later ones only counted. At interpreter
exit the queue gets at most ``FLUSH_S`` seconds to drain.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping

from opentelemetry.instrumentation.utils import suppress_instrumentation

from tokentrail import telemetry
from tokentrail.semconv import attributes as attr

_log = logging.getLogger(__name__)

FORMATS = ("json", "slack")
QUEUE_SIZE = 256
TIMEOUT_S = 5.0
MAX_BACKOFF_S = 30.0
FLUSH_S = 2.0
QUEUE_FULL = "queue_full"  # error.type of a notice dropped from a full queue
_NANO = 1_000_000_000


@dataclass(frozen=True)
class Notice:
    """One budget warning: ``limit_name`` (``tenant:acme/month``) crossed ``fraction`` of its limit."""

    limit_name: str
    scope: str  # tenant | team
    owner: str
    window: str  # day | month
    period: str  # 2026-12 or 2026-12-01
    fraction: float
    spent_nano: int
    limit_nano: int
    plan: str | None = None  # a margin budget: the tenant's plan,
    plan_share: float | None = None  # the share of its revenue the limit is (0.3),
    revenue_nano: int | None = None  # and the revenue of the window
    unit: str = "USD"


def json_body(n: Notice) -> dict[str, Any]:
    """The generic body: amounts in USD and, exactly, in integer nano-USD."""
    body: dict[str, Any] = {
        "event": "tokentrail.budget.warning", "limit_name": n.limit_name, "scope": n.scope, "owner": n.owner,
        "window": n.window, "period": n.period, "fraction": n.fraction, "unit": n.unit,
        "spent": n.spent_nano / _NANO, "limit": n.limit_nano / _NANO,
        "spent_nano": n.spent_nano, "limit_nano": n.limit_nano,
    }
    if n.plan_share is not None:
        body.update(plan=n.plan, plan_share=n.plan_share, revenue=(n.revenue_nano or 0) / _NANO,
                    revenue_nano=n.revenue_nano)
    return body


def slack_text(n: Notice) -> str:
    limit = f"${n.limit_nano / _NANO:,.2f}"
    if n.plan_share is not None:
        limit += f" ({n.plan_share * 100:g}% of plan {n.plan}'s ${(n.revenue_nano or 0) / _NANO:,.2f} for this {n.window})"
    return (f"tokentrail: {n.scope} {n.owner} has used {n.fraction * 100:g}% of its {n.window} LLM budget "
            f"{n.limit_name} ({n.period}): ${n.spent_nano / _NANO:,.6f} of {limit}")


def slack_body(n: Notice) -> dict[str, Any]:
    """Slack's incoming-webhook body (also read by Mattermost, Rocket.Chat, Discord's /slack endpoint)."""
    return {"text": slack_text(n)}


@dataclass(frozen=True)
class NotifyConfig:
    webhook: str
    format: str = "json"
    retries: int = 3
    backoff_s: float = 1.0


def parse_config(data: Any) -> NotifyConfig:
    """The ``notify:`` mapping of the budgets file; raises ValueError naming the bad field."""
    if not isinstance(data, Mapping):
        raise ValueError("notify: expected a mapping with a 'webhook' URL")
    unknown = sorted(str(k) for k in data if k not in ("webhook", "format", "retries", "backoff_s"))
    if unknown:
        raise ValueError(f"notify: unknown key {unknown[0]!r} (expected webhook, format, retries, backoff_s)")
    url = data.get("webhook")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"notify.webhook={url!r}: expected an http:// or https:// URL")
    fmt = str(data.get("format", "json")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"notify.format={data.get('format')!r} must be slack or json")
    retries, backoff = data.get("retries", 3), data.get("backoff_s", 1.0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ValueError(f"notify.retries={retries!r} must be an integer from 0 to 10")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff <= MAX_BACKOFF_S:
        raise ValueError(f"notify.backoff_s={backoff!r} must be a number of seconds from 0 to {MAX_BACKOFF_S:g}")
    return NotifyConfig(url, fmt, retries, float(backoff))


class Notifier:
    """A webhook, its bounded queue and its one worker thread (started by the first ``send``)."""

    def __init__(self, cfg: NotifyConfig, *, capacity: int = QUEUE_SIZE, timeout_s: float | None = None) -> None:
        self.cfg, self.capacity = cfg, capacity
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self._queue: deque[Notice] = deque()
        self._cond = threading.Condition()
        self._pending = 0  # queued + being delivered
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged = False
        self._unreported_drops = 0
        self.delivered = self.failed = self.dropped = 0
        _live.add(self)

    @property
    def where(self) -> str:
        """The webhook without its path (a Slack URL's path is its secret)."""
        parts = urllib.parse.urlsplit(self.cfg.webhook)
        return f"{parts.scheme}://{parts.netloc}"

    def send(self, notice: Notice) -> None:
        """Queue ``notice`` for delivery; never blocks, never raises."""
        try:
            with self._cond:
                if self._closed.is_set():
                    return
                if len(self._queue) >= self.capacity:
                    self._queue.popleft()
                    self._pending -= 1
                    self.dropped += 1
                    self._unreported_drops += 1  # counted and logged by the worker: no I/O here
                self._queue.append(notice)
                self._pending += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="tokentrail-notify", daemon=True)
                    self._thread.start()
                self._cond.notify()
        except Exception:  # a notification must never break the call that crossed the warning
            _log.debug("tokentrail: queueing a budget notification failed", exc_info=True)

    def flush(self, timeout_s: float = FLUSH_S) -> bool:
        """Wait until every queued notice was delivered or given up, at most ``timeout_s``; True if so."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Stop at once: what is queued is dropped, a delivery under way ends with its attempt."""
        with self._cond:
            self._closed.set()
            self._pending -= len(self._queue)
            self._queue.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed.is_set():
                    self._cond.wait()
                if not self._queue:
                    return
                notice = self._queue.popleft()
                drops, self._unreported_drops = self._unreported_drops, 0
            if drops:
                self._failure(QUEUE_FULL, drops)
            try:
                error = self._deliver(notice)
            except Exception as exc:  # a bug in formatting: counted like a failed delivery
                error = type(exc).__name__
            with self._cond:
                if error is None:
                    self.delivered += 1
                else:
                    self.failed += 1
                self._pending -= 1
                self._cond.notify_all()
            if error is not None:
                self._failure(error)

    def _deliver(self, notice: Notice) -> str | None:
        """Post with retries; None when delivered, else the last attempt's error type."""
        body = json.dumps(slack_body(notice) if self.cfg.format == "slack" else json_body(notice)).encode()
        request = urllib.request.Request(self.cfg.webhook, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "tokentrail"})
        error = None
        for attempt in range(self.cfg.retries + 1):
            if attempt and self._closed.wait(min(MAX_BACKOFF_S, self.cfg.backoff_s * 2 ** (attempt - 1))):
                break
            try:
                with suppress_instrumentation(), urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    resp.read()
                return None
            except urllib.error.HTTPError as exc:
                error = str(exc.code)
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break  # the webhook refuses this body: asking again will not help
            except urllib.error.URLError as exc:
                error = type(exc.reason).__name__ if isinstance(exc.reason, BaseException) else "URLError"
            except Exception as exc:
                error = type(exc).__name__
        return error

    def _failure(self, error: str, count: int = 1) -> None:
        telemetry.notify_failures().add(count, {attr.ERROR_TYPE: error})
        if not self._logged:
            self._logged = True
            _log.warning("tokentrail: budget notification to %s not delivered (%s); further failures are "
                         "counted on tokentrail.notify.failures, not logged", self.where, error)


_live: "weakref.WeakSet[Notifier]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # a forked worker process (gunicorn, multiprocessing) has no worker thread and must not send
    # its parent's queue again: each notifier starts empty and starts its own thread when needed
    for notifier in list(_live):
        closed, notifier._closed = notifier._closed.is_set(), threading.Event()
        if closed:
            notifier._closed.set()
        notifier._cond = threading.Condition()
        notifier._queue.clear()
        notifier._pending = notifier._unreported_drops = 0
        notifier._thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    deadline = time.monotonic() + FLUSH_S
    for notifier in list(_live):
        notifier.flush(max(0.0, deadline - time.monotonic()))


__all__ = ["Notice", "NotifyConfig", "Notifier", "parse_config", "json_body", "slack_body", "slack_text"]
