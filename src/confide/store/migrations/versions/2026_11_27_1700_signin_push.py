"""signin_push: second factor, sign-in limits, practice security settings, OIDC, Web Push

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
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
        "practice_security",
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("require_second_factor", sa.Boolean(), nullable=False),
        sa.Column("session_idle_minutes", sa.Integer(), nullable=False),
        sa.Column("members_may_use_oidc", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        _fk("practice_security", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("practice_id", name=op.f("pk_practice_security")),
    )
    op.create_table(
        "member_totp",
        sa.Column("member_id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("confirmed_at", UTC, nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        _fk("member_totp", "member_id", "members"),
        _fk("member_totp", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_totp")),
    )
    op.create_index(op.f("ix_member_totp_practice_id"), "member_totp", ["practice_id"])
    op.create_table(
        "recovery_codes",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("member_id", Id, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        _fk("recovery_codes", "member_id", "members"),
        _fk("recovery_codes", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_recovery_codes_code_hash")),
    )
    op.create_index("ix_recovery_codes_member", "recovery_codes", ["practice_id", "member_id"])
    op.create_table(
        "signin_challenges",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("member_id", Id, nullable=False),
        sa.Column("via", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        _fk("signin_challenges", "member_id", "members"),
        _fk("signin_challenges", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_signin_challenges")),
    )
    op.create_index(op.f("ix_signin_challenges_practice_id"), "signin_challenges", ["practice_id"])
    op.create_table(
        "signin_failures",
        sa.Column("id", Id, nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_failures")),
    )
    op.create_index("ix_signin_failures_key_at", "signin_failures", ["key", "at"])
    op.create_table(
        "oidc_requests",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("link_practice_id", Id, nullable=True),
        sa.Column("link_party_kind", sa.String(length=10), nullable=True),
        sa.Column("link_party_id", Id, nullable=True),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_oidc_requests")),
    )
    op.create_table(
        "oidc_identities",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("party_kind", sa.String(length=10), nullable=False),
        sa.Column("party_id", Id, nullable=False),
        sa.Column("issuer", sa.String(length=300), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_used_at", UTC, nullable=True),
        _fk("oidc_identities", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_identities")),
        sa.UniqueConstraint("issuer", "subject", name="uq_oidc_identities_sub"),
    )
    op.create_index(op.f("ix_oidc_identities_practice_id"), "oidc_identities", ["practice_id"])
    op.create_table(
        "push_subscriptions",
        sa.Column("id", Id, nullable=False),
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("party_kind", sa.String(length=10), nullable=False),
        sa.Column("party_id", Id, nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("endpoint_hash", sa.String(length=64), nullable=False),
        sa.Column("p256dh", sa.String(length=200), nullable=False),
        sa.Column("auth", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        _fk("push_subscriptions", "practice_id", "practices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint("endpoint_hash", name=op.f("uq_push_subscriptions_endpoint_hash")),
    )
    op.create_index(
        "ix_push_subscriptions_party",
        "push_subscriptions",
        ["practice_id", "party_kind", "party_id"],
    )
    op.create_table(
        "push_preferences",
        sa.Column("practice_id", Id, nullable=False),
        sa.Column("party_kind", sa.String(length=10), nullable=False),
        sa.Column("party_id", Id, nullable=False),
        sa.Column("push_type", sa.String(length=40), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _fk("push_preferences", "practice_id", "practices"),
        sa.PrimaryKeyConstraint(
            "practice_id", "party_kind", "party_id", "push_type", name=op.f("pk_push_preferences")
        ),
    )
    op.create_table(
        "job_cursors",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("leased_until", UTC, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_cursors")),
    )


def downgrade() -> None:
    for index, table in (
        ("ix_push_subscriptions_party", "push_subscriptions"),
        ("ix_oidc_identities_practice_id", "oidc_identities"),
        ("ix_signin_failures_key_at", "signin_failures"),
        ("ix_signin_challenges_practice_id", "signin_challenges"),
        ("ix_recovery_codes_member", "recovery_codes"),
        ("ix_member_totp_practice_id", "member_totp"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "job_cursors",
        "push_preferences",
        "push_subscriptions",
        "oidc_identities",
        "oidc_requests",
        "signin_failures",
        "signin_challenges",
        "recovery_codes",
        "member_totp",
        "practice_security",
    ):
        op.drop_table(table)
