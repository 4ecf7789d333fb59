"""access control and audit: admins and disabled users, groups, credential roles, a hash-chained audit log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_SHARDS = 32  # frozen here: the chains the audit log starts with


def upgrade() -> None:
    # Plain ADD COLUMN (never a table rebuild: rebuilding `users` on SQLite would cascade-delete its tokens).
    op.add_column("users", sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(), nullable=True))
    # Whether the user may see credentials beyond their own (a direct share or a group membership): lists of
    # users without any take the owner-only path.
    op.add_column("users", sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("api_tokens", sa.Column("last_used_at", sa.DateTime(), nullable=True))
    op.create_table(
        "groups",
        sa.Column("id", sa.String(length=24), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(length=24), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(length=24), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_group_members_user", "group_members", ["user_id", "group_id"])
    op.create_table(
        "credential_roles",
        sa.Column(
            "credential_id",
            sa.String(length=24),
            sa.ForeignKey("credentials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("recipient_type", sa.String(length=8), primary_key=True),
        sa.Column("recipient_id", sa.String(length=24), primary_key=True),
        sa.Column("role", sa.Integer(), nullable=False),
        sa.Column("can_share", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_credential_roles_recipient", "credential_roles", ["recipient_type", "recipient_id", "credential_id"]
    )
    # Lists of users with shares choose their page from ids and creation times alone (see _shared_page).
    op.create_index("ix_credentials_id_created", "credentials", ["id", "created_at", "credential_type"])
    op.create_table(
        "audit_log",
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("credential_id", sa.String(length=24), nullable=True),
        sa.Column("owner_id", sa.String(length=24), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at", "shard", "seq"])
    op.create_index("ix_audit_log_credential", "audit_log", ["credential_id", "at"])
    op.create_index("ix_audit_log_owner", "audit_log", ["owner_id", "at"])
    heads = op.create_table(
        "audit_heads",
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    )
    op.bulk_insert(heads, [{"shard": shard, "seq": 0, "hash": "0" * 64} for shard in range(AUDIT_SHARDS)])


def downgrade() -> None:
    op.drop_table("audit_heads")
    op.drop_table("audit_log")
    op.drop_table("credential_roles")
    op.drop_index("ix_credentials_id_created", table_name="credentials")
    op.drop_table("group_members")
    op.drop_table("groups")
    # Native DROP COLUMN (SQLite 3.35+): a batch rebuild of `users` would cascade-delete its tokens.
    dropped = (("api_tokens", "last_used_at"), ("users", "shared"), ("users", "disabled_at"), ("users", "is_admin"))
    for table, column in dropped:
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
