"""The database: engine, dialect options, the key ring, and unit-of-work factory.

SQLite (the embedded default) runs in WAL mode with one writer at a time: write
transactions take an in-process lock and `BEGIN IMMEDIATE`, so writers queue instead
of failing with "database is locked"; readers never block. PostgreSQL runs with
READ COMMITTED and row locks (`FOR UPDATE`) where order matters.
"""

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry

from confide.store.crypto import KeyRing

# SQLite: one pooled connection per thread that may use one at once (the 40 worker
# threads of anyio's default limiter, the group committer, the background loops). A
# connection is only a file handle, but a new one runs the PRAGMAs below and reads the
# schema again: with 10 kept (the PostgreSQL default, where connections are the server's
# processes), a burst of socket opens made and dropped connections all the time; 40 kept
# made 2,000 sockets go live in 13 s instead of 22 (docs/benchmarks.md).
SQLITE_POOL = 40
POSTGRES_POOL = 10
# A new SQLite connection's first statement has twice failed in CI with "disk I/O error"
# (`PRAGMA journal_mode=WAL`, in the real-time tests: many pooled connections and live
# sockets in one process; cause not found, never reproduced in isolation). It is tried
# again this many times, logged with SQLite's extended code; a real disk fault still
# raises.
SQLITE_SETUP_ATTEMPTS = 3

log = logging.getLogger(__name__)


def sqlite_connection_setup(dbapi_conn: Any, busy_timeout_ms: int) -> None:
    """The PRAGMAs of every new SQLite connection (see `SQLITE_SETUP_ATTEMPTS`)."""
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    for attempt in range(1, SQLITE_SETUP_ATTEMPTS + 1):
        try:
            _sqlite_pragmas(dbapi_conn, busy_timeout_ms)
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0)
            if attempt == SQLITE_SETUP_ATTEMPTS or code & 0xFF != sqlite3.SQLITE_IOERR:
                raise
            log.warning(
                "a new SQLite connection's setup failed (%s, attempt %d); trying again",
                getattr(exc, "sqlite_errorname", "SQLITE_IOERR"),
                attempt,
            )
            time.sleep(0.05 * attempt)


def _sqlite_pragmas(dbapi_conn: Any, busy_timeout_ms: int) -> None:
    cur = dbapi_conn.cursor()
    try:
        # First: another process's write lock (a backup, `sqlite3` at the console) is
        # waited for this long, then the request gets 503 `database_unavailable` (T39).
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # WAL is kept in the file once set: only a new database is switched to it.
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged, power cuts included
        # (docs/operations.md, "Durability"); the group commit pays one fsync per
        # group of sends, not per send.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def make_engine(url: str, *, pool_size: int | None = None, busy_timeout_ms: int = 10_000) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, pool_size=pool_size or SQLITE_POOL, max_overflow=20, pool_pre_ping=False
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            sqlite_connection_setup(dbapi_conn, busy_timeout_ms)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            mode = "IMMEDIATE" if conn.info.get("write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url, pool_size=pool_size or POSTGRES_POOL, max_overflow=20, pool_pre_ping=True
    )


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not do the work now, rather than that the
    work was wrong: connection refused, ended (`pg_terminate_backend`, a restart) or
    invalidated; a database that accepts no connections; SQLite locked beyond
    `busy_timeout`, read-only or full; no pooled connection free in time.

    The request's transaction was not committed as far as the server knows (a COMMIT
    cut off in flight may have been; the idempotency key settles that on the retry), so
    the answer is 503 with Retry-After, never an acknowledgement and never a 500
    (web/errors.py). The pool checks a connection before handing it out again
    (`pool_pre_ping`), so the next request reconnects on its own.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError)


class Database:
    def __init__(self, engine: Engine, keys: KeyRing) -> None:
        self.engine = engine
        self.keys = keys
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock()

    @contextmanager
    def connection(self, *, write: bool) -> Iterator[Connection]:
        """A connection inside one transaction; the caller commits or it rolls back."""
        if self.is_sqlite and write:
            self._write_lock.acquire()
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = write
                conn.begin()
                try:
                    yield conn
                finally:
                    # `get_transaction`, not `in_transaction`: a transaction that failed
                    # (the server went away mid-statement) is no longer active but must
                    # still be rolled back, or the next use of the connection, even
                    # reading its `info`, raises PendingRollbackError over the real error.
                    if conn.get_transaction() is not None:
                        conn.rollback()
                    conn.info.pop("write", None)
        finally:
            if self.is_sqlite and write:
                self._write_lock.release()

    def dispose(self) -> None:
        self.engine.dispose()
