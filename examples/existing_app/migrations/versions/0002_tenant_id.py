"""Step 1 of adopting row isolation: a nullable tenant_id (and its index) on the tenant tables.

Existing rows get NULL, which no tenant sees, until `fastapi-tenancy tenants adopt` gives them to
the first tenant. `plans` stays shared: no column.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from fastapi_tenancy.migrations.ops import add_tenant_column, drop_tenant_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TENANT_TABLES = ("customers", "invoices")


def upgrade() -> None:
    for table in TENANT_TABLES:
        add_tenant_column(op, table)


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        drop_tenant_column(op, table)
