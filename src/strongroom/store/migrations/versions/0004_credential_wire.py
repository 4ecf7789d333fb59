"""credentials.wire: the credential's API JSON, rendered at write time so reads need not rebuild it

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wire", sa.Text(), nullable=True))
    credentials = sa.table(
        "credentials",
        *(sa.column(name) for name in ("id", "name", "credential_type", "description", "public_data", "wire")),
        sa.column("created_at", sa.DateTime()),
    )
    columns = [credentials.c[n] for n in ("id", "name", "credential_type", "description", "public_data", "created_at")]
    conn = op.get_bind()
    after = ""
    while True:
        rows = conn.execute(
            sa.select(*columns).where(credentials.c.id > after).order_by(credentials.c.id).limit(_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            credentials.update().where(credentials.c.id == sa.bindparam("target")).values(wire=sa.bindparam("w")),
            [{"target": row[0], "w": render_wire(tuple(row))} for row in rows],
        )
        after = rows[-1][0]


def render_wire(row: Sequence[Any]) -> str:
    """The credential's API JSON as this revision defined it (frozen here: migrations import nothing from the
    application, whose rendering may change later)."""
    credential_id, name, credential_type, description, public_data, created_at = row
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    out = {
        "credentialId": credential_id,
        "name": name,
        "credentialType": credential_type,
        "description": description or "",
        "creationDate": created_at.isoformat(timespec="microseconds")[:26] + "Z",
    }
    if public_data and public_data != "{}":
        out.update(json.loads(public_data))
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def downgrade() -> None:
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_column("wire")
