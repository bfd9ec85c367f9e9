"""jobs, email links, link sessions, notifications and their settings (issues 5, 6)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
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
        "jobs",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=True),
        sa.Column("run_after", UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTC, nullable=True),
        sa.Column("locked_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("done_at", UTC, nullable=True),
        sa.Column("failed_at", UTC, nullable=True),
        sa.Column("last_error", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_jobs_dedupe_key")),
    )
    op.create_index("ix_jobs_due", "jobs", ["done_at", "run_after"])
    op.create_table(
        "link_tokens",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("purpose", sa.String(30), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("party_kind", sa.String(10), nullable=False),
        sa.Column("party_id", Id, nullable=False),
        sa.Column("conversation_id", Id, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("revoked_at", UTC, nullable=True),
        _fk("link_tokens", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_link_tokens_token_hash")),
    )
    op.create_index(
        "ix_link_tokens_party", "link_tokens", ["practice_id", "party_kind", "party_id"]
    )
    op.create_table(
        "link_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("link_id", Id, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        _fk("link_sessions", "practice_id", "practices"),
        sa.ForeignKeyConstraint(
            ["link_id"], ["link_tokens.id"], name=op.f("fk_link_sessions_link_id_link_tokens")
        ),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_link_sessions")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("party_kind", sa.String(10), nullable=False),
        sa.Column("party_id", Id, nullable=False),
        sa.Column("channel", sa.String(30), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(10), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        _fk("notifications", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "practice_id",
            "conversation_id",
            "party_kind",
            "party_id",
            "channel",
            "streak",
            name="uq_notifications_streak",
        ),
    )
    op.create_table(
        "member_notification_prefs",
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("member_id", Id, nullable=False),
        sa.Column("email_new_messages", sa.Boolean(), nullable=False),
        _fk("member_notification_prefs", "practice_id", "practices"),
        _fk("member_notification_prefs", "member_id", "members"),
        sa.PrimaryKeyConstraint(
            "practice_id", "member_id", name=op.f("pk_member_notification_prefs")
        ),
    )
    op.create_table(
        "practice_notification_settings",
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("name_practice", sa.Boolean(), nullable=False),
        _fk("practice_notification_settings", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("practice_id", name=op.f("pk_practice_notification_settings")),
    )
    op.create_table(
        "sign_in_requests",
        sa.Column("id", Id, nullable=False),
        sa.Column("purpose", sa.String(30), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("ip_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_requests")),
    )
    op.create_index("ix_sign_in_requests_ip", "sign_in_requests", ["ip_hash", "created_at"])
    op.create_index("ix_sign_in_requests_email", "sign_in_requests", ["email_hash", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_in_requests_email", table_name="sign_in_requests")
    op.drop_index("ix_sign_in_requests_ip", table_name="sign_in_requests")
    op.drop_table("sign_in_requests")
    op.drop_table("practice_notification_settings")
    op.drop_table("member_notification_prefs")
    op.drop_table("notifications")
    op.drop_table("link_sessions")
    op.drop_index("ix_link_tokens_party", table_name="link_tokens")
    op.drop_table("link_tokens")
    op.drop_index("ix_jobs_due", table_name="jobs")
    op.drop_table("jobs")
