"""Agent tasks: one span, one owner and one cost per unit of work, with its LLM calls numbered.

::

    with tokentrail.task("triage", budget_usd=0.50, max_calls=20) as t:
        ...   # every LLM call inside: tokentrail.task.name/id, tokentrail.task.call_index
    t.cost_usd, t.calls, t.outcome

How a task learns about its calls: the instrumentations run the pre-flight checks with the
LLM span current, where ``check`` (installed by ``tokentrail.breakers.install()``) applies the
task limits and admits the call into its task (numbering it and reserving its worst-case
cost), and call ``on_llm_call_end(span, attributes)`` once the call is priced, just before the
span ends. Calls made by other instrumentations still carry the task name/id (every span
does) but are not counted.

Retries and fallbacks: ``tokentrail.retry.attempt`` counts the tries of the same request
before this one: ``with tokentrail.retry(attempt):`` for application retries (e.g. an invalid
JSON answer asked again), detected automatically when a task repeats a call to the same model
right after an error, plus the SDK's own internal HTTP retries inside the call.
``tokentrail.fallback.from`` is set by ``with tokentrail.fallback(from_model):`` or
automatically when, right after an error, the task calls a different model. The explicit marks
live in the context and are stamped with the owner (``owner_span_attributes``), so LLM spans
outside any task carry them too; inside a task they also count as its retry/fallback cost.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tokentrail import identity, preflight, telemetry
from tokentrail.attribution import enter_identity, owner_span_attributes
from tokentrail.errors import CALLS, BudgetExceeded
from tokentrail.processor.pricing import PRICED, UNPRICED
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.scope import Scope
from tokentrail.semconv import attributes as attr
from tokentrail.state import register_reset

_log = logging.getLogger(__name__)

_TASK_KEY = otel_context.create_key("tokentrail-task")

NANO = 1_000_000_000
OK, ERROR, BUDGET_EXCEEDED = "ok", "error", "budget_exceeded"
INVOKE_AGENT = "invoke_agent"

# limit names (values of tokentrail.budget.exceeded)
BUDGET_USD = "budget_usd"
MAX_CALLS = "max_calls"
MAX_USD_PER_MINUTE = "max_usd_per_minute"

# One lock for every task's counters: updates are a few integer operations, and a nested
# task updates its ancestors in the same critical section.
_lock = threading.Lock()


# --------------------------------------------------------------------------------------------
# task state
# --------------------------------------------------------------------------------------------
class TaskState:
    """The running totals of one task run. Read them after the block: ``t.cost_usd``..."""

    def __init__(self, name: str, task_id: str, budget_usd: float | None, max_calls: int | None,
                 max_usd_per_minute: float | None, parent: "TaskState | None") -> None:
        self.name = name
        self.id = task_id
        self.budget_usd = budget_usd
        self.max_calls = max_calls
        self.max_usd_per_minute = max_usd_per_minute
        self.budget_nano = None if budget_usd is None else int(round(budget_usd * NANO))
        self.per_minute_nano = None if max_usd_per_minute is None else int(round(max_usd_per_minute * NANO))
        self.parent = parent
        self.calls = 0  # admitted LLM calls (call_index of the last one)
        self.finished = 0
        self.spent_nano = 0
        self.reserved_nano = 0  # worst-case estimates of calls in flight
        self.recent: deque[tuple[float, int]] = deque()  # (monotonic second, nano-USD) of the last minute
        self.recent_total = 0
        self.tokens = {"input": 0, "cache_read": 0, "cache_write": 0, "output": 0, "reasoning": 0}
        self.retries_nano = 0
        self.fallbacks_nano = 0
        self.unpriced = 0
        self.blocked: str | None = None  # the limit that stopped a call, if any
        self.outcome: str | None = None
        # for automatic retry/fallback detection
        self.last_model: str | None = None
        self.last_failed = False
        self.streak_model: str | None = None  # model of the first try of the current failing streak
        self.streak = 0

    @property
    def cost_usd(self) -> float:
        return self.spent_nano / NANO

    def chain(self) -> list["TaskState"]:
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    def minute_spend_nano(self, now: float) -> int:
        """Spend of the last 60 s (1-second buckets, so this is O(1) amortised and bounded)."""
        recent = self.recent
        while recent and now - recent[0][0] > 60.0:
            self.recent_total -= recent.popleft()[1]
        return self.recent_total

    def add_recent(self, now: float, nano: int) -> None:
        second = float(int(now))
        recent = self.recent
        if recent and recent[-1][0] == second:
            recent[-1] = (second, recent[-1][1] + nano)
        else:
            recent.append((second, nano))
        self.recent_total += nano

    def __repr__(self) -> str:
        return (f"<task {self.name!r} id={self.id} calls={self.calls} cost_usd={self.cost_usd:.6f} "
                f"outcome={self.outcome}>")


def current_task(ctx: otel_context.Context | None = None) -> TaskState | None:
    return otel_context.get_value(_TASK_KEY, ctx)


def mark_blocked(state: TaskState | None, limit_name: str) -> None:
    """A breaker stopped a call of ``state``: the task and its ancestors end ``budget_exceeded``."""
    if state is None:
        return
    with _lock:
        for node in state.chain():
            node.blocked = node.blocked or limit_name


class task(Scope):
    """A unit of work (an agent run, a request) as one span with its cost and limits.

    Context manager and decorator (sync and async). ``with tokentrail.task("triage") as t``
    gives the run's ``TaskState`` (not the task object: one task object, e.g. a decorator, is
    entered once per run, each run with its own totals). ``agent=True`` makes it a GenAI
    ``invoke_agent`` span (``gen_ai.agent.name`` = name). Limits are checked before each LLM
    call inside; a call that would cross one raises ``tokentrail.BudgetExceeded`` unsent.
    """

    def __init__(self, name: str, id: str | None = None, *, budget_usd: float | None = None,
                 max_calls: int | None = None, max_usd_per_minute: float | None = None,
                 agent: bool = False) -> None:
        self.name = identity.validate_value("name", name, api="tokentrail.task")
        self.id = None if id is None else identity.validate_value("id", id, api="tokentrail.task")
        for label, limit in ((BUDGET_USD, budget_usd), (MAX_CALLS, max_calls),
                             (MAX_USD_PER_MINUTE, max_usd_per_minute)):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                      or (isinstance(limit, float) and not math.isfinite(limit)) or limit < 0):
                raise ValueError(f"tokentrail.task: {label}={limit!r} must be a finite non-negative number")
        self.budget_usd = budget_usd
        self.max_calls = max_calls
        self.max_usd_per_minute = max_usd_per_minute
        self.agent = agent

    def _fresh(self) -> "task":
        return task(self.name, self.id, budget_usd=self.budget_usd, max_calls=self.max_calls,
                    max_usd_per_minute=self.max_usd_per_minute, agent=self.agent)

    def __enter__(self) -> TaskState:
        state = TaskState(self.name, self.id or uuid.uuid4().hex, self.budget_usd, self.max_calls,
                          self.max_usd_per_minute, current_task())
        identity_token = _enter_task_identity(state)
        span = None
        try:
            attributes: dict[str, Any] = owner_span_attributes()
            if self.agent:
                attributes[attr.GEN_AI_OPERATION_NAME] = INVOKE_AGENT
                attributes[attr.GEN_AI_AGENT_NAME] = state.name
                span_name = f"{INVOKE_AGENT} {state.name}"
            else:
                span_name = f"task {state.name}"
            if self.budget_usd is not None:
                attributes[attr.TOKENTRAIL_TASK_BUDGET_USD] = float(self.budget_usd)
            span = telemetry.tracer().start_span(span_name, kind=SpanKind.INTERNAL, attributes=attributes)
            ctx = trace.set_span_in_context(span)
        except Exception:  # never hurt the app: run the task without its span
            _log.debug("tokentrail: could not start the task span", exc_info=True)
            ctx = otel_context.get_current()
        token = otel_context.attach(otel_context.set_value(_TASK_KEY, state, ctx))
        self._push((span, token, identity_token, state))
        return state

    def _apply(self, entered: Any) -> tuple:
        # only ever re-applied (see Scope): the same run, span and state
        span, _, _, state = entered
        identity_token = _enter_task_identity(state)
        ctx = trace.set_span_in_context(span) if span is not None else otel_context.get_current()
        return span, otel_context.attach(otel_context.set_value(_TASK_KEY, state, ctx)), identity_token, state

    def _undo(self, entered: Any, exc: BaseException | None) -> None:
        span, token, identity_token, state = entered
        try:
            otel_context.detach(token)
        finally:
            otel_context.detach(identity_token)
        try:
            _finish(state, span, exc)
        except Exception:
            _log.debug("tokentrail: could not finish the task span", exc_info=True)


def _enter_task_identity(state: TaskState) -> object:
    return enter_identity({attr.TOKENTRAIL_TASK_NAME: state.name, attr.TOKENTRAIL_TASK_ID: state.id})


def _finish(state: TaskState, span: Any, exc: BaseException | None) -> None:
    if isinstance(exc, BudgetExceeded) or state.blocked:
        state.outcome = BUDGET_EXCEEDED
    elif exc is not None:
        state.outcome = ERROR
    else:
        state.outcome = OK
    with _lock:
        summary = {
            attr.TOKENTRAIL_TASK_OUTCOME: state.outcome,
            attr.TOKENTRAIL_TASK_CALLS: state.calls,
            attr.TOKENTRAIL_TASK_COST_TOTAL: state.spent_nano / NANO,
            attr.TOKENTRAIL_TASK_COST_NANO_USD: state.spent_nano,
            attr.TOKENTRAIL_TASK_COST_RETRIES: state.retries_nano / NANO,
            attr.TOKENTRAIL_TASK_COST_FALLBACKS: state.fallbacks_nano / NANO,
            attr.TOKENTRAIL_TASK_CALLS_UNPRICED: state.unpriced,
            attr.TOKENTRAIL_TASK_TOKENS_INPUT: state.tokens["input"],
            attr.TOKENTRAIL_TASK_TOKENS_CACHE_READ: state.tokens["cache_read"],
            attr.TOKENTRAIL_TASK_TOKENS_CACHE_WRITE: state.tokens["cache_write"],
            attr.TOKENTRAIL_TASK_TOKENS_OUTPUT: state.tokens["output"],
            attr.TOKENTRAIL_TASK_TOKENS_REASONING: state.tokens["reasoning"],
        }
        if state.blocked:
            summary[attr.TOKENTRAIL_BUDGET_EXCEEDED] = state.blocked
    owner = {}
    if span is not None:
        owner = {k: v for k, v in (getattr(span, "attributes", None) or {}).items()
                 if k in (attr.TOKENTRAIL_TENANT, attr.TOKENTRAIL_FEATURE, attr.TOKENTRAIL_TEAM)}
        span.set_attributes(summary)
        if exc is not None:
            span.set_attribute(attr.ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        span.end()
    point = {attr.TOKENTRAIL_TASK_NAME: state.name, attr.TOKENTRAIL_TASK_OUTCOME: state.outcome, **owner}
    telemetry.task_cost().record(state.spent_nano / NANO, point)
    telemetry.task_iterations().record(state.calls, point)


# --------------------------------------------------------------------------------------------
# retries and fallbacks
# --------------------------------------------------------------------------------------------
class retry(Scope):
    """Mark the LLM calls inside as attempt ``attempt`` of the same request (0 = first try).

    ``with tokentrail.retry(n) as r`` gives the scope itself.
    """

    __slots__ = ("attempt",)

    def __init__(self, attempt: int) -> None:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"tokentrail.retry: attempt={attempt!r} must be an int >= 0")
        self.attempt = attempt

    def _fresh(self) -> "retry":
        return retry(self.attempt)

    def __enter__(self) -> "retry":
        self._push(self._apply(None))
        return self

    def _apply(self, entry: Any) -> object:
        return otel_context.attach(identity.with_retry_attempt(self.attempt))

    def _undo(self, token: Any, exc: BaseException | None) -> None:
        otel_context.detach(token)


class fallback(Scope):
    """Mark the LLM calls inside as a fallback from ``from_model`` (the model asked for first).

    ``with tokentrail.fallback(model) as f`` gives the scope itself.
    """

    __slots__ = ("from_model",)

    def __init__(self, from_model: str) -> None:
        if not isinstance(from_model, str) or not from_model:
            raise ValueError(f"tokentrail.fallback: from_model={from_model!r} must be a model name")
        self.from_model = from_model

    def _fresh(self) -> "fallback":
        return fallback(self.from_model)

    def __enter__(self) -> "fallback":
        self._push(self._apply(None))
        return self

    def _apply(self, entry: Any) -> object:
        return otel_context.attach(identity.with_fallback_from(self.from_model))

    def _undo(self, token: Any, exc: BaseException | None) -> None:
        otel_context.detach(token)


# --------------------------------------------------------------------------------------------
# the LLM call lifecycle: the pre-flight check (limits, admission) and the priced end
# --------------------------------------------------------------------------------------------
class _Admitted:
    __slots__ = ("span", "chain", "estimate_nano", "retry", "fallback_from", "model", "sdk_retries")

    def __init__(self, span, chain, estimate_nano, retry_attempt, fallback_from, model):
        self.span = span
        self.chain = chain
        self.estimate_nano = estimate_nano
        self.retry = retry_attempt
        self.fallback_from = fallback_from
        self.model = model
        self.sdk_retries = 0


# Calls admitted and not yet ended, by span id (an SDK may make a non-recording span carrying
# ours current while it sends): popped at the call's end, which every admitted call reaches
# (genai_span ends a call exactly once, stopped ones too).
_admitted: dict[int, _Admitted] = {}
register_reset(_admitted.clear)


def _call_marks(state: TaskState, model: str) -> tuple[int | None, str | None]:
    """(retry attempt, fallback-from model) for a call about to be made in the current context."""
    ctx = otel_context.get_current()
    attempt = identity.retry_attempt(ctx)
    from_model = identity.fallback_from(ctx)
    if state.last_failed and attempt is None and from_model is None:
        if model and model == state.last_model:
            attempt = state.streak  # the same request again right after an error: a retry
        elif model and state.streak_model and model != state.streak_model:
            from_model = state.streak_model  # a different model right after an error: a fallback
    return attempt, from_model


def _crossed_limit(state: TaskState, estimate: int, now: float) -> BudgetExceeded | None:
    """The first limit of ``state`` or an ancestor this call could cross (under ``_lock``)."""
    for node in state.chain():
        if node.max_calls is not None and node.calls + 1 > node.max_calls:
            return BudgetExceeded(MAX_CALLS, limit=node.max_calls, spent=node.calls, unit=CALLS, task=node.name)
        if node.budget_nano is not None and node.spent_nano + node.reserved_nano + estimate > node.budget_nano:
            in_flight = f", {node.reserved_nano / NANO:.6f} USD in flight" if node.reserved_nano else ""
            return BudgetExceeded(BUDGET_USD, limit=node.budget_usd, spent=node.spent_nano / NANO, task=node.name,
                                  estimate_usd=estimate / NANO,
                                  detail=f"this call could cost up to {estimate / NANO:.6f} USD{in_flight}")
        if node.per_minute_nano is not None:
            minute = node.minute_spend_nano(now)
            if minute + node.reserved_nano + estimate > node.per_minute_nano:
                return BudgetExceeded(MAX_USD_PER_MINUTE, limit=node.max_usd_per_minute, spent=minute / NANO,
                                      task=node.name, estimate_usd=estimate / NANO,
                                      detail=f"this call could cost up to {estimate / NANO:.6f} USD")
    return None


def in_task() -> bool:
    """Whether ``check`` has a task to check a call against (one context lookup)."""
    return otel_context.get_current().get(_TASK_KEY) is not None  # get_value, one call less: every call asks


def check(planned: preflight.PlannedCall) -> None:
    """Pre-flight: raise BudgetExceeded if the call would cross a limit of its task (or of an
    enclosing one); otherwise admit it into the task. Nothing to do outside a task."""
    state = current_task()
    if state is None:
        return
    span = trace.get_current_span()
    estimate = preflight.worst_case_nano(planned) or 0
    attempt, from_model = _call_marks(state, planned.model)
    chain = state.chain()
    with _lock:  # checked and reserved at once: concurrent calls of a task cannot pass together
        blocked = _crossed_limit(state, estimate, time.monotonic())
        for node in chain:
            if blocked is not None:
                node.blocked = node.blocked or blocked.limit_name
            else:
                node.calls += 1
                node.reserved_nano += estimate
        index = state.calls
    if blocked is not None:
        preflight.stop(span, blocked)
    try:
        _admitted[_key(span)] = _Admitted(span, chain, estimate, attempt, from_model, planned.model)
        marks: dict[str, Any] = {attr.TOKENTRAIL_TASK_CALL_INDEX: index}
        if attempt:
            marks[attr.TOKENTRAIL_RETRY_ATTEMPT] = attempt
        if from_model:
            marks[attr.TOKENTRAIL_FALLBACK_FROM] = from_model
        span.set_attributes(marks)
    except Exception:
        _log.debug("tokentrail: could not mark the admitted call", exc_info=True)


class CallStandIn(trace.NonRecordingSpan):
    """A non-recording span carrying an LLM call's context, for an SDK's own telemetry (so the
    SDK still propagates it on the wire); ``note_sdk_retry`` finds the call's span through it."""

    def __init__(self, call_span: Any) -> None:
        super().__init__(call_span.get_span_context())
        self.call_span = call_span
        self.trace_headers: dict[str, str] | None = None  # an SDK's propagation headers, worked out once


