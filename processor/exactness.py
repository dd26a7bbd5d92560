"""What tokentrail cannot vouch for: the one rule behind ``tokentrail.unverified``.

Where tokentrail detects a set-up in which it cannot guarantee one LLM span per billed call,
the detector warns once (with the fix) and calls ``note(reason)``. From then on ``reason()``
is the mark of every LLM call span of the process: stamped with the owner at span start
(``processor.attribution.owner_stamp``), and on the rows the ledger exporter prices itself.
The mark is process-wide: what cannot be vouched for is the set-up, not one call.

Reasons, ``KIND:DETAIL`` (several are joined by ``;`` in the order they were found):

- ``defer_shared_sdk:SDK[,SDK...]``: ``TOKENTRAIL_COEXISTENCE=defer`` and two or more other
  instrumentations of one SDK (nothing can tell their spans of one call apart);
- ``foreign_tracer_provider:TYPE``: the global TracerProvider is not the OpenTelemetry SDK's
  (tokentrail cannot see its processors, so cannot drop duplicate spans or price them);
- ``ledger_without_cost_processor:SCOPE``: another instrumentation's (``SCOPE``) unpriced
  LLM span reached ``LedgerSpanExporter`` with no ``CostSpanProcessor`` in front (dedup at
  export cannot tell every duplicate).

Imports only semconv and state; ``tokentrail.state.reset()`` forgets every reason.
"""

from __future__ import annotations

import threading
from typing import Any

from tokentrail.semconv import attributes as attr
from tokentrail.state import register_reset

DEFER_SHARED_SDK = "defer_shared_sdk"
FOREIGN_TRACER_PROVIDER = "foreign_tracer_provider"
LEDGER_WITHOUT_COST_PROCESSOR = "ledger_without_cost_processor"
KINDS = (DEFER_SHARED_SDK, FOREIGN_TRACER_PROVIDER, LEDGER_WITHOUT_COST_PROCESSOR)

_lock = threading.Lock()
_reasons: list[str] = []
_mark: str | None = None  # ";".join(_reasons): read on every LLM span start, so kept ready


def note(kind: str, detail: str) -> str:
    """Record a set-up tokentrail cannot vouch for; returns the reason as it is stamped.
    ``kind`` is one of ``KINDS``; the same reason noted twice counts once."""
    global _mark
    if kind not in KINDS:
        raise ValueError(f"unknown unverified kind {kind!r} (one of {', '.join(KINDS)})")
    found = f"{kind}:{detail}"
    with _lock:
        if found not in _reasons:
            _reasons.append(found)
            _mark = ";".join(_reasons)
    return found


def reason() -> str | None:
    """``tokentrail.unverified`` for an LLM call span now: None while tokentrail can vouch."""
    return _mark


def mark(attributes: Any) -> dict[str, str]:
    """The attribute to add to an LLM call span with ``attributes`` ({} when vouched for, or
    when it carries a mark already)."""
    found = _mark
    if found is None or attr.TOKENTRAIL_UNVERIFIED in (attributes or {}):
        return {}
    return {attr.TOKENTRAIL_UNVERIFIED: found}


@register_reset
def _forget() -> None:
    global _mark
    with _lock:
        _reasons.clear()
        _mark = None
