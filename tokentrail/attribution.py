"""Who owns the work in progress: ``tokentrail.attribute(...)`` and ``owner_span_attributes()``.

The owner follows the OpenTelemetry context (asyncio tasks, ``contextvars.copy_context``,
``tokentrail.wrap`` for threads) and its baggage (other processes, see ``tokentrail.trust``).
Precedence per field: the innermost ``attribute()``/``task()`` > inbound baggage (when
trusted) > the static per-process defaults of ``TOKENTRAIL_ATTRIBUTES``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from opentelemetry import context as otel_context

from tokentrail import config, identity, trust
from tokentrail.identity import OWNER_FIELDS, validate_value
from tokentrail.scope import Scope
from tokentrail.semconv import attributes as attr


def current_identity(ctx: otel_context.Context | None = None) -> tuple[Mapping[str, str], str | None]:
    """(identity, rejection reason or None) for ``ctx``: the local one, else trusted inbound baggage."""
    local = identity.local_identity(ctx)
    if local is not None:
        return local, None
    return trust.inbound_identity(ctx)


def enter_identity(updates: Mapping[str, str]) -> object:
    """Attach a context whose identity is the current one updated by ``updates``; returns the token.

    The baggage is rewritten to exactly the new identity (plus its signature when a secret is
    set): untrusted inbound entries are dropped here, so they are not forwarded either.
    """
    ctx = otel_context.get_current()
    base, _ = current_identity(ctx)
    updated = MappingProxyType({**base, **updates})
    entries = trust.identity_baggage(ctx, updated)  # the baggage_with_identity entries, in the same copy
    return otel_context.attach(identity.with_identity(
        updated, ctx, None if entries is None else (trust.BAGGAGE_KEY, entries)))


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
        ctx = context if context is not None else otel_context.get_current()  # looked up once, read thrice
        owner, rejection = current_identity(ctx)
        attempt, from_model = identity.marks(ctx)
        if owner:
            out.update(owner)
        if rejection is not None:
            out[attr.TOKENTRAIL_ATTRIBUTION_REJECTION] = rejection
        if attempt:  # 0 = the first try: nothing to mark
            out[attr.TOKENTRAIL_RETRY_ATTEMPT] = attempt
        if from_model:
            out[attr.TOKENTRAIL_FALLBACK_FROM] = from_model
    except Exception:  # never hurt the app
        pass
    return out


def current_owner() -> dict[str, str]:
    """The current owner by keyword (``{"tenant": "acme", "team": "support"}``), defaults included."""
    attrs = owner_span_attributes()
    return {field: attrs[name] for field, name in OWNER_FIELDS.items() if name in attrs}


class attribute(Scope):
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
                updates[OWNER_FIELDS[field]] = validate_value(field, value, api="tokentrail.attribute")
        self._updates: Mapping[str, str] = MappingProxyType(updates)

    def _fresh(self) -> "attribute":
        clone = attribute.__new__(attribute)
        clone._updates = self._updates
        return clone

    def __enter__(self) -> "attribute":
        self._push(enter_identity(self._updates))  # self._apply(None), one call less
        return self

    def _apply(self, entry: Any) -> object:
        return enter_identity(self._updates)

    def _undo(self, token: Any, exc: BaseException | None) -> None:
        otel_context.detach(token)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._updates.items())
        return f"tokentrail.attribute({fields})"


__all__ = ["attribute", "owner_span_attributes", "current_owner"]
