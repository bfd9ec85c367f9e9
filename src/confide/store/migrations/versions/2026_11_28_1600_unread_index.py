"""conversation_participants: a partial index of the rows with something unread

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 16:00:00

A party's unread totals (the red bubble; the real-time hub's unread frames, for every
receiver of a batch) read the party's participant rows with `unread_count > 0`. Through
`ix_participants_party` that is every conversation the party ever had (~170 each for
the members of the benchmark's practice: 0.78 ms for 20 parties); this index holds only
the rows with something unread (0.02 ms). docs/operations.md, "Query plans on SQLite".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNREAD_WHERE = "unread_count > 0"  # as store/tables.py says it


def upgrade() -> None:
    op.create_index(
        "ix_participants_unread",
        "conversation_participants",
        ["practice_id", "party_kind", "party_id"],
        sqlite_where=sa.text(UNREAD_WHERE),
        postgresql_where=sa.text(UNREAD_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_participants_unread", table_name="conversation_participants")
