"""credentials.seal_generation: bumped at every re-seal and bound into the seal, so an older ciphertext no longer opens

Existing rows get 0 (sealed before generations existed); the server re-seals them at its next start and then
records in `store_state` that it has, after which a generation-0 seal is refused (it can only be a rollback).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seal_generation", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "store_state",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("store_state")
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_column("seal_generation")
