"""Query functions, scoped by practice. Repos never commit: the unit of work does."""

from sqlalchemy import ColumnElement
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression


def scope_only(column: QueryableAttribute[int]) -> ColumnElement[int]:
    """`column` (a lookup's practice scope) as a filter only, never as the way in.

    A lookup by key names the practice too (every query does: tables.py). On SQLite,
    whose planner has no statistics here (nothing runs ANALYZE), an equality on the
    first column of an index is guessed to match about ten rows, and it chose the
    practice's index over the key: `practice_id = ? AND id IN (…)` walked every index
    entry of the practice (the real-time hub's 40 messages of a batch: 21 ms in a
    practice of 116,000 messages, 0.06 ms by key), and so did a conversation's
    participants on every send (20.7 ms a send in a practice of 20,000 conversations,
    0.89 ms by the conversation's index). The unary plus is SQLite's documented way to
    keep a term out of the choice of index; PostgreSQL reads it as the identity and
    plans from its statistics.
    tests/integration/test_query_plans.py holds the plans."""
    element = column.expression
    return UnaryExpression(element, operator=operators.custom_op("+"), type_=element.type)
