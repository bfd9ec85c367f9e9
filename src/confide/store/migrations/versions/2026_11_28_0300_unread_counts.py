"""conversation_participants.unread_count: MS7's count kept with the row it depends on

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 03:00:00

The unread count of a participant (messages after their read position, sent by others,
not removed) was counted over the messages each time it was asked for: every page, every
list, every red bubble and every batch of real-time frames paid for it, in proportion to
the unread messages. It is now kept on the participant row, moved by the writes that
change it (store/repos/conversations.py), and filled in here from the messages.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
UPDATE conversation_participants SET unread_count = (
    SELECT count(*) FROM messages m
    WHERE m.practice_id = conversation_participants.practice_id
      AND m.conversation_id = conversation_participants.conversation_id
      AND m.seq > conversation_participants.last_read_seq
      AND m.removed_at IS NULL
      AND NOT (m.sender_kind = conversation_participants.party_kind
               AND m.sender_id = conversation_participants.party_id)
)
"""


def upgrade() -> None:
    with op.batch_alter_table("conversation_participants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unread_count", sa.Integer(), server_default="0", nullable=False)
        )
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("conversation_participants", schema=None) as batch_op:
        batch_op.drop_column("unread_count")
