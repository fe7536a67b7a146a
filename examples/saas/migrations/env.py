"""Alembic environment: fastapi-tenancy hands over each tenant's connection and schema."""

from examples.saas.models import Base

from fastapi_tenancy.migrations import run_migrations

run_migrations(target_metadata=Base.metadata)
