"""One LLM span per call at export: other instrumentations' spans of a call ours covers.

When a tokentrail instrumentor covers a call, its span is that call's LLM span; another
instrumentation's span of the same call (recognised structurally: a span from another scope
describing one model call, ``is_genai_call(strict=True)``: ``chat``, ``embeddings``...,
never ``invoke_agent`` or ``execute_tool``) is dropped by ``CostSpanProcessor`` through
``is_duplicate``:

- theirs inside ours: a descendant of our span (``on_start`` marks spans below ours);
- theirs outside ours: ours starts under their parent (``parent_context_for_our_span``) and
  theirs is marked shadowed, and so is a wrapper between theirs and ours that is not current
  (its parent is shadowed); a wrapper that does not make its span current is recognised
  at export as a foreign call span for the same model whose time span contains one of ours.

A span whose parent is dropped (the HTTP span under their span inside ours) is exported under
the nearest ancestor that is not (``under_exported_parent``), so the trace keeps its shape.

Everything here is cheap (set lookups) and never raises.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from tokentrail.processor.sdk import enriched_copy, scope_name
from tokentrail.processor.usage import is_genai_call, normalise_model_id
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo, BoundedSet, register_reset

_log = logging.getLogger(__name__)

_OUR_SCOPE_PREFIX = "tokentrail"
_CAPACITY = 8192


_ours = BoundedSet(_CAPACITY)  # span ids of our LLM spans (recent)
_shadowed = BoundedSet(_CAPACITY)  # span ids of foreign call spans that ours replaced
_covered = BoundedSet(_CAPACITY)  # span ids started below one of our LLM spans (at any depth)
# Other instrumentations' spans still open (removed as they end), to walk up a chain of
# wrappers around ours. A plain dict: a weak one costs several times more per span.
_live: dict[int, Any] = {}
_live_lock = threading.Lock()
_LIVE_CAPACITY = 4096  # spans that never end are forgotten oldest first
# Dropped duplicates' parents (SpanContext or None), for their children that end after them.
_dropped: dict[int, Any] = {}

# Our recently ended LLM spans by model: (start, end, trace id, has parent), for foreign spans
# that wrap ours without becoming the current span (OpenLLMetry's google-genai wrapper).
_RECENT_PER_MODEL = 256
_recent: dict[str, deque] = {}
_recent_lock = threading.Lock()


def is_foreign_call_span(span: Any) -> bool:
    """A span of another instrumentation that surely describes one model call."""
    try:
        if scope_name(span).startswith(_OUR_SCOPE_PREFIX):
            return False
        return is_genai_call(getattr(span, "attributes", None), strict=True)
    except Exception:
        return False


def parent_context_for_our_span() -> otel_context.Context | None:
    """The context to start our LLM span in, or None for the current one.

    When the current span is another instrumentation's span of this very call (its wrapper
    runs outside ours), ours replaces it: it is marked for dropping, and ours starts under its
    parent; up a chain of such wrappers (several instrumentations stacked) to the first span
    that is not one.
    """
    try:
        current = trace.get_current_span()
        if not current.is_recording() or not is_foreign_call_span(current):
            return None
        parent = None
        for _ in range(8):  # a handful of stacked wrappers at most
            _shadowed.add(current.get_span_context().span_id)
            parent = getattr(current, "parent", None)
            above = _live.get(parent.span_id) if parent is not None else None
            if above is None or not is_foreign_call_span(above):
                break
            current = above
        stand_in = trace.NonRecordingSpan(parent) if parent is not None else trace.INVALID_SPAN
        return trace.set_span_in_context(stand_in)
    except Exception:
        _log.debug("tokentrail: coexistence parent lookup failed", exc_info=True)
        return None


def on_start(span: Any) -> None:
    """Every span as it starts (``CostSpanProcessor.on_start``): spans below ours are covered;
    other instrumentations' open spans are kept (weakly) for the wrapper walk above."""
    try:
        span_id = span.get_span_context().span_id
        parent = span.parent
        if parent is not None and (parent.span_id in _ours or parent.span_id in _covered):
            _covered.add(span_id)
        if not scope_name(span).startswith(_OUR_SCOPE_PREFIX):
            _live[span_id] = span
            _forget_oldest(_live)
    except Exception:
        _log.debug("tokentrail: coexistence on_start failed", exc_info=True)


