"""``tenancy_domains``: the custom host names of each tenant (4971a62)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

UTC_DATETIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("tenancy_domains"):
        return
    op.create_table(
        "tenancy_domains",
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenancy_tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host", name="pk_tenancy_domains"),
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_tenancy_domains_tenant_id", "tenancy_domains", ["tenant_id"])


def downgrade() -> None:
    # Its indexes go with it (MariaDB refuses to drop the foreign key's index on its own).
    op.drop_table("tenancy_domains")
