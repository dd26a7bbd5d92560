"""Who owns the work in progress: ``tokentrail.attribute(...)`` and ``owner_span_attributes()``.

The owner (tenant, feature, team, user) and the task (name, id) form one *identity* kept in
the OpenTelemetry context, so it follows the context wherever OpenTelemetry carries it
(asyncio tasks, ``contextvars.copy_context``, ``tokentrail.propagation.wrap`` for threads).
It is mirrored into W3C baggage, so the standard ``baggage`` propagator carries it across
process hops; when ``TOKENTRAIL_BAGGAGE_SECRET`` is set the entries are signed with an HMAC
and a receiving process accepts inbound attribution only if the signature verifies (see
``tokentrail.propagation``).

Precedence per field: the innermost ``attribute()``/``task()`` > inbound baggage (when
trusted) > the static per-process defaults of ``TOKENTRAIL_ATTRIBUTES``.
"""

from __future__ import annotations

import functools
import inspect
import re
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar

from opentelemetry import context as otel_context

from tokentrail import config
from tokentrail.semconv import attributes as attr

F = TypeVar("F", bound=Callable[..., Any])

#: Keyword -> attribute for the owner fields of ``attribute()``.
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
_VALUE_RE = re.compile(r"[A-Za-z0-9._:@/+\-]+")

_IDENTITY_KEY = otel_context.create_key("tokentrail-identity")
# Set by tokentrail.retry(...) / tokentrail.fallback(...): stamped with the owner, so the marks
# reach every LLM span made inside those scopes, in a task or not, ours or foreign.
RETRY_KEY = otel_context.create_key("tokentrail-retry")
FALLBACK_KEY = otel_context.create_key("tokentrail-fallback")

_EMPTY: Mapping[str, str] = MappingProxyType({})


def is_valid_value(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_VALUE_LENGTH
        and _VALUE_RE.fullmatch(value) is not None
    )


def validate_value(field: str, value: Any, *, api: str = "tokentrail.attribute") -> str:
    """Return ``value`` or raise a ValueError that says exactly what is wrong with it."""
    if is_valid_value(value):
        return value
    if not isinstance(value, str):
        problem = f"must be a string, got {type(value).__name__}"
    elif not value:
        problem = "must not be empty"
    elif len(value) > MAX_VALUE_LENGTH:
        problem = f"is {len(value)} characters long (at most {MAX_VALUE_LENGTH})"
    else:
        bad = sorted({c for c in value if not _VALUE_RE.fullmatch(c)})
        problem = f"contains {''.join(bad)!r} (allowed: {ALLOWED_CHARACTERS})"
    shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
    raise ValueError(f"{api}: {field}={shown!r} {problem}")


# --------------------------------------------------------------------------------------------
# the identity in the context
# --------------------------------------------------------------------------------------------
def local_identity(ctx: otel_context.Context | None = None) -> Mapping[str, str] | None:
    """The identity set by attribute()/task() in this process, or None."""
    return otel_context.get_value(_IDENTITY_KEY, ctx)


def current_identity(ctx: otel_context.Context | None = None) -> tuple[Mapping[str, str], str | None]:
    """(identity, rejection reason or None) for ``ctx``: local, else trusted inbound baggage."""
    local = otel_context.get_value(_IDENTITY_KEY, ctx)
    if local is not None:
        return local, None
    from tokentrail import propagation  # late: propagation imports this module

    return propagation.inbound_identity(ctx)


def enter_identity(updates: Mapping[str, str]) -> object:
    """Attach a context whose identity is the current one updated by ``updates``; returns the token.

    The baggage is rewritten to exactly the new identity (plus its signature when a secret is
    set): untrusted inbound entries are dropped here, so they are not forwarded either.
    """
    from tokentrail import propagation

    ctx = otel_context.get_current()
    base, _ = current_identity(ctx)
    identity = MappingProxyType({**base, **updates})
    ctx = propagation.baggage_with_identity(ctx, identity)
    ctx = otel_context.set_value(_IDENTITY_KEY, identity, ctx)
    return otel_context.attach(ctx)


def exit_identity(token: object) -> None:
    otel_context.detach(token)


