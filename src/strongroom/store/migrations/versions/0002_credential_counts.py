"""credential counts per owner and type, for a totalCount that does not scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credential_counts",
        sa.Column("owner_id", sa.String(length=24), nullable=False),
        sa.Column("credential_type", sa.String(length=64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id", "credential_type"),
    )
    op.execute(
        "INSERT INTO credential_counts (owner_id, credential_type, n) "
        "SELECT owner_id, credential_type, count(*) FROM credentials GROUP BY owner_id, credential_type"
    )


def downgrade() -> None:
    op.drop_table("credential_counts")
