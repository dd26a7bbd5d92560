"""``LedgerSpanExporter``: spans into the SQLite ledger, as ``OTEL_TRACES_EXPORTER=tokentrail_ledger``.

Use it behind a ``BatchSpanProcessor`` (the SDK configurator does): rows are built and
written on the processor's worker thread, one transaction per batch, never on the request
path. Failures are counted drops (``.dropped``), never exceptions.
"""

from __future__ import annotations

import logging
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tokentrail.ledger.rows import span_to_row
from tokentrail.ledger.writer import DEFAULT_BUSY_TIMEOUT_MS, LedgerWriter

_logger = logging.getLogger(__name__)


class LedgerSpanExporter(SpanExporter):
    """Writes every span (tree and identity) and every LLM call's usage, cost and owner."""

    def __init__(self, path: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self._writer = LedgerWriter(path, busy_timeout_ms=busy_timeout_ms)
        self._bad_span_logged = False

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
            for span in spans:
                try:
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

    def shutdown(self) -> None:
        self._writer.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
