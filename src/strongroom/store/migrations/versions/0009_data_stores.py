"""data stores: external databases (no secrets), their roles, and credential associations

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_stores",
        sa.Column("id", sa.String(length=24), primary_key=True),
        sa.Column("owner_id", sa.String(length=24), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("store_type", sa.String(length=32), nullable=False),
        sa.Column("canonical_name", sa.String(length=255), nullable=False),
        sa.Column("driver_id", sa.String(length=24), nullable=True),
        sa.Column("jdbc_url", sa.Text(), nullable=True),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_data_stores_owner", "data_stores", ["owner_id", "canonical_name"])
    op.create_table(
        "data_store_roles",
        sa.Column(
            "data_store_id",
            sa.String(length=24),
            sa.ForeignKey("data_stores.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("recipient_type", sa.String(length=8), primary_key=True),
        sa.Column("recipient_id", sa.String(length=24), primary_key=True),
        sa.Column("role", sa.Integer(), nullable=False),
        sa.Column("can_share", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_data_store_roles_recipient", "data_store_roles", ["recipient_type", "recipient_id", "data_store_id"]
    )
    op.create_table(
        "credential_associations",
        sa.Column(
            "credential_id",
            sa.String(length=24),
            sa.ForeignKey("credentials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("object_type", sa.String(length=32), primary_key=True),
        sa.Column("object_id", sa.String(length=24), primary_key=True),
        sa.Column("user_id", sa.String(length=24), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_credential_associations_object", "credential_associations", ["object_type", "object_id", "user_id"]
    )


def downgrade() -> None:
    op.drop_table("credential_associations")
    op.drop_table("data_store_roles")
    op.drop_table("data_stores")