def register_ours(span: Any) -> None:
    """Remember one of our LLM spans, so another instrumentation's child span of it is dropped."""
    try:
        context = span.get_span_context()
        if context.is_valid:
            _ours.add(context.span_id)
    except Exception:
        _log.debug("tokentrail: coexistence register failed", exc_info=True)


def _forget_oldest(table: dict) -> None:
    if len(table) > _LIVE_CAPACITY:
        with _live_lock:
            while len(table) > _LIVE_CAPACITY:
                table.pop(next(iter(table)), None)


_model_keys: BoundedMemo[Any, str] = BoundedMemo(1024)  # a model id's normal form (a regex), once


def _model_key(attributes: Any) -> str | None:
    # Other instrumentations spell Bedrock ids without the region and vendor prefixes.
    model = attributes.get(attr.GEN_AI_REQUEST_MODEL) or attributes.get(attr.GEN_AI_RESPONSE_MODEL)
    if not isinstance(model, str):
        return normalise_model_id(model) or None
    return _model_keys.get(model, normalise_model_id) or None


def ours_ended(span: Any, attributes: Any, start_ns: int, end_ns: int) -> None:
    """One of our recording LLM spans is ending (``LLMCall.end``, before ``span.end``): remembered
    by model, for a foreign span that wraps it without becoming the current span."""
    try:
        key = _model_key(attributes)
        if key is None:
            return
        entry = (start_ns, end_ns, span.get_span_context().trace_id, span.parent is not None)
        with _recent_lock:
            found = _recent.get(key)
            if found is None:
                if len(_recent) >= _CAPACITY:
                    _recent.clear()
                found = _recent[key] = deque(maxlen=_RECENT_PER_MODEL)
            found.append(entry)
    except Exception:
        _log.debug("tokentrail: coexistence remember failed", exc_info=True)


def _wraps_one_of_ours(span: Any) -> bool:
    """A foreign call span whose time span contains one of ours for the same model, in the
    same trace (or both trace roots): the outer wrapper of the same SDK call."""
    key = _model_key(span.attributes or {})
    found = _recent.get(key) if key else None
    if not found or span.start_time is None or span.end_time is None:
        return False
    start, end, trace_id, has_parent = span.start_time, span.end_time, span.context.trace_id, span.parent is not None
    for o_start, o_end, o_trace, o_parent in tuple(found):
        if start <= o_start and o_end <= end and (o_trace == trace_id or not (has_parent or o_parent)):
            return True
    return False


def is_duplicate(span: Any) -> bool:
    """At export (any ended span): another instrumentation's span of a call one of our spans
    already covers. Asking twice about a span gives the same answer (one CostSpanProcessor per
    exporter, then the ledger)."""
    try:
        if scope_name(span).startswith(_OUR_SCOPE_PREFIX):
            return False
        span_id = span.context.span_id
        _live.pop(span_id, None)
        if span_id in _dropped:
            return True
        if not is_foreign_call_span(span) or not _replaced(span_id, span.parent, span):
            return False
        _dropped[span_id] = span.parent
        _forget_oldest(_dropped)
        return True
    except Exception:
        return False


def _replaced(span_id: int, parent: Any, span: Any) -> bool:
    if span_id in _shadowed or span_id in _covered:
        return True
    # A direct child of ours, or a wrapper between a shadowed span and ours that was not current.
    if parent is not None and (parent.span_id in _ours or parent.span_id in _shadowed):
        return True
    return _wraps_one_of_ours(span)


def under_exported_parent(span: Any) -> Any:
    """``span``, or a copy of it under its nearest exported ancestor (None: a root) when its
    parent is (or will be, once it ends) dropped as a duplicate. Set lookups only for almost
    every span."""
    try:
        parent = span.parent
        if parent is None:
            return span
        parent_id = parent.span_id
        if parent_id not in _covered and parent_id not in _shadowed and parent_id not in _dropped:
            return span
        moved = False
        for _ in range(8):  # a handful of stacked wrappers at most
            if parent_id in _dropped:
                parent = _dropped[parent_id]
            else:
                live = _live.get(parent_id)
                if live is None or not is_foreign_call_span(live):
                    break
                if not (parent_id in _covered or parent_id in _shadowed):
                    break
                parent = live.parent
            moved = True
            if parent is None:
                break
            parent_id = parent.span_id
        return enriched_copy(span, {}, parent=parent) if moved else span
    except Exception:
        return span


@register_reset
def _reset() -> None:
    _live.clear()
    _dropped.clear()
    with _recent_lock:
        _recent.clear()
