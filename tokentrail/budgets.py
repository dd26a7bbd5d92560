"""Circuit breakers: stop an LLM call *before* it is sent when it would cross a limit.

Registered on ``tokentrail.preflight``; every instrumentation runs the check with the LLM
span current, before sending. Two kinds of limits:

* **task limits** (``tokentrail.task(..., budget_usd=, max_calls=, max_usd_per_minute=)``):
  spend so far + the worst-case cost of the calls in flight + the worst-case cost of this call
  (estimated prompt tokens x input rate + ``max_tokens`` x output rate; without ``max_tokens``,
  ``TOKENTRAIL_BREAKER_DEFAULT_OUTPUT_TOKENS``, default 16384) must stay within the budget, so a
  task never spends more than its budget while the estimates are upper bounds.
* **tenant/team budgets** over a window (day, month), from the YAML file at
  ``TOKENTRAIL_BUDGETS``::

      store: memory            # memory (default) | ledger | redis://host:port/db
      failure: open            # open (default: allow, count the failure) | closed (block)
      warn: [0.5, 0.8]         # default fractions that log, add a span event and count a metric
      budgets:
        - tenant: acme
          window: day
          limit_usd: 25
          enforce: true        # block at 100% (default: warn only)
        - team: support
          window: month
          limit_usd: 2000
          warn: [0.5, 0.9]

  Spend is counted by a ``SpendStore``: in-process (one process), the SQLite ledger as a
  baseline plus this process's calls (one machine), or a shared Redis counter (a fleet).

A stopped call raises ``BudgetExceeded`` (which limit, spent, the limit, the task); its span
gets ``tokentrail.budget.exceeded`` and ``error.type``, the task's outcome becomes
``budget_exceeded``, and ``tokentrail.budget.blocked`` counts it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from tokentrail import preflight
from tokentrail.errors import BudgetExceeded
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names

_log = logging.getLogger(__name__)

ENV_BUDGETS = "TOKENTRAIL_BUDGETS"
ENV_DEFAULT_OUTPUT = "TOKENTRAIL_BREAKER_DEFAULT_OUTPUT_TOKENS"
DEFAULT_OUTPUT_TOKENS = 16384
DEFAULT_WARN = (0.5, 0.8)
NANO = 1_000_000_000

# limit names (values of tokentrail.budget.exceeded)
BUDGET_USD = "budget_usd"
MAX_CALLS = "max_calls"
MAX_USD_PER_MINUTE = "max_usd_per_minute"

WARNING_EVENT = "tokentrail.budget.warning"
_SCOPES = {"tenant": attr.TOKENTRAIL_TENANT, "team": attr.TOKENTRAIL_TEAM}
_WINDOWS = ("day", "month")


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    scope: str  # tenant | team
    owner: str
    window: str  # day | month
    limit_usd: float
    enforce: bool = False
    warn: tuple[float, ...] = DEFAULT_WARN

    @property
    def limit_nano(self) -> int:
        return int(round(self.limit_usd * NANO))

    @property
    def label(self) -> str:
        return f"{self.scope}:{self.owner}/{self.window}"

    def point_attributes(self) -> dict[str, Any]:
        return {_SCOPES[self.scope]: self.owner, attr.TOKENTRAIL_BUDGET_WINDOW: self.window}


@dataclass(frozen=True)
class BudgetConfig:
    budgets: tuple[Budget, ...] = ()
    store: str = "memory"
    fail_closed: bool = False
    by_owner: Mapping[tuple[str, str], tuple[Budget, ...]] = field(default_factory=dict)


def parse_config(data: Any) -> BudgetConfig:
    """Validate the YAML document; raises ValueError naming the bad entry."""
    if data is None:
        return BudgetConfig()
    if not isinstance(data, Mapping):
        raise ValueError("budgets file: expected a mapping with a 'budgets' list")
    warn_default = _fractions(data.get("warn", DEFAULT_WARN), "warn")
    failure = str(data.get("failure", "open")).lower()
    if failure not in ("open", "closed"):
        raise ValueError(f"budgets file: failure={failure!r} must be open or closed")
    store = str(data.get("store", "memory"))
    budgets = []
    for i, entry in enumerate(data.get("budgets") or ()):
        if not isinstance(entry, Mapping):
            raise ValueError(f"budgets[{i}]: expected a mapping")
        scopes = [s for s in _SCOPES if s in entry]
        if len(scopes) != 1:
            raise ValueError(f"budgets[{i}]: give exactly one of tenant: or team:")
        window = str(entry.get("window", "month"))
        if window not in _WINDOWS:
            raise ValueError(f"budgets[{i}]: window={window!r} must be day or month")
        limit = entry.get("limit_usd")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            raise ValueError(f"budgets[{i}]: limit_usd={limit!r} must be a positive number")
        warn = _fractions(entry["warn"], f"budgets[{i}].warn") if "warn" in entry else warn_default
        budgets.append(Budget(scopes[0], str(entry[scopes[0]]), window, float(limit),
                              bool(entry.get("enforce", False)), warn))
    by_owner: dict[tuple[str, str], list[Budget]] = {}
    for b in budgets:
        by_owner.setdefault((b.scope, b.owner), []).append(b)
    return BudgetConfig(tuple(budgets), store, failure == "closed",
                        {k: tuple(v) for k, v in by_owner.items()})


def _fractions(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in value):
        raise ValueError(f"{where}: expected a list of fractions in (0, 1]")
    return tuple(sorted(float(f) for f in value))


_config_lock = threading.Lock()
_loaded: dict[str, Any] = {"path": None, "config": BudgetConfig(), "store": None}


def config() -> BudgetConfig:
    """The budgets of ``TOKENTRAIL_BUDGETS`` (loaded once per path; a bad file is logged and
    ignored, never fatal)."""
    path = os.environ.get(ENV_BUDGETS) or None
    if path == _loaded["path"]:
        return _loaded["config"]
    with _config_lock:
        if path != _loaded["path"]:
            _load(path)
    return _loaded["config"]


def _load(path: str | None) -> None:
    cfg = BudgetConfig()
    if path:
        try:
            import yaml

            with open(path, encoding="utf-8") as fh:
                cfg = parse_config(yaml.safe_load(fh))
        except Exception as exc:
            _log.warning("tokentrail: %s=%s ignored: %s", ENV_BUDGETS, path, exc)
    _loaded["store"] = make_store(cfg.store) if cfg.budgets else None
    _loaded["config"] = cfg
    _loaded["path"] = path


def reload() -> BudgetConfig:
    """Forget the loaded budgets and their in-process counters (re-read on next use)."""
    with _config_lock:
        _loaded["path"] = object()  # never equal to a path: forces a reload
    _worst_case.cache_clear()
    return config()


def store() -> "SpendStore | None":
    config()
    return _loaded["store"]


# --------------------------------------------------------------------------------------------
# spend stores
# --------------------------------------------------------------------------------------------
class SpendStore(Protocol):
    """Spend per budget window. ``key`` identifies owner + window + period; amounts in nano-USD."""

    def get(self, key: str, budget: Budget, period_start_ns: int) -> int: ...

    def add(self, key: str, budget: Budget, period_start_ns: int, nano: int) -> int: ...


class MemoryStore:
    """One process: a dict of counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}

    def get(self, key: str, budget: Budget, period_start_ns: int) -> int:
        return self._totals.get(key, 0)

    def add(self, key: str, budget: Budget, period_start_ns: int, nano: int) -> int:
        with self._lock:
            total = self._totals.get(key, 0) + nano
            self._totals[key] = total
            return total


