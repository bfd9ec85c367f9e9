"""data_exports, announcements and the audit-trail indexes (issue 7)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def upgrade() -> None:
    op.create_table(
        "data_exports",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("requested_by", Id, nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("clinician_id", Id, nullable=True),
        sa.Column("password_protected", sa.Boolean(), nullable=False),
        sa.Column("password", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("file_name", sa.String(length=200), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("messages", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("deleted_at", UTC, nullable=True),
        _fk("data_exports", "practice_id", "practices"),
        _fk("data_exports", "requested_by", "members"),
        _fk("data_exports", "clinician_id", "members"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_exports")),
    )
    with op.batch_alter_table("data_exports", schema=None) as batch_op:
        batch_op.create_index("ix_data_exports_practice", ["practice_id", "id"], unique=False)
        batch_op.create_index("ix_data_exports_status", ["status", "claimed_until"], unique=False)

    op.create_table(
        "announcements",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("author_id", Id, nullable=False),
        sa.Column("audience", sa.String(length=20), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        _fk("announcements", "practice_id", "practices"),
        _fk("announcements", "author_id", "members"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_announcements")),
    )
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.create_index("ix_announcements_practice", ["practice_id", "id"], unique=False)

    op.create_table(
        "announcement_recipients",
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("announcement_id", Id, nullable=False),
        sa.Column("client_id", Id, nullable=False),
        _fk("announcement_recipients", "practice_id", "practices"),
        _fk("announcement_recipients", "announcement_id", "announcements"),
        _fk("announcement_recipients", "client_id", "clients"),
        sa.PrimaryKeyConstraint(
            "announcement_id", "client_id", name=op.f("pk_announcement_recipients")
        ),
    )
    with op.batch_alter_table("announcement_recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_announcement_recipients_client", ["practice_id", "client_id"], unique=False
        )

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_log_actor", ["chain_id", "actor_kind", "actor_id", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_audit_log_action",
            ["chain_id", "action", "seq"],
            unique=False,
            postgresql_ops={"action": "varchar_pattern_ops"},
        )
        batch_op.create_index(
            "ix_audit_log_target", ["chain_id", "target_kind", "target_id", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_audit_log_target_kind", ["chain_id", "target_kind", "seq"], unique=False
        )
        batch_op.create_index("ix_audit_log_at", ["chain_id", "at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # The action family ("message" of "message.sent"): a prefix filter walks it in
        # seq order. PostgreSQL only (SQLite has no split_part); not in tables.py.
        op.execute(
            "CREATE INDEX ix_audit_log_action_family ON audit_log "
            "(chain_id, split_part(action, '.', 1), seq)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_audit_log_action_family")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        for name in (
            "ix_audit_log_at",
            "ix_audit_log_target_kind",
            "ix_audit_log_target",
            "ix_audit_log_action",
        ):
            batch_op.drop_index(name)
        batch_op.drop_index("ix_audit_log_actor")
    with op.batch_alter_table("announcement_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_announcement_recipients_client")
    op.drop_table("announcement_recipients")
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.drop_index("ix_announcements_practice")
    op.drop_table("announcements")
    with op.batch_alter_table("data_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_data_exports_status")
        batch_op.drop_index("ix_data_exports_practice")
    op.drop_table("data_exports")
