"""``tenancy_tenants.server``: the database server a tenant was placed on (f5f9931).

Nullable (NULL: the default server), indexed for counting tenants per server. Skipped when the
column is there already: the release that introduced this history made it with ``create_all``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "server" in {column["name"] for column in inspector.get_columns("tenancy_tenants")}:
        return
    op.add_column("tenancy_tenants", sa.Column("server", sa.String(64), nullable=True))
    op.create_index("ix_tenancy_tenants_server", "tenancy_tenants", ["server"])


def downgrade() -> None:
    op.drop_index("ix_tenancy_tenants_server", table_name="tenancy_tenants")
    op.drop_column("tenancy_tenants", "server")
