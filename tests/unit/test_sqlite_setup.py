"""Every new SQLite connection's setup (store/db.py): WAL, FULL sync, foreign keys and a
busy timeout; a transient "disk I/O error" on it is tried again, anything else is not."""

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from confide.store.db import SQLITE_SETUP_ATTEMPTS, make_engine, sqlite_connection_setup


def _error(name: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("disk I/O error" if code & 0xFF == 10 else name)
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    return exc


class FailingConnection:
    """A real connection whose first `fail` statements raise `error`."""

    def __init__(self, path: Path, error: sqlite3.OperationalError, fail: int) -> None:
        self.real = sqlite3.connect(path)
        self.error, self.fail, self.statements = error, fail, 0
        self.isolation_level: str | None = ""

    def cursor(self) -> Any:
        outer = self

        class Cursor:
            def __init__(self) -> None:
                self.cur = outer.real.cursor()

            def execute(self, sql: str) -> Any:
                outer.statements += 1
                if outer.fail > 0:
                    outer.fail -= 1
                    raise outer.error
                return self.cur.execute(sql)

            def close(self) -> None:
                self.cur.close()

        return Cursor()


def test_a_new_connection_is_in_wal_with_full_sync_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", busy_timeout_ms=1234)
    try:
        for _ in range(2):  # the database's first connection, then one that finds WAL set
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
                assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL
                assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
                assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 1234
            engine.dispose()
    finally:
        engine.dispose()


def test_a_disk_io_error_in_a_new_connections_setup_is_tried_again_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    shm = _error("SQLITE_IOERR_SHMMAP", 10 | (21 << 8))
    conn = FailingConnection(tmp_path / "b.db", shm, fail=SQLITE_SETUP_ATTEMPTS - 1)
    with caplog.at_level(logging.WARNING, logger="confide.store.db"):
        sqlite_connection_setup(conn, 500)
    assert conn.isolation_level is None
    assert conn.real.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.real.execute("PRAGMA busy_timeout").fetchone()[0] == 500
    assert [r.getMessage() for r in caplog.records] == [
        f"a new SQLite connection's setup failed (SQLITE_IOERR_SHMMAP, attempt {n}); trying again"
        for n in range(1, SQLITE_SETUP_ATTEMPTS)
    ]


def test_a_lasting_disk_io_error_still_raises(tmp_path: Path):
    conn = FailingConnection(tmp_path / "c.db", _error("SQLITE_IOERR", 10), fail=100)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        sqlite_connection_setup(conn, 500)
    assert conn.statements == SQLITE_SETUP_ATTEMPTS


def test_other_errors_in_a_new_connections_setup_are_not_tried_again(tmp_path: Path):
    conn = FailingConnection(tmp_path / "d.db", _error("SQLITE_BUSY", 5), fail=1)
    with pytest.raises(sqlite3.OperationalError, match="SQLITE_BUSY"):
        sqlite_connection_setup(conn, 500)
    assert conn.statements == 1
