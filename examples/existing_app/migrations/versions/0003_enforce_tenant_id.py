"""Step 3 of adopting row isolation: tenant_id NOT NULL, once `tenants adopt` gave every row one.

Stops with a message naming the table if any row still has no tenant.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from fastapi_tenancy.migrations.ops import enforce_tenant_column, relax_tenant_column

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TENANT_TABLES = ("customers", "invoices")


def upgrade() -> None:
    for table in TENANT_TABLES:
        enforce_tenant_column(op, table)


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        relax_tenant_column(op, table)
