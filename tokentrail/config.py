"""Environment configuration, parsed once and never fatal.

A bad value in the environment must not stop the application from starting: it is logged
and ignored (the app runs, unattributed or with defaults, and the log says why).
"""

from __future__ import annotations

import logging
import os

from tokentrail.identity import OWNER_FIELDS, value_problem
from tokentrail.state import BoundedMemo

_logger = logging.getLogger(__name__)

#: Static owner defaults for every span of this process, e.g. ``team=support,feature=chat``.
ENV_ATTRIBUTES = "TOKENTRAIL_ATTRIBUTES"
#: Per-metric-stream cap on attribute sets (the SDK's aggregation cardinality limit).
ENV_CARDINALITY_LIMIT = "TOKENTRAIL_METRICS_CARDINALITY_LIMIT"

DEFAULT_CARDINALITY_LIMIT = 2000


def parse_attributes(raw: str | None) -> dict[str, str]:
    """Parse ``k=v,k=v`` into ``{attribute name: value}``.

    Keys are the owner fields (``tenant``, ``feature``, ``team``, ``user``) or the attribute
    names they stand for; values follow the same rule as ``tokentrail.attribute()``.
    Malformed pairs are skipped with a warning (never raised: this runs at process start).
    """
    out: dict[str, str] = {}
    if not raw:
        return out
    allowed = set(OWNER_FIELDS.values())
    for pair in raw.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        name = OWNER_FIELDS.get(key, key)
        if not sep or name not in allowed:
            _logger.warning("%s: ignoring %r (expected one of %s as key=value)",
                            ENV_ATTRIBUTES, pair, ", ".join(OWNER_FIELDS))
            continue
        problem = value_problem(value)
        if problem is not None:
            _logger.warning("%s: ignoring %r (the value %s)", ENV_ATTRIBUTES, pair, problem)
            continue
        out[name] = value
    return out


# keyed by the raw variable: re-read when it changes, parsed (and warned about) once per value
_static: BoundedMemo[str | None, tuple[tuple[str, str], ...]] = BoundedMemo(8)


def _parsed(raw: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(parse_attributes(raw).items())


def static_attributes() -> dict[str, str]:
    """The TOKENTRAIL_ATTRIBUTES defaults, as a new dict the caller may change."""
    return dict(_static.get(os.environ.get(ENV_ATTRIBUTES), _parsed))


def cardinality_limit() -> int:
    raw = os.environ.get(ENV_CARDINALITY_LIMIT)
    if not raw:
        return DEFAULT_CARDINALITY_LIMIT
    try:
        value = int(raw)
        if value <= 0:
            raise ValueError(raw)
        return value
    except ValueError:
        _logger.warning("%s=%r is not a positive integer; using %d",
                        ENV_CARDINALITY_LIMIT, raw, DEFAULT_CARDINALITY_LIMIT)
        return DEFAULT_CARDINALITY_LIMIT