def owner_span_attributes(context: otel_context.Context | None = None) -> dict[str, Any]:
    """The owner (and task) of ``context`` (default: the current one) as span attributes, for
    stamping on a span at start: the TOKENTRAIL_ATTRIBUTES defaults overlaid by the context.

    Never raises. Includes ``tokentrail.attribution.rejection`` when inbound attribution was
    ignored at the trust boundary, and the ``tokentrail.retry.attempt`` /
    ``tokentrail.fallback.from`` marks of enclosing ``retry()`` / ``fallback()`` scopes.
    """
    try:
        out: dict[str, Any] = config.static_attributes()
    except Exception:
        out = {}
    try:
        identity, rejection = current_identity(context)
        if identity:
            out.update(identity)
        if rejection is not None:
            out[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] = rejection
        attempt = otel_context.get_value(RETRY_KEY, context)
        if attempt:  # 0 = the first try: nothing to mark
            out[attr.TOKENTRAIL_RETRY_ATTEMPT] = attempt
        from_model = otel_context.get_value(FALLBACK_KEY, context)
        if from_model:
            out[attr.TOKENTRAIL_FALLBACK_FROM] = from_model
    except Exception:  # never hurt the app
        pass
    return out


def current_owner() -> dict[str, str]:
    """The current owner fields by keyword (``{"tenant": ..., ...}``), defaults included."""
    attrs = owner_span_attributes()
    return {field: attrs[name] for field, name in OWNER_FIELDS.items() if name in attrs}


# --------------------------------------------------------------------------------------------
# context manager + decorator machinery, shared with tokentrail.task
# --------------------------------------------------------------------------------------------
# What each entered scope must undo, per context: one shared ``with`` object (e.g. a module-level
# ``ACME = tokentrail.attribute(tenant="acme")``) may be entered by several threads or asyncio
# tasks at once, and each must undo its own entry.
_SCOPES: ContextVar[tuple] = ContextVar("tokentrail_scopes", default=())


class _Scope:
    """Base for objects usable as ``with`` / ``async with`` blocks and as decorators.

    Each decorated call enters a fresh copy (``_fresh()``), so a decorated function is safe to
    call concurrently and recursively.
    """

    def _push(self, entry: object) -> None:
        _SCOPES.set(_SCOPES.get() + ((self, entry),))

    def _pop(self) -> object | None:
        stack = _SCOPES.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] is self:
                _SCOPES.set(stack[:i] + stack[i + 1:])
                return stack[i][1]
        return None

    def _fresh(self) -> "_Scope":
        raise NotImplementedError

    def __enter__(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def __exit__(self, exc_type, exc, tb) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class attribute(_Scope):
    """Attribute everything inside to an owner; a context manager and a decorator.

    ::

        with tokentrail.attribute(tenant="acme", feature="summarize", user="u-42"):
            client.chat.completions.create(...)

        @tokentrail.attribute(feature="search")
        async def search(q): ...

    Nestable: an inner block overrides only the fields it sets. Values are validated here
    (1-128 characters of ``A-Za-z0-9._:@/+-``); a bad value raises ``ValueError`` at the
    call site instead of being silently mangled. ``None`` leaves a field as it is.
    """

    __slots__ = ("_updates",)

    def __init__(
        self,
        *,
        tenant: str | None = None,
        feature: str | None = None,
        team: str | None = None,
        user: str | None = None,
    ) -> None:
        updates: dict[str, str] = {}
        for field, value in (("tenant", tenant), ("feature", feature), ("team", team), ("user", user)):
            if value is not None:
                updates[OWNER_FIELDS[field]] = validate_value(field, value)
        self._updates: Mapping[str, str] = MappingProxyType(updates)

    def _fresh(self) -> "attribute":
        clone = attribute.__new__(attribute)
        clone._updates = self._updates
        return clone

    def __enter__(self) -> "attribute":
        self._push(enter_identity(self._updates))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        token = self._pop()
        if token is not None:
            exit_identity(token)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._updates.items())
        return f"tokentrail.attribute({fields})"


__all__ = [
    "attribute",
    "owner_span_attributes",
    "current_owner",
    "current_identity",
    "validate_value",
    "is_valid_value",
    "OWNER_FIELDS",
    "IDENTITY_KEYS",
]
