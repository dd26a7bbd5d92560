"""The embedded SQLite cost ledger: an exporter that writes spans, and the queries the CLI runs.

``OTEL_TRACES_EXPORTER=tokentrail_ledger`` (alone or with ``otlp``) writes to
``TOKENTRAIL_LEDGER`` (default ``./tokentrail.db``).
"""

from typing import Any

from tokentrail.ledger.schema import SCHEMA_VERSION, LedgerError, LedgerTooNew
from tokentrail.ledger.writer import LedgerWriter, default_path

__all__ = ["LedgerSpanExporter", "LedgerWriter", "LedgerError", "LedgerTooNew", "SCHEMA_VERSION", "default_path"]


def __getattr__(name: str) -> Any:
    # The exporter pulls in the OTel SDK; the CLI's queries do not need it (faster start-up).
    if name == "LedgerSpanExporter":
        from tokentrail.ledger.exporter import LedgerSpanExporter

        return LedgerSpanExporter
    raise AttributeError(name)
