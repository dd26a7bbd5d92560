"""Tenant and team budgets over a window (day, month), from the YAML file at ``TOKENTRAIL_BUDGETS``::

    store: memory            # memory (default) | ledger | redis://host:port/db
    failure: open            # open (default: allow, count the failure) | closed (block)
    warn: [0.5, 0.8]         # default fractions that log, add a span event and count a metric
    notify:                  # optional: each warning also to a webhook (tokentrail.notify)
      webhook: https://hooks.slack.com/services/...
      format: slack          # slack | json
    plans: plans.yaml        # optional: for "% of plan" limits (default TOKENTRAIL_PLANS; relative
                             # to this file's folder)
    budgets:
      - tenant: acme
        window: day
        limit_usd: 25
        enforce: true        # block at 100% (default: warn only)
      - team: support
        window: month
        limit_usd: 2000
        warn: [0.5, 0.9]
      - tenant: globex       # a margin budget: a share of the tenant's monthly revenue
        limit: 30% of plan
      - plan: starter        # every tenant on a plan (or: tenants: all)
        limit: 30% of plan

A margin budget's limit is the share of the tenant's monthly revenue (``tokentrail.plans``), in
whole nano-USD rounded down; for ``window: day`` it is that of the revenue divided by the days of
the current UTC month. A tenant's own entry wins over a ``plan:`` entry, which wins over
``tenants: all``, for the same window. A tenant with no plan or no revenue gets no budget and one
warning line (never a $0 limit).

Spend is counted by a ``SpendStore``: in-process (one process), the SQLite ledger as a
baseline plus this process's calls (one machine), or a shared Redis counter (a fleet) behind
a circuit breaker (``StoreBreaker``: a dead Redis fails fast between back-off tries).
``check`` stops an enforced budget's call before it is sent when spend so far + the call's
worst case would cross the limit (``tokentrail.BudgetExceeded``, limit name
``tenant:acme/day``); ``record_spend`` counts each priced call and warns at the fractions, once
per window (the crossing of a counter that only grows).
Both are installed by ``tokentrail.breakers.install()``; task limits are ``tokentrail.tasks``'.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping, Protocol

import yaml
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from tokentrail import config as tt_config
from tokentrail import notify, plans, preflight, tasks, telemetry
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
    limit_usd: float | None  # None: a share of the tenant's plan revenue
    enforce: bool = False
    warn: tuple[float, ...] = DEFAULT_WARN
    plan: str | None = None
    plan_share: Fraction | None = None  # 30% of plan: 3/10
    revenue_nano: int | None = None  # the tenant's monthly revenue

    def revenue_in(self, period_start_ns: int) -> Fraction | None:
        """A margin budget's plan revenue for the window starting then (a day: the month's / its days)."""
        if self.revenue_nano is None:
            return None
        if self.window == "month":
            return Fraction(self.revenue_nano)
        day = _dt.datetime.fromtimestamp(period_start_ns // NANO, _dt.timezone.utc)
        return Fraction(self.revenue_nano, calendar.monthrange(day.year, day.month)[1])

    def limit_nano_at(self, period_start_ns: int) -> int:
        """The limit in nano-USD for the window starting at ``period_start_ns``."""
        if self.plan_share is None:
            return int(round(self.limit_usd * NANO))
        return int(self.revenue_in(period_start_ns) * self.plan_share)  # rounded down

    @property
    def limit_nano(self) -> int:
        """The limit of the current window."""
        return self.limit_nano_at(period_start(self.window)[1])

    @property
    def label(self) -> str:
        """The limit name of this budget, e.g. ``tenant:acme/day``."""
        return f"{self.scope}:{self.owner}/{self.window}"

    def describe(self, period_start_ns: int) -> str:
        usd = f"{self.limit_nano_at(period_start_ns) / NANO:g} USD"
        return usd if self.plan_share is None else f"{usd} ({float(self.plan_share) * 100:g}% of plan {self.plan})"

    def point_attributes(self) -> dict[str, Any]:
        return {_SCOPES[self.scope]: self.owner, attr.TOKENTRAIL_BUDGET_WINDOW: self.window}


@dataclass(frozen=True)
class BudgetConfig:
    budgets: tuple[Budget, ...] = ()
    store: str = "memory"
    fail_closed: bool = False
    by_owner: Mapping[tuple[str, str], tuple[Budget, ...]] = field(default_factory=dict)
    notify: notify.NotifyConfig | None = None
    problems: tuple[str, ...] = ()  # entries that give no budget (a tenant with no plan), one line each


_SHARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*of\s+plan\s*", re.IGNORECASE)
_TARGETS = ("tenant", "team", "plan", "tenants")
_PRECEDENCE = {"tenant": 0, "plan": 1, "tenants": 2}  # for one tenant and window, the lowest wins


def parse_config(data: Any, *, plans_of: plans.Plans | None = None, base_dir: str | None = None) -> BudgetConfig:
    """Validate the YAML document; raises ValueError naming the bad entry. ``plans_of``: the plans
    for "% of plan" limits (default: the file ``plans:`` names, else ``TOKENTRAIL_PLANS``)."""
    if data is None:
        return BudgetConfig()
    if not isinstance(data, Mapping):
        raise ValueError("budgets file: expected a mapping with a 'budgets' list")
    warn_default = _fractions(data.get("warn", DEFAULT_WARN), "warn")
    failure = str(data.get("failure", "open")).lower()
    if failure not in ("open", "closed"):
        raise ValueError(f"budgets file: failure={failure!r} must be open or closed")
    store = str(data.get("store", "memory"))
    notify_cfg = notify.parse_config(data["notify"]) if data.get("notify") is not None else None
    entries = []
    for i, entry in enumerate(data.get("budgets") or ()):
        where = f"budgets[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        targets = [t for t in _TARGETS if t in entry]
        if len(targets) != 1:
            raise ValueError(f"{where}: give exactly one of tenant:, team:, plan: or tenants: all")
        target = targets[0]
        if target == "tenants" and str(entry["tenants"]).lower() != "all":
            raise ValueError(f"{where}: tenants={entry['tenants']!r}: the only value is all")
        window = str(entry.get("window", "month"))
        if window not in _WINDOWS:
            raise ValueError(f"{where}: window={window!r} must be day or month")
        share = _limit(entry, where, target)
        warn = _fractions(entry["warn"], f"{where}.warn") if "warn" in entry else warn_default
        entries.append((i, target, str(entry[target]), window, share, bool(entry.get("enforce", False)), warn))

    budgets, problems = [], []
    if any(isinstance(e[4], Fraction) for e in entries):
        if plans_of is None:
            try:
                plans_of = plans.load(_plans_path(data.get("plans"), base_dir))
            except plans.PlansError as exc:
                plans_of, problems = plans.Plans(), [f"plans for '% of plan' limits: {exc}"]
        if not plans_of and not problems:
            problems.append(f"no plans for '% of plan' limits: set {plans.ENV_PLANS} or plans: in the budgets file")
    margin: dict[tuple[str, str], tuple[int, Budget]] = {}  # (tenant, window) -> (precedence, budget)
    for i, target, name, window, share, enforce, warn in entries:
        if not isinstance(share, Fraction):
            budgets.append(Budget(target, name, window, float(share), enforce, warn))
            continue
        if problems and not plans_of:
            continue
        if target == "tenant":
            tenants = [name]
        elif target == "plan":
            tenants = [t for t, p in plans_of.tenants.items() if p == name]
            if not tenants and plans_of.plan_price_nano(name) is None:
                problems.append(f"budgets[{i}]: plan {name!r} is not in {plans_of.source or 'the plans'}; no budget")
        else:
            tenants = list(plans_of.tenants)
        unpaid = []  # a plan: or tenants: all entry names its $0 tenants in one line
        for tenant in tenants:
            revenue = plans_of.monthly_revenue_nano(tenant)
            if not revenue:
                unpaid.append(tenant)
                continue
            budget = Budget("tenant", tenant, window, None, enforce, warn, plans_of.plan_of(tenant), share, revenue)
            rank = _PRECEDENCE[target]
            found = margin.get((tenant, window))
            if found is None or rank < found[0]:
                margin[(tenant, window)] = (rank, budget)
            elif rank == found[0] == 0:
                budgets.append(budget)  # two explicit entries: both apply, as limit_usd ones do
        if unpaid:
            problems.append(_unpaid(f"budgets[{i}]", unpaid, share, plans_of))
    explicit = {(b.owner, b.window) for b in budgets if b.scope == "tenant"}
    budgets += [b for (tenant, window), (rank, b) in margin.items() if rank == 0 or (tenant, window) not in explicit]
    by_owner: dict[tuple[str, str], list[Budget]] = {}
    for b in budgets:
        by_owner.setdefault((b.scope, b.owner), []).append(b)
    return BudgetConfig(tuple(budgets), store, failure == "closed",
                        {k: tuple(v) for k, v in by_owner.items()}, notify_cfg, tuple(problems))


def _limit(entry: Mapping[str, Any], where: str, target: str) -> float | Fraction:
    """``limit_usd: 25`` (a number) or ``limit: 30% of plan`` (a Fraction of the revenue)."""
    if ("limit_usd" in entry) == ("limit" in entry):
        raise ValueError(f"{where}: give exactly one of limit_usd: (USD) or limit: (such as 30% of plan)")
    if "limit_usd" in entry:
        limit = entry["limit_usd"]
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            raise ValueError(f"{where}: limit_usd={limit!r} must be a positive number")
        if target in ("plan", "tenants"):
            raise ValueError(f"{where}: {target}: budgets take limit: N% of plan")
        return limit
    match = _SHARE.fullmatch(str(entry["limit"]))
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{where}: limit={entry['limit']!r}: expected a share of the plan such as '30% of plan'")
    if target == "team":
        raise ValueError(f"{where}: limit: N% of plan is for tenants (a team has no plan); use limit_usd")
    return Fraction(match.group(1)) / 100


def _unpaid(where: str, tenants: list[str], share: Fraction, plans_of: plans.Plans) -> str:
    """The one line for tenants with no plan or no revenue: they get no budget, never a $0 one."""
    pct = f"'{float(share) * 100:g}% of plan'"
    if len(tenants) == 1:
        [tenant] = tenants
        plan = plans_of.plan_of(tenant)
        if plan is None and plans_of.monthly_revenue_nano(tenant) is None:
            return f"{where}: tenant {tenant!r} has no plan in {plans_of.source or 'the plans'}; no {pct} budget for it"
        return f"{where}: tenant {tenant!r} brings $0/month (plan {plan}); no {pct} budget for it"
    shown = ", ".join(tenants[:5]) + (f" and {len(tenants) - 5} more" if len(tenants) > 5 else "")
    return f"{where}: {len(tenants)} tenants bring $0/month ({shown}); no {pct} budget for them"


def _plans_path(value: Any, base_dir: str | None) -> str | None:
    if value is None:
        return None
    path = str(value)
    return os.path.join(base_dir, path) if base_dir and not os.path.isabs(path) else path


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
        notifier = getattr(self, "notifier", None)
        if notifier is not None:
            notifier.close()
        self.path: Any = self._UNLOADED
        self.config = BudgetConfig()
        self.store: SpendStore | None = None
        self.notifier: notify.Notifier | None = None


_loaded = _Loaded()
register_reset(_loaded.forget)


def config() -> BudgetConfig:
    """The budgets of ``TOKENTRAIL_BUDGETS`` (loaded once per path; a bad file is logged and
    ignored, never fatal)."""
    path = tt_config.env(ENV_BUDGETS) or None  # read twice per LLM call: the cheap reader
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
                cfg = parse_config(yaml.safe_load(fh), base_dir=os.path.dirname(os.path.abspath(path)))
        except Exception as exc:
            _log.warning("tokentrail: %s=%s ignored: %s", ENV_BUDGETS, path, exc)
        for problem in cfg.problems:
            _log.warning("tokentrail: %s=%s: %s", ENV_BUDGETS, path, problem)
    _loaded.store = make_store(cfg.store) if cfg.budgets else None
    _loaded.notifier = notify.Notifier(cfg.notify) if cfg.notify is not None and cfg.budgets else None
    _loaded.config = cfg
    _loaded.path = path


def notifier() -> notify.Notifier | None:
    """The webhook of the budgets file's ``notify:``, if any (``flush()`` waits for its deliveries)."""
    config()
    return _loaded.notifier


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
    return [Observation(b.limit_nano / NANO, b.point_attributes()) for b in config().budgets]


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
def _observe_burn(options: CallbackOptions) -> list[Observation]:
    """Margin budgets: spend in the window over the plan revenue of the window; the most burning
    tenants first, at most the metrics cardinality limit of them."""
    config()
    spend_store = _loaded.store
    if spend_store is None:
        return []
    burns = []
    for b in config().budgets:
        if b.plan_share is None:
            continue
        label, start = period_start(b.window)
        try:
            spent = spend_store.get(store_key(b, label), b, start)
        except Exception as exc:
            _store_failed(exc)
            continue
        burns.append((float(spent / b.revenue_in(start)), b))
    burns.sort(key=lambda item: -item[0])
    return [Observation(burn, b.point_attributes()) for burn, b in burns[:tt_config.cardinality_limit()]]


