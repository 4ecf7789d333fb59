"""credential access: each user's role on the credentials shared with them, derived and kept in step

`credential_access` holds, per user and credential they do not own, the highest role given to them directly or
through a group, whether any of those rows may share, and the credential's creation time; the sharing
repository rewrites the affected rows in the transaction that changes a role or a membership. Filled here from
the roles and memberships already stored.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILL = (
    "INSERT INTO credential_access (user_id, credential_id, role, can_share, created_at) "
    "SELECT g.uid, g.cid, max(g.role), max(CASE WHEN g.share THEN 1 ELSE 0 END) > 0, c.created_at FROM ("
    "SELECT recipient_id AS uid, credential_id AS cid, role, can_share AS share FROM credential_roles "
    "WHERE recipient_type = 'user' UNION ALL "
    "SELECT m.user_id, r.credential_id, r.role, r.can_share FROM credential_roles r "
    "JOIN group_members m ON m.group_id = r.recipient_id WHERE r.recipient_type = 'group'"
    ") g JOIN credentials c ON c.id = g.cid JOIN users u ON u.id = g.uid "
    "WHERE c.owner_id <> g.uid GROUP BY g.uid, g.cid, c.created_at"
)


def upgrade() -> None:
    op.create_table(
        "credential_access",
        sa.Column("user_id", sa.String(length=24), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "credential_id",
            sa.String(length=24),
            sa.ForeignKey("credentials.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.Integer(), nullable=False),
        sa.Column("can_share", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_credential_access_page", "credential_access", ["user_id", "created_at", "credential_id", "role"]
    )
    op.execute(_FILL)


def downgrade() -> None:
    op.drop_table("credential_access")
