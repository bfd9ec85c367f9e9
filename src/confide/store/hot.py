"""The statements every send and every page runs, on the driver's cursor.

A send ran seven statements of its own (the token check, the conversation, the client
and the sender's grants; the sequence number, the message, the read marks) and a group
of sends about seven more (the practice, the audit chain, the outbox). Executed through
SQLAlchemy's `Connection.execute`, each paid about 60 µs on top of the database's own
work on the 2026-11-28 benchmark machine (a prebuilt select: 76-94 µs, the same on the
sqlite3 cursor 22 µs; docs/operations.md, "How a message is written"): the execution
context, the parameter dictionaries, the result object. That was about half of the
group committer's time per send.

`HotStatement` keeps the statement a Core construct (one place to read it, compiled by
SQLAlchemy for each dialect) but runs it the way a hand-written data layer would: the
SQL string and the order of its parameters are worked out once per dialect, the
parameters go through the same type processors SQLAlchemy would apply, and the rows come
back as named tuples with the same result processors. It runs inside the unit of
work's transaction (the same DBAPI connection), and a driver error comes out as
SQLAlchemy's exception (`IntegrityError`, `OperationalError`, …) with the connection
invalidated when the driver says it is gone, as `Connection.execute` would do, so the
callers and `database_unavailable` see no difference. What it does not do: fire engine
events (`before_cursor_execute`) or log the statement; expanding (IN-list) parameters
are refused when the statement is built.
"""

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import SelectBase

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    sql: str
    positional: bool
    names: tuple[str, ...]  # bind names, in the order of a positional driver
    binds: tuple[Processor, ...]  # per name
    fixed: dict[str, Any]  # the values of literals (`x + 1`): bound, not given
    row: Callable[..., Any] | None  # named tuple of the result columns
    results: tuple[Processor, ...]


class HotStatement:
    """A prebuilt statement (select, insert, update; with RETURNING or not) run on the
    cursor: `rows`, `one`, `one_or_none`, `scalar_one`, `scalar_one_or_none`,
    `scalars`, and `many` for executemany. Parameters are given by bind name."""

    def __init__(self, statement: SelectBase | UpdateBase) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is not None:
            return plan
        compiled = self.statement.compile(dialect=dialect)
        binds = compiled.binds
        if any(b.expanding for b in binds.values()):
            raise ValueError("HotStatement does not take expanding (IN-list) parameters")
        # A positional driver (sqlite3's ?) takes the values in the order they appear.
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(binds)
        fixed = {n: b.effective_value for n, b in binds.items() if not b.required}
        processors = tuple(
            binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
        )
        columns = list(self.statement.exported_columns)
        row = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None  # type: ignore[misc]
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        plan = self._plans[dialect.name] = _Plan(
            compiled.string, compiled.positional, names, processors, fixed, row, results
        )
        return plan

    def _parameters(self, plan: _Plan, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        given = {**plan.fixed, **params} if plan.fixed else params
        values = [
            given[n] if p is None else p(given[n])
            for n, p in zip(plan.names, plan.binds, strict=True)
        ]
        return values if plan.positional else dict(zip(plan.names, values, strict=True))

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement; its rows (none for a statement without results)."""
        dialect = conn.dialect
        plan = self._plan(dialect)
        args = self._parameters(plan, params)
        cursor = _cursor(conn)
        try:
            cursor.execute(plan.sql, args)
            raw = cursor.fetchall() if plan.row is not None else []
        except dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, plan.sql, exc, cursor) from exc
        finally:
            cursor.close()
        if plan.row is None:
            return []
        make, results = plan.row, plan.results
        if any(results):
            return [
                make(*(v if p is None else p(v) for v, p in zip(r, results, strict=True)))
                for r in raw
            ]
        return [make(*r) for r in raw]

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement (without results) once per row of parameters, in one call
        to the driver (executemany), in order."""
        if not rows:
            return
        plan = self._plan(conn.dialect)
        args = [self._parameters(plan, params) for params in rows]
        cursor = _cursor(conn)
        try:
            cursor.executemany(plan.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, plan.sql, exc, cursor) from exc
        finally:
            cursor.close()

    def one_or_none(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        rows = self.rows(conn, params)
        if len(rows) > 1:
            raise LookupError("more than one row where one or none was expected")
        return rows[0] if rows else None

    def one(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        rows = self.rows(conn, params)
        if len(rows) != 1:
            raise LookupError(f"{len(rows)} rows where exactly one was expected")
        return rows[0]

    def scalar_one(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        rows = self.rows(conn, params)
        if len(rows) != 1:
            raise LookupError(f"{len(rows)} rows where exactly one was expected")
        return rows[0][0]

    def scalar_one_or_none(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        row = self.one_or_none(conn, params)
        return None if row is None else row[0]

    def scalars(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        return [r[0] for r in self.rows(conn, params)]


def run_plain(conn: Connection, sql: str) -> None:
    """A statement without parameters or results (a group command's SAVEPOINT and
    RELEASE, store/uow.py) on the driver's cursor, with `HotStatement`'s error rules."""
    cursor = _cursor(conn)
    try:
        cursor.execute(sql)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, exc, cursor) from exc
    finally:
        cursor.close()


def _cursor(conn: Connection) -> Any:
    """A cursor inside the connection's transaction. `Connection.execute` begins one on
    its own when none is open (after a commit or a rollback, the unit of work goes on in
    a new one); a statement on the cursor would not, and then the unit of work's commit
    or rollback would not reach it (SQLite would commit each statement alone, PostgreSQL
    would leave it in a transaction nobody commits). So begin it here, as SQLAlchemy
    would (on SQLite the "begin" event issues BEGIN IMMEDIATE or DEFERRED)."""
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _wrapped(conn: Connection, sql: str, exc: Any, cursor: Any) -> StatementError:
    """The driver's error as SQLAlchemy raises it from `Connection.execute`; a lost
    connection is invalidated (the pool replaces it) and says so."""
    dialect = conn.dialect
    gone = dialect.is_disconnect(exc, conn.connection.driver_connection, cursor)
    if gone:
        conn.invalidate(exc)
    wrapped: StatementError = DBAPIError.instance(
        sql,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=gone,
        dialect=dialect,
    )
    return wrapped