def _register_gauges() -> None:
    telemetry.observe_budgets(_observe_limits, _observe_spent)
    telemetry.observe_plan_burn(_observe_burn)


def _owner_of(attributes: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(scope, attributes[name]) for scope, name in _SCOPES.items() if attributes.get(name)]


def enforcing() -> bool:
    """Whether ``check`` could stop a call: some budget is configured (one env lookup)."""
    return bool(config().budgets)


def check(planned: preflight.PlannedCall) -> None:
    """Pre-flight: raise BudgetExceeded if the call would cross an enforced tenant/team budget."""
    cfg = config()
    if not cfg.budgets:
        return  # the common case costs one env lookup
    _register_gauges()
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
                        budget.label, limit=budget.limit_nano_at(start) / NANO, spent=0.0, task=task_name,
                        detail="the shared budget counter is unavailable (fail-closed)"))
                continue
            limit = budget.limit_nano_at(start)
            if spent + estimate > limit:
                tasks.mark_blocked(state, budget.label)
                share = "" if budget.plan_share is None else f"; the limit is {budget.describe(start)}"
                preflight.stop(span, BudgetExceeded(
                    budget.label, limit=limit / NANO, spent=spent / NANO, task=task_name,
                    estimate_usd=estimate / NANO,
                    detail=f"this call could cost up to {estimate / NANO:.6f} USD{share}"))


