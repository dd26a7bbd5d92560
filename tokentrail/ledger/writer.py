"""Batched, failure-tolerant writes to the ledger.

One transaction per batch with ``executemany``. Every SQLite failure (locked file, full
disk, read-only or corrupt database, newer schema) becomes counted drops and one log line
per kind of failure: the ledger must never raise into the application that feeds it. A row
SQLite cannot take (an integer beyond int64) costs only itself: the batch is then written row
by row. A ledger file deleted or replaced while the process runs is noticed before the next
batch (logged once), and a fresh ledger is opened at the path instead of writing into the
unlinked file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from typing import Iterable, Sequence

from tokentrail.ledger.schema import COLUMNS, LedgerError, connect

_logger = logging.getLogger(__name__)

DEFAULT_PATH = "tokentrail.db"
#: How long a write waits for another process's transaction before giving up on the batch.
DEFAULT_BUSY_TIMEOUT_MS = 5000

#: Errors of one row's values (binding, constraints), not of the database: the other rows can still go in.
_ROW_ERRORS = (OverflowError, sqlite3.InterfaceError, sqlite3.IntegrityError, sqlite3.ProgrammingError, ValueError,
               TypeError)

_INSERT = f"INSERT OR IGNORE INTO spans ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def default_path() -> str:
    """``TOKENTRAIL_LEDGER`` or ``./tokentrail.db``."""
    return os.environ.get("TOKENTRAIL_LEDGER") or DEFAULT_PATH


class LedgerWriter:
    """Appends span rows; thread-safe; opens the database lazily on first write."""

    def __init__(self, path: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = path or default_path()
        self.busy_timeout_ms = busy_timeout_ms
        self.written = 0
        self.dropped = 0
        self.replaced = 0  # times the file was found deleted or replaced and a new ledger started
        self._conn: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None  # (device, inode) of the file the connection has open
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._closed = False
        # A SQLite connection must not cross fork() (pre-forking web servers): the child opens its own.
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forget_connection(ref))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._file_id() != self._inode:
            self.replaced += 1
            _logger.warning("tokentrail ledger %s: the file was deleted or replaced while open; starting a new "
                            "ledger at the path (the rows of the old file are gone with it)", self.path)
            self._reset()
        if self._conn is None:
            self._conn = connect(self.path, busy_timeout_ms=self.busy_timeout_ms)
            self._inode = self._file_id()
        return self._conn

    def _file_id(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def write(self, rows: Sequence[tuple] | Iterable[tuple]) -> bool:
        """Write one batch in one transaction; False (and the rows counted as dropped) on failure."""
        rows = list(rows)
        if not rows:
            return True
        with self._lock:
            if self._closed:
                self._drop(len(rows), "closed", "ledger writer is shut down")
                return False
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    try:
                        conn.executemany(_INSERT, rows)
                    except _ROW_ERRORS:
                        conn.execute("ROLLBACK")
                        conn.execute("BEGIN IMMEDIATE")
                        rows = self._rows_one_by_one(conn, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, LedgerError, OSError) as exc:
                self._drop(len(rows), type(exc).__name__ + str(getattr(exc, "sqlite_errorcode", "")), exc)
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                    self._reset()  # corrupt or not a database: reopen next time
                return False
            except Exception as exc:  # a bad row must not take the exporter down
                self._drop(len(rows), type(exc).__name__, exc)
                return False
            self.written += len(rows)
            return True

    def _rows_one_by_one(self, conn: sqlite3.Connection, rows: list[tuple]) -> list[tuple]:
        """Insert each row on its own (in the open transaction); the written ones."""
        written = []
        for row in rows:
            try:
                conn.execute(_INSERT, row)
            except _ROW_ERRORS as exc:
                self._drop(1, "row:" + type(exc).__name__, f"a row it cannot store: {exc}")
            else:
                written.append(row)
        return written

    def _drop(self, count: int, kind: str, reason: object) -> None:
        self.dropped += count
        if kind not in self._logged:
            self._logged.add(kind)
            _logger.warning(
                "tokentrail ledger %s: dropping spans (%s); further drops of this kind are only counted",
                self.path,
                reason,
            )

    def _reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
            self._inode = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reset()


def _forget_connection(ref: "weakref.ref[LedgerWriter]") -> None:
    writer = ref()
    if writer is not None:
        writer._conn = None  # not closed: the parent still owns it
        writer._lock = threading.Lock()
