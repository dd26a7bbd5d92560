"""Tenant and team budgets over a window (day, month), from the YAML file at ``TOKENTRAIL_BUDGETS``::

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
baseline plus this process's calls (one machine), or a shared Redis counter (a fleet) behind
a circuit breaker (``StoreBreaker``: a dead Redis fails fast between back-off tries).
``check`` stops an enforced budget's call before it is sent when spend so far + the call's
worst case would cross the limit (``tokentrail.BudgetExceeded``, limit name
``tenant:acme/day``); ``record_spend`` counts each priced call and warns at the fractions.
Both are installed by ``tokentrail.breakers.install()``; task limits are ``tokentrail.tasks``'.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import yaml
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from tokentrail import preflight, tasks, telemetry
from tokentrail.attribution import owner_span_attributes
from tokentrail.errors import BudgetExceeded
from tokentrail.ledger.writer import default_path as default_ledger_path
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo, register_reset

_log = logging.getLogger(__name__)

ENV_BUDGETS = "TOKENTRAIL_BUDGETS"
DEFAULT_WARN = (0.5, 0.8)
NANO = 1_000_000_000

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
        """The limit name of this budget, e.g. ``tenant:acme/day``."""
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


class _Loaded:
    """The budgets of one ``TOKENTRAIL_BUDGETS`` path and the store counting against them."""

    _UNLOADED = object()  # never equal to a path: forces a load

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forget()

    def forget(self) -> None:
        self.path: Any = self._UNLOADED
        self.config = BudgetConfig()
        self.store: SpendStore | None = None


_loaded = _Loaded()
register_reset(_loaded.forget)


def config() -> BudgetConfig:
    """The budgets of ``TOKENTRAIL_BUDGETS`` (loaded once per path; a bad file is logged and
    ignored, never fatal)."""
    path = os.environ.get(ENV_BUDGETS) or None
    if path != _loaded.path:
        with _loaded.lock:
            if path != _loaded.path:
                _load(path)
    return _loaded.config


def _load(path: str | None) -> None:
    cfg = BudgetConfig()
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                cfg = parse_config(yaml.safe_load(fh))
        except Exception as exc:
            _log.warning("tokentrail: %s=%s ignored: %s", ENV_BUDGETS, path, exc)
    _loaded.store = make_store(cfg.store) if cfg.budgets else None
    _loaded.config = cfg
    _loaded.path = path


def reload() -> BudgetConfig:
    """Re-read ``TOKENTRAIL_BUDGETS`` and forget this process's counters (a Redis or ledger
    store keeps what it holds)."""
    with _loaded.lock:
        _loaded.forget()
    return config()


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
            path = self.path or default_ledger_path()
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


class StoreUnavailable(ConnectionError):
    """The store failed recently and is not asked again until its back-off ends."""


class StoreBreaker:
    """A circuit breaker on a remote store: after a failure the store is not asked for
    ``first_s`` seconds, doubling per consecutive failure up to ``max_s``; meanwhile every call
    fails at once with ``StoreUnavailable`` (microseconds, not a network timeout). After the
    back-off one call tries again (the others keep failing fast until it has answered)."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.failures = 0  # consecutive
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def call(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            now = time.monotonic()
            if now < self._retry_at:
                raise StoreUnavailable(f"budget store unavailable after {self.failures} failure(s); "
                                       f"next try in {self._retry_at - now:.1f} s")
            if self.failures:  # the trial call: the others wait for its answer by failing fast
                self._retry_at = now + self._backoff()
        try:
            result = fn(*args)
        except Exception:
            with self._lock:
                self.failures += 1
                self._retry_at = time.monotonic() + self._backoff()
            raise
        if self.failures:
            with self._lock:
                self.failures, self._retry_at = 0, 0.0
        return result

    def _backoff(self) -> float:
        return min(self.max_s, self.first_s * 2 ** max(0, min(self.failures - 1, 32)))


class RedisStore:
    """A fleet: one shared counter per owner and window in Redis (INCRBY, expires after the window).

    Behind a ``StoreBreaker``: an unreachable Redis costs one timeout per back-off, not one per call.
    """

    def __init__(self, url: str, *, timeout_s: float = 0.25, breaker: StoreBreaker | None = None) -> None:
        import redis  # optional dependency: pip install tokentrail[redis]

        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.breaker = breaker or StoreBreaker()

    def get(self, key: str, budget: Budget, period_start_ns: int) -> int:
        value = self.breaker.call(self.client.get, key)
        return int(value) if value is not None else 0

    def add(self, key: str, budget: Budget, period_start_ns: int, nano: int) -> int:
        return int(self.breaker.call(self._add, key, budget, nano))

    def _add(self, key: str, budget: Budget, nano: int) -> int:
        pipe = self.client.pipeline()
        pipe.incrby(key, nano)
        pipe.expire(key, 40 * 86400 if budget.window == "month" else 2 * 86400)
        total, _ = pipe.execute()
        return total


def make_store(spec: str) -> SpendStore:
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(spec)
    if spec == "ledger" or spec.startswith("ledger:"):
        return LedgerStore(spec.partition(":")[2] or None)
    if spec != "memory":
        _log.warning("tokentrail: budget store %r unknown; counting in memory", spec)
    return MemoryStore()


def _period_of_day(key: tuple[str, int]) -> tuple[str, int]:
    window, day = key
    return period_start(window, _dt.datetime.fromtimestamp(day * 86400, _dt.timezone.utc))


_periods: BoundedMemo[tuple[str, int], tuple[str, int]] = BoundedMemo(8)


def period_start(window: str, now: _dt.datetime | None = None) -> tuple[str, int]:
    """(label, start epoch ns) of the UTC day or month of ``now`` (default: today's, memoised)."""
    if now is None:
        return _periods.get((window, int(time.time() // 86400)), _period_of_day)
    if window == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m-%d")
    else:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m")
    return label, int(start.timestamp()) * NANO


def store_key(budget: Budget, label: str) -> str:
    return f"tokentrail:budget:{budget.scope}:{budget.owner}:{budget.window}:{label}"


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def _store_failed(exc: BaseException) -> None:
    # counted every time, logged only when the store was really asked (once per back-off)
    if not isinstance(exc, StoreUnavailable):
        _log.warning("tokentrail: budget store failed (%s): %r", "fail-closed" if config().fail_closed
                     else "fail-open", exc)
    telemetry.budget_store_errors().add(1, {attr.ERROR_TYPE: type(exc).__name__})


def _observe_limits(options: CallbackOptions) -> list[Observation]:
    return [Observation(b.limit_usd, b.point_attributes()) for b in config().budgets]


def _observe_spent(options: CallbackOptions) -> list[Observation]:
    out = []
    config()
    spend_store = _loaded.store
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
# the pre-flight check and the end of a call
# --------------------------------------------------------------------------------------------
def _owner_of(attributes: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(scope, attributes[name]) for scope, name in _SCOPES.items() if attributes.get(name)]


def check(planned: preflight.PlannedCall) -> None:
    """Pre-flight: raise BudgetExceeded if the call would cross an enforced tenant/team budget."""
    cfg = config()
    if not cfg.budgets:
        return  # the common case costs one env lookup
    telemetry.observe_budgets(_observe_limits, _observe_spent)
    span = trace.get_current_span()
    state = tasks.current_task()
    task_name = state.name if state is not None else None
    estimate: int | None = None
    for key in _owner_of(owner_span_attributes()):
        for budget in cfg.by_owner.get(key, ()):
            if not budget.enforce:
                continue
            if estimate is None:
                estimate = preflight.worst_case_nano(planned) or 0
            label, start = period_start(budget.window)
            try:
                spent = _loaded.store.get(store_key(budget, label), budget, start)
            except Exception as exc:
                _store_failed(exc)
                if cfg.fail_closed:
                    tasks.mark_blocked(state, budget.label)
                    preflight.stop(span, BudgetExceeded(
                        budget.label, limit=budget.limit_usd, spent=0.0, task=task_name,
                        detail="the shared budget counter is unavailable (fail-closed)"))
                continue
            if spent + estimate > budget.limit_nano:
                tasks.mark_blocked(state, budget.label)
                preflight.stop(span, BudgetExceeded(
                    budget.label, limit=budget.limit_usd, spent=spent / NANO, task=task_name,
                    estimate_usd=estimate / NANO, detail=f"this call could cost up to {estimate / NANO:.6f} USD"))


def record_spend(span: Any, attributes: Mapping[str, Any], nano: int) -> None:
    """After a priced call: add its cost to its owner's budget windows; warn on crossings."""
    cfg = config()
    if not cfg.budgets or nano <= 0:
        return
    telemetry.observe_budgets(_observe_limits, _observe_spent)
    for key in _owner_of(attributes):
        for budget in cfg.by_owner.get(key, ()):
            label, start = period_start(budget.window)
            try:
                total = _loaded.store.add(store_key(budget, label), budget, start, nano)
            except Exception as exc:
                _store_failed(exc)
                continue
            before, limit = total - nano, budget.limit_nano
            for fraction in (*budget.warn, 1.0):
                if before < fraction * limit <= total:
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
    telemetry.budget_warnings().add(1, point)


__all__ = ["Budget", "BudgetConfig", "SpendStore", "MemoryStore", "LedgerStore", "RedisStore", "StoreBreaker",
           "StoreUnavailable", "config", "reload", "parse_config"]
