"""The embedded SQLite cost ledger: an exporter that writes spans, and the queries the CLI runs.

``OTEL_TRACES_EXPORTER=tokentrail_ledger`` (alone or with ``otlp``) writes to
``TOKENTRAIL_LEDGER`` (default ``./tokentrail.db``).
"""

from tokentrail.ledger.exporter import LedgerSpanExporter
from tokentrail.ledger.schema import SCHEMA_VERSION, LedgerError, LedgerTooNew
from tokentrail.ledger.writer import LedgerWriter, default_path

__all__ = ["LedgerSpanExporter", "LedgerWriter", "LedgerError", "LedgerTooNew", "SCHEMA_VERSION", "default_path"]
