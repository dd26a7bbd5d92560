"""Environment configuration, parsed once and never fatal.

A bad value in the environment must not stop the application from starting: it is logged
and ignored (the app runs, unattributed or with defaults, and the log says why).
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from typing import Mapping

from tokentrail.semconv import attributes as attr

_logger = logging.getLogger(__name__)

#: Static owner defaults for every span of this process, e.g. ``team=support,feature=chat``.
ENV_ATTRIBUTES = "TOKENTRAIL_ATTRIBUTES"
#: Per-metric-stream cap on attribute sets (the SDK's aggregation cardinality limit).
ENV_CARDINALITY_LIMIT = "TOKENTRAIL_METRICS_CARDINALITY_LIMIT"

DEFAULT_CARDINALITY_LIMIT = 2000

#: Short keys accepted in TOKENTRAIL_ATTRIBUTES and the attribute each one sets.
SHORT_KEYS: Mapping[str, str] = {
    "tenant": attr.TOKENTRAIL_TENANT,
    "feature": attr.TOKENTRAIL_FEATURE,
    "team": attr.TOKENTRAIL_TEAM,
    "user": attr.USER_ID,
}

_MAX_VALUE_LEN = 128
# Printable, no separators that would make the "k=v,k=v" form or label values ambiguous.
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:/@+\- ]+$")


def parse_attributes(raw: str | None) -> dict[str, str]:
    """Parse ``k=v,k=v`` into ``{attribute name: value}``.

    Keys are the short names in ``SHORT_KEYS`` or the full attribute names they map to.
    Malformed pairs are skipped with a warning (never raised: this runs at process start).
    """
    out: dict[str, str] = {}
    if not raw:
        return out
    allowed = set(SHORT_KEYS.values())
    for pair in raw.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        name = SHORT_KEYS.get(key, key)
        if not sep or name not in allowed:
            _logger.warning("%s: ignoring %r (expected one of %s as key=value)",
                            ENV_ATTRIBUTES, pair, ", ".join(SHORT_KEYS))
            continue
        if not value or len(value) > _MAX_VALUE_LEN or not _VALUE_RE.match(value):
            _logger.warning("%s: ignoring %r (value must be 1-%d characters of [A-Za-z0-9_.:/@+- ])",
                            ENV_ATTRIBUTES, pair, _MAX_VALUE_LEN)
            continue
        out[name] = value
    return out


@lru_cache(maxsize=None)
def _static_attributes(raw: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(parse_attributes(raw).items())


def static_attributes() -> dict[str, str]:
    """The TOKENTRAIL_ATTRIBUTES defaults (re-read if the variable changes; parsed once per value)."""
    return dict(_static_attributes(os.environ.get(ENV_ATTRIBUTES)))


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