class LedgerStore(MemoryStore):
    """One machine: the ledger's spend in the window (read once per window, as a baseline)
    plus this process's calls since. The ledger is written by the exporter, a batch behind."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.path = path
        self._baseline: dict[str, int] = {}

    def _base(self, key: str, budget: Budget, period_start_ns: int) -> int:
        found = self._baseline.get(key)
        if found is None:
            import sqlite3

            from tokentrail.ledger import default_path

            path = self.path or default_path()
            found = 0
            if os.path.exists(path):
                column = {"tenant": "tenant", "team": "team"}[budget.scope]
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as db:
                    row = db.execute(
                        f"SELECT COALESCE(SUM(cost_nano), 0) FROM spans WHERE llm = 1 AND {column} = ?"
                        " AND start_ns >= ?", (budget.owner, period_start_ns)).fetchone()
                found = int(row[0] or 0)
            self._baseline[key] = found
        return found

    def get(self, key: str, budget: Budget, period_start_ns: int) -> int:
        return self._base(key, budget, period_start_ns) + super().get(key, budget, period_start_ns)

    def add(self, key: str, budget: Budget, period_start_ns: int, nano: int) -> int:
        return self._base(key, budget, period_start_ns) + super().add(key, budget, period_start_ns, nano)


class RedisStore:
    """A fleet: one shared counter per owner and window in Redis (INCRBY, expires after the window)."""

    def __init__(self, url: str, *, timeout_s: float = 0.25) -> None:
        import redis  # optional dependency: pip install redis

        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def get(self, key: str, budget: Budget, period_start_ns: int) -> int:
        value = self.client.get(key)
        return int(value) if value is not None else 0

    def add(self, key: str, budget: Budget, period_start_ns: int, nano: int) -> int:
        pipe = self.client.pipeline()
        pipe.incrby(key, nano)
        pipe.expire(key, 40 * 86400 if budget.window == "month" else 2 * 86400)
        total, _ = pipe.execute()
        return int(total)


def make_store(spec: str) -> SpendStore:
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(spec)
    if spec == "ledger" or spec.startswith("ledger:"):
        return LedgerStore(spec.partition(":")[2] or None)
    if spec != "memory":
        _log.warning("tokentrail: budget store %r unknown; counting in memory", spec)
    return MemoryStore()


def period_start(window: str, now: _dt.datetime | None = None) -> tuple[str, int]:
    """(label, start epoch ns) of the current UTC day or month (cached for the current day)."""
    if now is None:
        day = int(time.time() // 86400)
        cached = _periods.get(window)
        if cached is not None and cached[0] == day:
            return cached[1]
        result = period_start(window, _dt.datetime.fromtimestamp(day * 86400, _dt.timezone.utc))
        _periods[window] = (day, result)
        return result
    if window == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m-%d")
    else:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m")
    return label, int(start.timestamp()) * NANO


_periods: dict[str, tuple[int, tuple[str, int]]] = {}


def store_key(budget: Budget, label: str) -> str:
    return f"tokentrail:budget:{budget.scope}:{budget.owner}:{budget.window}:{label}"


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def _instrument(kind: str, name: str, unit: str, description: str) -> Any:
    from tokentrail.tasks import instrument

    return instrument(kind, name, unit, description)


def _store_failed(exc: BaseException) -> None:
    _log.warning("tokentrail: budget store failed (%s): %r", "fail-closed" if config().fail_closed else "fail-open",
                 exc)
    _instrument("counter", names.TOKENTRAIL_BUDGET_STORE_ERRORS, "{error}", "Budget store failures").add(1)


_gauges_for: dict[int, Any] = {}


def ensure_gauges() -> None:
    """Register the budget gauges (limit and spent, by owner and window) on the meter provider."""
    from tokentrail.tasks import _providers

    explicit = _providers["meter"]
    key = id(explicit) if explicit is not None else 0
    if key in _gauges_for and _gauges_for[key] is explicit:
        return
    _gauges_for[key] = explicit
    from opentelemetry import metrics as metrics_api

    meter = metrics_api.get_meter("tokentrail", meter_provider=explicit or metrics_api.get_meter_provider())
    meter.create_observable_gauge(names.TOKENTRAIL_BUDGET_LIMIT, callbacks=[_observe_limits], unit="USD",
                                  description="Configured tenant/team budget")
    meter.create_observable_gauge(names.TOKENTRAIL_BUDGET_SPENT, callbacks=[_observe_spent], unit="USD",
                                  description="Spend counted against a budget in its current window")


def _observe_limits(options: CallbackOptions) -> list[Observation]:
    return [Observation(b.limit_usd, b.point_attributes()) for b in config().budgets]


def _observe_spent(options: CallbackOptions) -> list[Observation]:
    out = []
    spend_store = store()
    if spend_store is None:
        return out
    for b in config().budgets:
        label, start = period_start(b.window)
        try:
            out.append(Observation(spend_store.get(store_key(b, label), b, start) / NANO, b.point_attributes()))
        except Exception as exc:
            _store_failed(exc)
    return out


# --------------------------------------------------------------------------------------------
# the pre-flight check
# --------------------------------------------------------------------------------------------
def default_output_tokens() -> int:
    try:
        return max(1, int(os.environ.get(ENV_DEFAULT_OUTPUT, DEFAULT_OUTPUT_TOKENS)))
    except ValueError:
        return DEFAULT_OUTPUT_TOKENS


def worst_case_nano(planned: preflight.PlannedCall) -> int | None:
    """The most this call can cost (nano-USD), or None when its model is not on the rate card."""
    if not planned.model:
        return None
    if planned.operation == "embeddings":
        output = 0
    else:
        output = planned.max_output_tokens if planned.max_output_tokens else default_output_tokens()
    return _worst_case(planned.model, planned.provider, planned.service_tier,
                       max(0, planned.estimated_input_tokens), output)


@functools.lru_cache(maxsize=4096)
def _worst_case(model: str, provider: str, service_tier: str | None, input_tokens: int,
                output_tokens: int) -> int | None:
    # memoised: an agent loop repeats the same model and limits; prices only change with a reload
    from tokentrail.processor.pricing import PRICED, quote
    from tokentrail.processor.usage import Usage

    q = quote(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens), provider=provider,
              service_tier=service_tier)
    return q.total_nano_usd if q.status == PRICED else None


def check(planned: preflight.PlannedCall) -> None:
    """Pre-flight: raise BudgetExceeded if this call would cross a limit; otherwise admit it."""
    from tokentrail import tasks

    state = tasks.current_task()
    cfg = config()
    if state is None and not cfg.budgets:
        return  # the common case costs one context lookup and one env lookup
    span = trace.get_current_span()
    try:
        estimate = worst_case_nano(planned)
    except Exception:
        _log.debug("tokentrail: worst-case estimate failed", exc_info=True)
        estimate = None
    if cfg.budgets:
        _check_owner_budgets(cfg, span, estimate, state)
    if state is None:
        return
    attempt, from_model = tasks.call_marks(state, planned.model)
    est = estimate or 0
    import time as _time

    now = _time.monotonic()
    with tasks._lock:
        for node in state.chain():
            if node.max_calls is not None and node.calls + 1 > node.max_calls:
                blocked = BudgetExceeded(MAX_CALLS, spent=node.calls, limit_value=node.max_calls, task=node.name)
                break
            committed = node.spent_nano + node.reserved_nano
            if node.budget_nano is not None and committed + est > node.budget_nano:
                blocked = BudgetExceeded(
                    BUDGET_USD, spent=node.spent_nano / NANO, limit_value=node.budget_usd, task=node.name,
                    estimate_usd=est / NANO,
                    detail=f"this call could cost up to {est / NANO:.6f} USD"
                           + (f", {node.reserved_nano / NANO:.6f} USD in flight" if node.reserved_nano else ""))
                break
            if node.per_minute_nano is not None and (
                    node.minute_spend_nano(now) + node.reserved_nano + est > node.per_minute_nano):
                blocked = BudgetExceeded(
                    MAX_USD_PER_MINUTE, spent=node.minute_spend_nano(now) / NANO,
                    limit_value=node.max_usd_per_minute, task=node.name, estimate_usd=est / NANO,
                    detail=f"this call could cost up to {est / NANO:.6f} USD")
                break
        else:
            blocked = None
        if blocked is not None:
            for node in state.chain():
                node.blocked = node.blocked or blocked.limit
    if blocked is not None:
        _block(span, blocked)
    tasks.admit(span, state, est, planned.model, attempt, from_model)


def _block(span: Any, exc: BudgetExceeded) -> None:
    try:
        span.set_attribute(attr.TOKENTRAIL_BUDGET_EXCEEDED, exc.limit)
        _instrument("counter", names.TOKENTRAIL_BUDGET_BLOCKED, "{call}",
                    "LLM calls stopped before sending by a breaker").add(1, {attr.TOKENTRAIL_BUDGET_EXCEEDED: exc.limit})
        _log.warning("tokentrail: %s", exc)
    except Exception:
        _log.debug("tokentrail: recording a blocked call failed", exc_info=True)
    raise exc


def _owner_of(attributes: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(scope, attributes[name]) for scope, name in _SCOPES.items() if attributes.get(name)]


def _check_owner_budgets(cfg: BudgetConfig, span: Any, estimate: int | None, state: Any) -> None:
    from tokentrail.attribution import owner_span_attributes

    owner = owner_span_attributes()
    spend_store = _loaded["store"]
    ensure_gauges()
    for key in _owner_of(owner):
        for budget in cfg.by_owner.get(key, ()):
            if not budget.enforce:
                continue
            label, start = period_start(budget.window)
            try:
                spent = spend_store.get(store_key(budget, label), budget, start)
            except Exception as exc:
                _store_failed(exc)
                if cfg.fail_closed:
                    _mark_task(state, budget.label)
                    _block(span, BudgetExceeded(budget.label, spent=0.0, limit_value=budget.limit_usd,
                                                task=getattr(state, "name", None),
                                                detail="the shared budget counter is unavailable (fail-closed)"))
                continue
            if spent + (estimate or 0) > budget.limit_nano:
                _mark_task(state, budget.label)
                _block(span, BudgetExceeded(budget.label, spent=spent / NANO, limit_value=budget.limit_usd,
                                            task=getattr(state, "name", None), estimate_usd=(estimate or 0) / NANO,
                                            detail=f"this call could cost up to {(estimate or 0) / NANO:.6f} USD"))


def _mark_task(state: Any, limit: str) -> None:
    if state is None:
        return
    from tokentrail import tasks

    with tasks._lock:
        for node in state.chain():
            node.blocked = node.blocked or limit


def record_spend(span: Any, attributes: Mapping[str, Any], nano: int) -> None:
    """After a priced call: add its cost to its owner's budget windows; warn on crossings."""
    cfg = config()
    if not cfg.budgets or nano <= 0:
        return
    spend_store = _loaded["store"]
    ensure_gauges()
    for key in _owner_of(attributes):
        for budget in cfg.by_owner.get(key, ()):
            label, start = period_start(budget.window)
            try:
                total = spend_store.add(store_key(budget, label), budget, start, nano)
            except Exception as exc:
                _store_failed(exc)
                continue
            before, limit = total - nano, budget.limit_nano
            for fraction in (*budget.warn, 1.0):
                threshold = fraction * limit
                if before < threshold <= total:
                    _warn(span, budget, fraction, total)


def _warn(span: Any, budget: Budget, fraction: float, total_nano: int) -> None:
    _log.warning("tokentrail: %s budget of %g USD at %d%% (spent %.6f USD)", budget.label, budget.limit_usd,
                 round(fraction * 100), total_nano / NANO)
    point = {**budget.point_attributes(), attr.TOKENTRAIL_BUDGET_FRACTION: fraction}
    try:
        if span is not None and span.is_recording():
            span.add_event(WARNING_EVENT, point)
    except Exception:
        _log.debug("tokentrail: budget span event failed", exc_info=True)
    _instrument("counter", names.TOKENTRAIL_BUDGET_WARNINGS, "{warning}",
                "Budget warning thresholds crossed").add(1, point)




__all__ = ["BudgetExceeded", "Budget", "BudgetConfig", "SpendStore", "MemoryStore", "LedgerStore", "RedisStore",
           "check", "config", "reload", "parse_config", "worst_case_nano", "record_spend", "ensure_gauges"]
