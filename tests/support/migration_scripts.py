"""A real Alembic script directory for the tests: revision 1 creates ``items``, 2 adds ``note``;
both can be downgraded."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import MetaData

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.migrations import MigrationReport
from tests.support.backends import isolation_config

FIRST = "a1000000001"
SECOND = "a1000000002"

ENV_PY = """\
from fastapi_tenancy.migrations import run_migrations

run_migrations(target_metadata=None)
"""

FIRST_PY = f"""\
import sqlalchemy as sa
from alembic import op

revision = "{FIRST}"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("items")
"""

SECOND_PY = f"""\
import sqlalchemy as sa
from alembic import op

revision = "{SECOND}"
down_revision = "{FIRST}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("note", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "note")
"""


def alembic_config(folder: Path) -> Config:
    """A Config for a fresh script directory in ``folder`` with the two revisions."""
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY, encoding="utf-8")
    (folder / "versions" / f"{FIRST}_items.py").write_text(FIRST_PY, encoding="utf-8")
    (folder / "versions" / f"{SECOND}_note.py").write_text(SECOND_PY, encoding="utf-8")
    config = Config()
    config.set_main_option("script_location", str(folder))
    return config


# The strategies that migrate tenant by tenant, on the servers that run them.
PER_TENANT = [
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
]
per_tenant = pytest.mark.parametrize("isolation_case", PER_TENANT, indirect=True)


def empty_config(case: tuple[str, str]) -> TenancyConfig:
    """Alembic owns the tables: provisioning creates the schema or database and nothing in it."""
    return isolation_config(case, tenant_metadata=MetaData(), tenant_tables="none")


def outcomes(report: MigrationReport) -> dict[str | None, str]:
    return {migration.identifier: migration.outcome for migration in report.migrations}