def record_spend(span: Any, attributes: Mapping[str, Any], nano: int) -> None:
    """After a priced call: add its cost to its owner's budget windows; warn on crossings."""
    cfg = config()
    if not cfg.budgets or nano <= 0:
        return
    _register_gauges()
    for key in _owner_of(attributes):
        for budget in cfg.by_owner.get(key, ()):
            label, start = period_start(budget.window)
            try:
                total = _loaded.store.add(store_key(budget, label), budget, start, nano)
            except Exception as exc:
                _store_failed(exc)
                continue
            before, limit = total - nano, budget.limit_nano_at(start)
            for fraction in (*budget.warn, 1.0):
                # the counter only grows: each fraction is crossed once per window
                if before < fraction * limit <= total:
                    _warn(span, budget, fraction, total, label, start)


def _warn(span: Any, budget: Budget, fraction: float, total_nano: int, period: str, start: int) -> None:
    _log.warning("tokentrail: %s budget of %s at %d%% (spent %.6f USD)", budget.label, budget.describe(start),
                 round(fraction * 100), total_nano / NANO)
    point = {**budget.point_attributes(), attr.TOKENTRAIL_BUDGET_FRACTION: fraction}
    try:
        if span is not None and span.is_recording():
            span.add_event(WARNING_EVENT, point)
    except Exception:
        _log.debug("tokentrail: budget span event failed", exc_info=True)
    telemetry.budget_warnings().add(1, point)
    webhook = _loaded.notifier
    if webhook is not None:  # queued: the delivery is the worker thread's
        revenue = budget.revenue_in(start)
        webhook.send(notify.Notice(
            budget.label, budget.scope, budget.owner, budget.window, period, fraction, total_nano,
            budget.limit_nano_at(start), budget.plan,
            None if budget.plan_share is None else float(budget.plan_share),
            None if revenue is None else int(revenue)))


__all__ = ["Budget", "BudgetConfig", "SpendStore", "MemoryStore", "LedgerStore", "RedisStore", "StoreBreaker",
           "StoreUnavailable", "config", "reload", "parse_config", "notifier"]
