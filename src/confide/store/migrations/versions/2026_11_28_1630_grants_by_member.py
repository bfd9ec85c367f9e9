"""client_access_grants: an index by member

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 16:30:00

The access rule loads a member's grants (a clinician with basic access reaches the
clients assigned or granted to them, PM2) on every send and page of such a member. The
table's key starts with the client, so that read walked every grant of the practice;
this index reads the member's own. docs/operations.md, "Query plans on SQLite".
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_client_access_grants_member",
        "client_access_grants",
        ["practice_id", "member_id", "client_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_client_access_grants_member", table_name="client_access_grants")
