"""Read side of the ledger: the questions the CLI answers, as plain data (dicts and lists).

One module per question, as ``tokentrail.cli`` has one command per question: ``report``, ``top``,
``tenants``, ``trace``; ``common`` holds the opened ledger, periods and fields they share.
Rendering (tables, CSV, JSON) lives in ``tokentrail.cli``.
"""

from tokentrail.ledger.queries.common import (
    FIELDS, LedgerNotFound, Period, QueryError, check_fields, parse_time, parse_where,
)
from tokentrail.ledger.queries.report import ReportQuery
from tokentrail.ledger.queries.tenants import TenantsQuery
from tokentrail.ledger.queries.top import TopQuery
from tokentrail.ledger.queries.trace import TraceQuery


class Ledger(ReportQuery, TopQuery, TenantsQuery, TraceQuery):
    """A ledger opened for queries (migrated if it is older; refused if it is newer), answering
    ``report``, ``top``, ``tenants`` and ``trace``."""


__all__ = ["Ledger", "Period", "FIELDS", "LedgerNotFound", "QueryError", "check_fields", "parse_time", "parse_where"]
