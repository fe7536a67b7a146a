"""Add projects.done."""

import sqlalchemy as sa
from alembic import op

revision = "v2_project_done"
down_revision = "v1_projects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "projects", sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("projects", "done")
