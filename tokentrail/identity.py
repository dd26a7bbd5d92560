"""Who and what the work in progress is, as kept in the OpenTelemetry context.

The *identity* is the owner (tenant, feature, team, user) plus the task (name, id), one
read-only mapping of attribute name -> value. The retry and fallback marks of enclosing
``tokentrail.retry()`` / ``tokentrail.fallback()`` scopes live in the context beside it.

``value_problem`` is the one rule for an identity value, wherever it comes from
(``attribute()``, ``task()``, ``TOKENTRAIL_ATTRIBUTES``, inbound baggage).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping

from opentelemetry import context as otel_context

from tokentrail.semconv import attributes as attr

#: Keyword -> attribute for the owner fields (``attribute(tenant=...)``, ``TOKENTRAIL_ATTRIBUTES``).
OWNER_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "tenant": attr.TOKENTRAIL_TENANT,
        "feature": attr.TOKENTRAIL_FEATURE,
        "team": attr.TOKENTRAIL_TEAM,
        "user": attr.USER_ID,
    }
)
#: Every identity attribute that travels in baggage (owner + task).
IDENTITY_KEYS: tuple[str, ...] = (*OWNER_FIELDS.values(), attr.TOKENTRAIL_TASK_NAME, attr.TOKENTRAIL_TASK_ID)

MAX_VALUE_LENGTH = 128
ALLOWED_CHARACTERS = "A-Za-z0-9._:@/+-"
# No spaces or separators: values end up in baggage, "k=v,k=v" settings and metric labels.
_VALUE_RE = re.compile(r"[A-Za-z0-9._:@/+\-]+")

_IDENTITY_KEY = otel_context.create_key("tokentrail-identity")
_RETRY_KEY = otel_context.create_key("tokentrail-retry")
_FALLBACK_KEY = otel_context.create_key("tokentrail-fallback")


def value_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as an identity value, or None when it is valid."""
    if isinstance(value, str) and 0 < len(value) <= MAX_VALUE_LENGTH and _VALUE_RE.fullmatch(value):
        return None
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_VALUE_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_VALUE_LENGTH})"
    bad = sorted({c for c in value if not _VALUE_RE.fullmatch(c)})
    return f"contains {''.join(bad)!r} (allowed: {ALLOWED_CHARACTERS})"


def is_valid_value(value: Any) -> bool:
    return value_problem(value) is None


def validate_value(field: str, value: Any, *, api: str) -> str:
    """Return ``value`` or raise a ValueError that names the call, the field and the problem."""
    problem = value_problem(value)
    if problem is None:
        return value
    shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
    raise ValueError(f"{api}: {field}={shown!r} {problem}")


def local_identity(ctx: otel_context.Context | None = None) -> Mapping[str, str] | None:
    """The identity set by ``attribute()``/``task()`` in this process, or None."""
    return (ctx if ctx is not None else otel_context.get_current()).get(_IDENTITY_KEY)  # get_value, one call less


def with_identity(identity: Mapping[str, str], ctx: otel_context.Context,
                  first: tuple[str, object] | None = None) -> otel_context.Context:
    """``ctx`` with ``identity`` (a read-only mapping, shared by every context that holds it).

    ``first``: one more (context key, value) set before it, in the same copy of the context
    (``set_value`` twice would copy it twice)."""
    values = dict(ctx)
    if first is not None:
        values[first[0]] = first[1]
    values[_IDENTITY_KEY] = identity
    return otel_context.Context(values)


def marks(ctx: otel_context.Context) -> tuple[int | None, str | None]:
    """(``retry_attempt``, ``fallback_from``) of ``ctx``, read in one go."""
    return ctx.get(_RETRY_KEY), ctx.get(_FALLBACK_KEY)


def retry_attempt(ctx: otel_context.Context | None = None) -> int | None:
    """The attempt number of the enclosing ``retry()`` scope, or None."""
    return otel_context.get_value(_RETRY_KEY, ctx)


def with_retry_attempt(attempt: int, ctx: otel_context.Context | None = None) -> otel_context.Context:
    return otel_context.set_value(_RETRY_KEY, attempt, ctx)


def fallback_from(ctx: otel_context.Context | None = None) -> str | None:
    """The model the enclosing ``fallback()`` scope falls back from, or None."""
    return otel_context.get_value(_FALLBACK_KEY, ctx)


def with_fallback_from(model: str, ctx: otel_context.Context | None = None) -> otel_context.Context:
    return otel_context.set_value(_FALLBACK_KEY, model, ctx)
