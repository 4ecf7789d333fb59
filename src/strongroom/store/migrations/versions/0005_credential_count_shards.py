"""credential counts split into shards, so concurrent creates of one owner and type do not queue on one row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counts_table(*, sharded: bool) -> None:
    """(Re)create the derived counts table and fill it from the credentials (all in shard 0)."""
    op.drop_table("credential_counts")
    shard = [sa.Column("shard", sa.Integer(), nullable=False, server_default="0")] if sharded else []
    op.create_table(
        "credential_counts",
        sa.Column("owner_id", sa.String(length=24), nullable=False),
        sa.Column("credential_type", sa.String(length=64), nullable=False),
        *shard,
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id", "credential_type", *(["shard"] if sharded else [])),
    )
    op.execute(
        "INSERT INTO credential_counts (owner_id, credential_type, n) "
        "SELECT owner_id, credential_type, count(*) FROM credentials GROUP BY owner_id, credential_type"
    )


def upgrade() -> None:
    _counts_table(sharded=True)


def downgrade() -> None:
    _counts_table(sharded=False)
