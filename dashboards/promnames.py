"""The Prometheus names tokentrail's OTLP metrics get on the documented Collector path.

The Collector's ``prometheus`` exporter (and its ``prometheusremotewrite`` sibling, and Prometheus' own
OTLP receiver in its default ``UnderscoreEscapingWithSuffixes`` mode) turn an OTLP metric into a
Prometheus name by: splitting the name on every non-alphanumeric character and joining with ``_``;
appending the unit (mapped through the UCUM table below; left out when it is annotation-only like
``{token}``); appending ``total`` to monotonic sums; ``ratio`` to unit-``1`` gauges. Attribute keys
become labels the same way (non-alphanumerics -> ``_``; a leading digit gets a ``key_`` prefix).

Every PromQL expression in the dashboards and alert rules is built from these functions applied to the
semconv registry, so a rename in the registry flows through to every query.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tokentrail.semconv import generate

# UCUM unit -> Prometheus unit word (the subset the Collector translator maps).
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes",
    "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts",
    "g": "grams", "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def _tokens(text: str) -> list[str]:
    return [t for t in _NON_ALNUM.split(text) if t]


def _unit_word(unit: str, table: dict[str, str]) -> str:
    unit = unit.strip()
    if not unit or "{" in unit or "}" in unit:
        return ""
    return "_".join(_tokens(table.get(unit, unit)))


def metric_name(name: str, unit: str, instrument: str) -> str:
    """Prometheus metric family name for an OTLP metric (``instrument`` as in the semconv registry)."""
    tokens = _tokens(name)
    main, _, per = unit.partition("/")
    word = _unit_word(main, _UNITS)
    if word and word not in tokens:
        tokens.append(word)
    per_word = _unit_word(per, _PER_UNITS) if per else ""
    if per_word and per_word not in tokens:
        tokens += ["per", per_word]
    if instrument == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and instrument == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return "_" + out if out[:1].isdigit() else out


def label(attribute: str) -> str:
    """Prometheus label name for an OTLP attribute key."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", attribute)
    if out[:1].isdigit():
        return "key_" + out
    if out.startswith("_") and not out.startswith("__"):
        return "key" + out
    return out


@lru_cache(maxsize=None)
def _registry_metrics() -> dict[str, dict]:
    return {entry["id"]: entry for entry in generate.load_registry()["metrics"]}


def prom(metric: str) -> str:
    """Prometheus family name of a semconv metric id (its unit and instrument read from the registry)."""
    entry = _registry_metrics()[metric]
    return metric_name(entry["id"], entry["unit"], entry["instrument"])


def instrument(metric: str) -> str:
    return _registry_metrics()[metric]["instrument"]