def note_sdk_retry(retries_taken: int) -> None:
    """Called by an SDK hook as it builds the request of HTTP try ``retries_taken`` + 1 inside
    the current LLM call: the span's retry.attempt also counts the SDK's failed tries."""
    if not retries_taken:
        return
    try:
        span = trace.get_current_span()
        if isinstance(span, CallStandIn):
            span = span.call_span
        entry = _admitted.get(_key(span))
        if entry is not None:
            span = entry.span
        if not span.is_recording():
            return
        if entry is not None:
            entry.sdk_retries = retries_taken
            app_attempt = entry.retry or 0
        else:  # outside a task: the application's own retry() mark, if any
            app_attempt = identity.retry_attempt() or 0
        span.set_attribute(attr.TOKENTRAIL_RETRY_ATTEMPT, app_attempt + retries_taken)
    except Exception:
        _log.debug("tokentrail: could not note an SDK retry", exc_info=True)


def stainless_retry_method(build_request: Callable[..., Any]) -> Callable[..., Any]:
    """The replacement of ``BaseClient._build_request(options, retries_taken=n)`` of the
    Stainless-generated SDKs (openai, anthropic): called once per HTTP try, so the LLM span
    stays one per user call and counts the SDK's internal retries in tokentrail.retry.attempt.

    A plain method, not a wrapt wrapper: it runs on every call and acts only on a retry."""

    @functools.wraps(build_request)
    def _build_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        retries_taken = kwargs.get("retries_taken", 0)
        if isinstance(retries_taken, int) and retries_taken > 0:
            note_sdk_retry(retries_taken)
        return build_request(self, *args, **kwargs)

    return _build_request


