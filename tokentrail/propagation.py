"""Carrying the trace, its owner and its task across hops.

* ``inject(headers)`` / ``extract(headers)``: W3C ``traceparent`` + ``baggage`` for any
  message broker's headers (str or bytes keys/values); ``consuming(headers)`` attaches the
  extracted context for a block.
* ``wrap(fn)``: run ``fn`` in the caller's context on another thread (a plain
  ``threading.Thread`` starts with an empty context; ``ThreadPoolExecutor.submit`` too).
* ``environ()`` / ``attach_from_environ()``: ``TRACEPARENT`` / ``BAGGAGE`` for a subprocess.
* ``span_headers(span, headers_of)``: an SDK's propagation headers of its call's span, the
  W3C baggage header encoded once per set of entries (the owner's, the same for many calls).

What arrives is believed only as ``tokentrail.trust`` says.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, MutableMapping, TypeVar

from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator

from tokentrail.state import BoundedMemo
from tokentrail.trust import BAGGAGE_KEY, baggage_entries

_log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_BAGGAGE = W3CBaggagePropagator()
_ENV_NAMES = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> MutableMapping[str, Any]:
    """Write ``traceparent`` (+ ``tracestate``) and ``baggage`` of ``context`` (default: the
    current one) into ``headers`` and return them. Never raises."""
    try:
        propagate.inject(headers, context=context)
        if "baggage" not in headers:  # the configured propagators may leave baggage out
            _BAGGAGE.inject(headers, context=context)
    except Exception:
        _log.debug("tokentrail: inject failed", exc_info=True)
    return headers


def extract(headers: Mapping[Any, Any] | None, context: Context | None = None) -> Context:
    """The context carried by ``headers`` (str or bytes keys/values, any case), on top of
    ``context`` (default: an empty one). Never raises.

    Attach it around the consumer's work (``with tokentrail.consuming(headers):`` does both).
    """
    try:
        carrier = {_text(k).lower(): _text(v) for k, v in (headers or {}).items()}
        ctx = propagate.extract(carrier, context=context)
        if "baggage" in carrier and not baggage.get_all(ctx):
            ctx = _BAGGAGE.extract(carrier, context=ctx)
        return ctx
    except Exception:
        _log.debug("tokentrail: extract failed", exc_info=True)
        return context if context is not None else Context()


@contextmanager
def attached(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` current for the block."""
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)


@contextmanager
def consuming(headers: Mapping[Any, Any] | None) -> Iterator[Context]:
    """``with consuming(message.headers):`` = attach ``extract(headers)`` for the block."""
    with attached(extract(headers)) as ctx:
        yield ctx


def wrap(fn: F) -> F:
    """Bind ``fn`` to the current context, for ``threading.Thread(target=wrap(fn))`` or an
    executor: the owner, the task and the parent span follow it into the other thread."""
    ctx = otel_context.get_current()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return bound  # type: ignore[return-value]


def span_headers(span: Any, headers_of: Callable[[Any], dict[str, str]]) -> dict[str, str]:
    """``headers_of(span)``, an SDK's "the propagation headers of ``span`` in the current context,
    from the global propagator (nothing should it fail)", with the W3C baggage propagator's
    header remembered per set of str entries: the same headers, without quoting every entry
    on every call. A global propagator that is neither a W3C baggage propagator nor a composite
    of propagators is left to ``headers_of``."""
    propagators = _global_propagators()
    if propagators is None:
        return headers_of(span)
    context = trace.set_span_in_context(span)
    carrier: dict[str, str] = {}
    try:
        for propagator in propagators:  # as CompositePropagator.inject runs them
            if type(propagator) is W3CBaggagePropagator:
                _inject_baggage(propagator, carrier, context)
            else:
                propagator.inject(carrier, context)
    except Exception:
        return headers_of(span)
    return carrier


def _global_propagators() -> tuple[Any, ...] | None:
    global _last_textmap
    textmap = propagate.get_global_textmap()
    last = _last_textmap
    if last[0] is textmap:
        return last[1]
    found = getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else (textmap,)
    if not isinstance(found, (list, tuple)) or not any(type(p) is W3CBaggagePropagator for p in found):
        found = None  # nothing to remember: the SDK's own path
    else:
        found = tuple(found)
    _last_textmap = (textmap, found)
    return found


# the global propagator last seen and what it runs (set at start-up; a new one is a new object)
_last_textmap: tuple[Any, tuple[Any, ...] | None] = (None, None)


_HEADER = "baggage"  # the W3C Baggage header
# baggage entries (str keys and values) -> the W3C propagator's header for them (None: none)
_baggage_headers: BoundedMemo[tuple, str | None] = BoundedMemo(1024)


def _inject_baggage(propagator: W3CBaggagePropagator, carrier: dict[str, str], context: Context) -> None:
    entries = baggage_entries(context)
    if not entries:
        return  # as the propagator: no header
    items = tuple(entries.items())
    if not all(type(k) is str and type(v) is str for k, v in items):
        propagator.inject(carrier, context)
        return
    header = _baggage_headers.get(items, _baggage_header)
    if header is not None:
        carrier[_HEADER] = header  # as the propagator's default setter writes it


def _baggage_header(items: tuple) -> str | None:
    """The W3C baggage propagator's own header for these entries."""
    carrier: dict[str, str] = {}
    _BAGGAGE.inject(carrier, otel_context.set_value(BAGGAGE_KEY, dict(items), Context()))
    return carrier.get(_HEADER)


def environ(context: Context | None = None) -> dict[str, str]:
    """``{"TRACEPARENT": ..., "BAGGAGE": ...}`` of ``context`` for a child process's environment."""
    carrier: dict[str, str] = {}
    inject(carrier, context)
    return {k.upper(): v for k, v in carrier.items() if k.upper() in _ENV_NAMES}


def attach_from_environ(env: Mapping[str, str] | None = None) -> object | None:
    """In a child process: make the parent's context (``TRACEPARENT``/``BAGGAGE``) current.

    Returns the attach token, or None when the environment carries no context.
    """
    source = os.environ if env is None else env
    carried = {k.lower(): v for k, v in source.items() if k in _ENV_NAMES}
    if "traceparent" not in carried and "baggage" not in carried:
        return None
    return otel_context.attach(extract(carried))


__all__ = ["inject", "extract", "consuming", "attached", "wrap", "environ", "attach_from_environ", "span_headers"]
