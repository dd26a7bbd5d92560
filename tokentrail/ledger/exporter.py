"""``LedgerSpanExporter``: spans into the SQLite ledger, as ``OTEL_TRACES_EXPORTER=tokentrail_ledger``.

Use it behind a ``BatchSpanProcessor`` (the SDK configurator does): rows are built and
written on the processor's worker thread, one transaction per batch, never on the request
path. Failures are counted drops (``.dropped``), never exceptions.

It drops other instrumentations' duplicate LLM spans itself (``processor.dedup``, as
``CostSpanProcessor`` does), so a manual set-up without ``CostSpanProcessor`` still counts a
call once where dedup can tell at export; when another instrumentation's unpriced LLM span
reaches it (no ``CostSpanProcessor`` saw it), it says once that it cannot vouch for every
case, and how to fix the set-up, and from that batch on marks every LLM row
``tokentrail.unverified`` (``processor.exactness``).
"""

from __future__ import annotations

import logging
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tokentrail.ledger.rows import span_to_row
from tokentrail.ledger.writer import DEFAULT_BUSY_TIMEOUT_MS, LedgerWriter
from tokentrail.processor import dedup, exactness
from tokentrail.processor.sdk import enriched_copy, scope_name
from tokentrail.processor.usage import is_genai_call
from tokentrail.semconv import attributes as attr

_logger = logging.getLogger(__name__)


_NOT_BEHIND_COST_PROCESSOR = (
    "tokentrail ledger: LLM spans reach LedgerSpanExporter without CostSpanProcessor; it prices them and drops "
    "the duplicates it can tell at export, but cannot vouch for one row per call when several instrumentations "
    "instrument one SDK; its LLM rows are marked %s=%s. Fix: tracer_provider.add_span_processor("
    "CostSpanProcessor(BatchSpanProcessor(LedgerSpanExporter()))) (tokentrail.processor.cost), or run under "
    "opentelemetry-instrument.")


def _unpriced_foreign_call(span: ReadableSpan) -> bool:
    # Ours are priced before they end, and CostSpanProcessor prices the others.
    attributes = span.attributes or {}
    return attr.TOKENTRAIL_COST_STATUS not in attributes and is_genai_call(attributes)


def _marked(span: ReadableSpan) -> ReadableSpan:
    """``span``, or a copy with ``tokentrail.unverified`` when it is an LLM call the process
    cannot vouch for (the mark is stamped at start; this covers the spans started before)."""
    extra = exactness.mark(span.attributes) if is_genai_call(span.attributes) else None
    return enriched_copy(span, extra) if extra else span


class LedgerSpanExporter(SpanExporter):
    """Writes every span (tree and identity) and every LLM call's usage, cost and owner."""

    def __init__(self, path: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self._writer = LedgerWriter(path, busy_timeout_ms=busy_timeout_ms)
        self._bad_span_logged = False
        self._unseen_logged = False

    @property
    def path(self) -> str:
        return self._writer.path

    @property
    def written(self) -> int:
        return self._writer.written

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    @property
    def replaced(self) -> int:
        """Times the ledger file was found deleted or replaced and a new one started."""
        return self._writer.replaced

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            rows = []
            # Duplicates first: a span under one of them comes earlier in the batch.
            kept = [s for s in spans if not dedup.is_duplicate(s)]
            if not self._unseen_logged:
                self._check_behind_cost_processor(kept)
            for span in kept:
                try:
                    span = dedup.under_exported_parent(span)
                    if self._unseen_logged:
                        span = _marked(span)
                    rows.append(span_to_row(span))
                except Exception as exc:  # one odd span must not lose the batch
                    self._writer.dropped += 1
                    if not self._bad_span_logged:
                        self._bad_span_logged = True
                        _logger.warning("tokentrail ledger: skipping a span it cannot read (%r)", exc)
            ok = self._writer.write(rows)
        except Exception:  # never raise into the SDK's worker, whatever happens
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _check_behind_cost_processor(self, spans: Sequence[ReadableSpan]) -> None:
        for span in spans:
            if _unpriced_foreign_call(span):
                self._unseen_logged = True
                mark = exactness.note(exactness.LEDGER_WITHOUT_COST_PROCESSOR, scope_name(span) or "unknown")
                _logger.warning(_NOT_BEHIND_COST_PROCESSOR, attr.TOKENTRAIL_UNVERIFIED, mark)
                return

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