def on_llm_call_end(span: Any, attributes: Mapping[str, Any]) -> None:
    """The priced end of one LLM call (called by the instrumentation before ``span.end()``):
    task accounting, then the end listeners (tenant/team budgets). Never raises."""
    nano = 0
    try:
        nano = _cost_nano(attributes)
        entry = _admitted.pop(_key(span), None) if _admitted else None  # none outside tasks
        if entry is not None:
            _account(entry, attributes, nano)
    except Exception:
        _log.debug("tokentrail: task accounting of an LLM call failed", exc_info=True)
    preflight.call_ended(span, attributes, nano)


def _key(span: Any) -> int:
    return span.get_span_context().span_id


def _cost_nano(attributes: Mapping[str, Any]) -> int:
    if attributes.get(attr.TOKENTRAIL_COST_STATUS) != PRICED:
        return 0
    raw = attributes.get(attr.TOKENTRAIL_COST_NANO_USD)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    amount = attributes.get(attr.GEN_AI_USAGE_COST_AMOUNT)
    return int(round(amount * NANO)) if isinstance(amount, (int, float)) else 0


def _usage(attributes: Mapping[str, Any]) -> Usage | None:
    try:
        return Usage.from_attributes(attributes)
    except InvalidUsage:
        return None


def _account(entry: _Admitted, attributes: Mapping[str, Any], nano: int) -> None:
    usage = _usage(attributes)
    unpriced = attributes.get(attr.TOKENTRAIL_COST_STATUS) == UNPRICED
    failed = attributes.get(attr.ERROR_TYPE) is not None
    now = time.monotonic()
    with _lock:
        for node in entry.chain:
            node.reserved_nano -= entry.estimate_nano
            node.finished += 1
            node.spent_nano += nano
            if nano:
                node.add_recent(now, nano)
            if entry.retry or entry.sdk_retries:
                node.retries_nano += nano
            if entry.fallback_from:
                node.fallbacks_nano += nano
            if unpriced:
                node.unpriced += 1
            if usage is not None:
                t = node.tokens
                t["input"] += usage.uncached_input_tokens
                t["cache_read"] += usage.cache_read_tokens
                t["cache_write"] += usage.cache_write_tokens
                t["output"] += usage.output_tokens
                t["reasoning"] += usage.reasoning_tokens
        owner = entry.chain[0]
        if failed:
            if not owner.last_failed:
                owner.streak_model = entry.fallback_from or entry.model
                owner.streak = 0
            owner.streak += 1
        else:
            owner.streak, owner.streak_model = 0, None
        owner.last_failed = failed
        owner.last_model = entry.model


__all__ = ["task", "retry", "fallback", "TaskState", "current_task"]
