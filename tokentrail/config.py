"""Environment configuration, parsed once and never fatal.

A bad value in the environment must not stop the application from starting: it is logged
and ignored (the app runs, unattributed or with defaults, and the log says why).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from tokentrail.identity import OWNER_FIELDS, value_problem
from tokentrail.state import BoundedMemo

_logger = logging.getLogger(__name__)

#: Static owner defaults for every span of this process, e.g. ``team=support,feature=chat``.
ENV_ATTRIBUTES = "TOKENTRAIL_ATTRIBUTES"
#: Per-metric-stream cap on attribute sets (the SDK's aggregation cardinality limit).
ENV_CARDINALITY_LIMIT = "TOKENTRAIL_METRICS_CARDINALITY_LIMIT"

DEFAULT_CARDINALITY_LIMIT = 2000

_ENVIRON_TYPE = type(os.environ)
_ENCODING = sys.getfilesystemencoding()
# encoded names of the variables read per call (a handful of constants)
_encoded: dict[str, bytes] = {}


def env(name: str, default: Any = None) -> Any:
    """``os.environ.get(name, default)`` for the per-call path, about a fifth of its cost.

    On POSIX ``os.environ`` keeps every change made through it (``monkeypatch.setenv`` too)
    in its ``_data`` dict of encoded names and values: one C-level lookup there sees exactly
    what ``os.environ.get`` would, without its Mapping and encode/decode layers. Anything else
    (Windows, an ``os.environ`` replaced by another mapping) asks ``os.environ.get``.
    """
    environ = os.environ
    if type(environ) is not _ENVIRON_TYPE or not _POSIX:
        return environ.get(name, default)
    key = _encoded.get(name)
    if key is None:
        key = name.encode(_ENCODING, "surrogateescape")
        if len(_encoded) < 256:
            _encoded[name] = key
    raw = environ._data.get(key)  # type: ignore[attr-defined]
    return default if raw is None else raw.decode(_ENCODING, "surrogateescape")


# os.environ's own encoding on POSIX: names and values are bytes in _data
_POSIX = os.name == "posix" and isinstance(getattr(os.environ, "_data", None), dict)


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
    return dict(_static.get(env(ENV_ATTRIBUTES), _parsed))


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
