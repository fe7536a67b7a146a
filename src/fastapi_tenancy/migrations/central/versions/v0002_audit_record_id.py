"""``tenancy_audit.record_id``: the id that makes a re-sent audit record a no-op (a70fe11).

Nullable: rows written before the column existed have none. Skipped when the audit writer of a
release before this history added it already.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("tenancy_audit")}
    if "record_id" in columns:
        return
    op.add_column("tenancy_audit", sa.Column("record_id", sa.String(32), nullable=True))
    op.create_index("ux_tenancy_audit_record_id", "tenancy_audit", ["record_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_tenancy_audit_record_id", table_name="tenancy_audit")
    op.drop_column("tenancy_audit", "record_id")
