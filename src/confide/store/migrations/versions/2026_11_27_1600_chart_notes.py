"""chart_notes: messages copied from a client's transcript into their record (TR2)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chart_notes",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("client_id", Id, nullable=False),
        sa.Column("created_by", Id, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"], ["practices.id"], name=op.f("fk_chart_notes_practice_id_practices")
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_chart_notes_client_id_clients")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["members.id"], name=op.f("fk_chart_notes_created_by_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chart_notes")),
    )
    with op.batch_alter_table("chart_notes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_chart_notes_client", ["practice_id", "client_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("chart_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_chart_notes_client")
    op.drop_table("chart_notes")
