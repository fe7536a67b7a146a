"""Baseline: the central tables as the release before this history had them (802037b).

``tenancy_tenants`` (with ``provisioning_attempts``) and ``tenancy_audit`` (without
``record_id``). Databases made before the history have these tables already: each is created
only when missing, so a database ``create_all`` made is upgraded in place, its rows kept.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Stored UTC with microseconds (the store's UTCDateTime, as it was at this revision).
UTC_DATETIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "tenancy_tenants" not in existing:
        op.create_table(
            "tenancy_tenants",
            sa.Column("id", sa.String(64), nullable=False),
            sa.Column("identifier", sa.String(63), nullable=False),
            sa.Column("name", sa.String(255), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("metadata", sa.JSON(), nullable=False),
            sa.Column("created_at", UTC_DATETIME, nullable=False),
            sa.Column("updated_at", UTC_DATETIME, nullable=False),
            sa.Column("deleted_at", UTC_DATETIME, nullable=True),
            sa.Column("storage_name", sa.String(64), nullable=True),
            sa.Column("database_url", sa.Text(), nullable=True),
            sa.Column("provisioning_attempts", sa.Integer(), server_default="0", nullable=False),
            sa.PrimaryKeyConstraint("id", name="pk_tenancy_tenants"),
            sa.UniqueConstraint("identifier", name="uq_tenancy_tenants_identifier"),
            sa.UniqueConstraint("storage_name", name="uq_tenancy_tenants_storage_name"),
            mysql_charset="utf8mb4",
        )
        op.create_index("ix_tenancy_tenants_status", "tenancy_tenants", ["status"])
    if "tenancy_audit" not in existing:
        op.create_table(
            "tenancy_audit",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("tenant_id", sa.String(64), nullable=False),
            sa.Column("tenant", sa.String(63), nullable=False),
            sa.Column("action", sa.String(32), nullable=False),
            sa.Column("actor", sa.String(255), nullable=True),
            sa.Column("path", sa.String(2048), nullable=True),
            sa.Column("status", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            mysql_charset="utf8mb4",
        )
        op.create_index("ix_tenancy_audit_at", "tenancy_audit", ["at"])
        op.create_index("ix_tenancy_audit_tenant_id", "tenancy_audit", ["tenant_id"])


def downgrade() -> None:
    # The baseline holds every tenant record: undoing it would lose them all.
    raise NotImplementedError("the baseline of the central tables cannot be downgraded")
