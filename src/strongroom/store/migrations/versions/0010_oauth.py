"""oauth: admin-managed OAuth providers (client secret sealed) and `oauth` credentials' refreshed token state

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_providers",
        sa.Column("id", sa.String(length=24), primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False, unique=True),
        sa.Column("token_url", sa.Text(), nullable=False),
        sa.Column("client_id", sa.String(length=1024), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("seal_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "oauth_token_states",
        sa.Column(
            "credential_id",
            sa.String(length=24),
            sa.ForeignKey("credentials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("source_generation", sa.Integer(), nullable=False),
        sa.Column("seal_generation", sa.Integer(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("token_type", sa.String(length=64), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=False),
        sa.Column("reauth_at", sa.DateTime(), nullable=True),
        sa.Column("reauth_error", sa.String(length=64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("oauth_token_states")
    op.drop_table("oauth_providers")
