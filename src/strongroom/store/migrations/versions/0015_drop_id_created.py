"""drop ix_credentials_id_created: shared lists page `credential_access` (0014), not credentials by id

The (id, created_at, credential_type) index let a shared list choose its page from ids and creation times; since
0014 that page comes from `credential_access` in index order, so the index only cost every create a b-tree
insert.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_credentials_id_created", table_name="credentials")


def downgrade() -> None:
    op.create_index("ix_credentials_id_created", "credentials", ["id", "created_at", "credential_type"])
