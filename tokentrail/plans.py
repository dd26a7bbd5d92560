"""Plans and revenue per tenant, from the file at ``TOKENTRAIL_PLANS`` (or an explicit path).

A YAML file (any name not ending in ``.csv``)::

    plans:                 # plan -> monthly price in USD
      free: 0
      starter: 19
      pro: 99
    tenants:               # tenant -> plan, or a mapping when the tenant pays another amount
      acme: pro
      globex: starter
      initech: {plan: pro, monthly_revenue: 80}   # a discount: revenue wins over the price

or a CSV file (``.csv``) as billing systems export it, one row per tenant, header
``tenant,plan,monthly_revenue`` (any column order, other columns ignored; a CSV has no plan
prices, so ``plan_price_nano`` is None and each tenant's revenue is its row's)::

    tenant,plan,monthly_revenue
    acme,pro,99
    initech,pro,80.00

Amounts are USD, held as integer nano-USD (``Decimal``, never a float). A bad file raises
``PlansError`` naming the file, the entry (YAML) or line (CSV) and the field. Pure: reads a
file, nothing else.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

import yaml

ENV_PLANS = "TOKENTRAIL_PLANS"
_NANO = Decimal(10) ** 9
_CSV_COLUMNS = ("tenant", "plan", "monthly_revenue")
_YAML_KEYS = ("plans", "tenants")
_TENANT_KEYS = ("plan", "monthly_revenue")


class PlansError(ValueError):
    """The plans file cannot be used; the message names the file, entry or line, and field."""


@dataclass(frozen=True)
class Plans:
    """Plan prices and tenants' plans and revenue; empty when no file is configured."""

    prices: Mapping[str, int] = field(default_factory=dict)  # plan -> monthly price, nano-USD
    assignments: Mapping[str, str] = field(default_factory=dict)  # tenant -> plan
    revenue: Mapping[str, int] = field(default_factory=dict)  # tenant -> monthly revenue, nano-USD
    source: str = ""  # the file read, "" when none

    @property
    def tenants(self) -> dict[str, str]:
        """tenant -> plan."""
        return dict(self.assignments)

    def plan_of(self, tenant: str) -> str | None:
        return self.assignments.get(tenant)

    def plan_price_nano(self, plan: str) -> int | None:
        return self.prices.get(plan)

    def monthly_revenue_nano(self, tenant: str) -> int | None:
        """The tenant's own revenue (CSV, or a YAML override), else its plan's price, else None."""
        if tenant in self.revenue:
            return self.revenue[tenant]
        plan = self.assignments.get(tenant)
        return None if plan is None else self.prices.get(plan)

    def __bool__(self) -> bool:
        return bool(self.prices or self.assignments)


def load(path: str | None = None) -> Plans:
    """The plans of ``path``, else of ``TOKENTRAIL_PLANS``; empty ``Plans`` when neither is set."""
    path = path or os.environ.get(ENV_PLANS) or None
    if path is None:
        return Plans()
    try:
        # utf-8-sig: spreadsheet and billing exports often begin with a byte-order mark
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except OSError as exc:
        raise PlansError(f"plans file {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PlansError(f"plans file {path}: not UTF-8 text") from None
    if path.lower().endswith(".csv"):
        return _from_csv(path, text)
    return _from_yaml(path, text)


def _usd_nano(value: Any, where: str) -> int:
    """A non-negative USD amount (number or decimal string) to nano-USD, exactly."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise PlansError(f"{where}={value!r}: expected an amount in USD such as 19 or 19.99")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise PlansError(f"{where}={value!r}: expected an amount in USD such as 19 or 19.99") from None
    if not amount.is_finite() or amount < 0:
        raise PlansError(f"{where}={value!r}: expected an amount in USD of 0 or more")
    nano = amount * _NANO
    if nano != nano.to_integral_value():
        raise PlansError(f"{where}={value!r}: more precise than a nano-dollar")
    return int(nano)


def _name(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)) or value is None or str(value).strip() == "":
        raise PlansError(f"{where}: expected a name, got {value!r}")
    return str(value).strip()


def _from_yaml(path: str, text: str) -> Plans:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise PlansError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return Plans(source=path)
    if not isinstance(data, Mapping):
        raise PlansError(f"{path}: expected a mapping with 'plans' and 'tenants'")
    unknown = sorted(str(k) for k in data if k not in _YAML_KEYS)
    if unknown:
        raise PlansError(f"{path}: unknown key {unknown[0]!r} (expected plans, tenants)")
    plans_doc, tenants_doc = data.get("plans") or {}, data.get("tenants") or {}
    for key, doc in (("plans", plans_doc), ("tenants", tenants_doc)):
        if not isinstance(doc, Mapping):
            raise PlansError(f"{path}: {key}: expected a mapping")
    prices = {_name(plan, f"{path}: plans"): _usd_nano(price, f"{path}: plans.{plan}")
              for plan, price in plans_doc.items()}
    assignments: dict[str, str] = {}
    revenue: dict[str, int] = {}
    for tenant_key, entry in tenants_doc.items():
        tenant = _name(tenant_key, f"{path}: tenants")
        where = f"{path}: tenants.{tenant}"
        if isinstance(entry, Mapping):
            unknown = sorted(str(k) for k in entry if k not in _TENANT_KEYS)
            if unknown:
                raise PlansError(f"{where}: unknown key {unknown[0]!r} (expected plan, monthly_revenue)")
            if "monthly_revenue" in entry:
                revenue[tenant] = _usd_nano(entry["monthly_revenue"], f"{where}.monthly_revenue")
            plan = _name(entry.get("plan"), f"{where}.plan")
        else:
            plan = _name(entry, f"{where}")
        if plan not in prices:
            known = ", ".join(sorted(prices)) or "none"
            raise PlansError(f"{where}: plan {plan!r} is not in plans (known: {known})")
        assignments[tenant] = plan
    return Plans(prices, assignments, revenue, path)


def _rows(path: str, reader: Any) -> Any:
    try:
        yield from reader
    except csv.Error as exc:
        raise PlansError(f"{path} line {reader.line_num}: not CSV ({exc})") from None


def _from_csv(path: str, text: str) -> Plans:
    reader = csv.reader(io.StringIO(text))
    header = next(_rows(path, reader), None)
    if header is None:
        return Plans(source=path)
    columns = [c.strip().lower() for c in header]
    missing = [c for c in _CSV_COLUMNS if c not in columns]
    if missing:
        raise PlansError(f"{path} line 1: missing column {missing[0]!r} (header needs tenant,plan,monthly_revenue)")
    index = {c: columns.index(c) for c in _CSV_COLUMNS}
    assignments: dict[str, str] = {}
    revenue: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for row in _rows(path, reader):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(index.values()):
            raise PlansError(f"{path} line {line}: {len(row)} fields, too few for tenant,plan,monthly_revenue")
        tenant = _name(row[index["tenant"]], f"{path} line {line}: tenant")
        if tenant in first_line:
            raise PlansError(f"{path} line {line}: tenant {tenant!r} repeated (first on line {first_line[tenant]})")
        first_line[tenant] = line
        assignments[tenant] = _name(row[index["plan"]], f"{path} line {line}: plan")
        revenue[tenant] = _usd_nano(row[index["monthly_revenue"]], f"{path} line {line}: monthly_revenue")
    return Plans({}, assignments, revenue, path)
