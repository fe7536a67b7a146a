"""env.py's `run_migrations` refuses to run where it cannot target a tenant."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.exc import OperationalError

from fastapi_tenancy.migrations import MigrationError
from fastapi_tenancy.migrations.errors import describe_error, url_passwords
from tests.support.migration_scripts import alembic_config


def test_offline_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="offline mode"):
        command.upgrade(alembic_config(tmp_path / "alembic"), "head", sql=True)


def test_env_py_outside_the_runner_says_how_to_run_it(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match=r"fastapi_tenancy\.migrations\.upgrade"):
        command.upgrade(alembic_config(tmp_path / "alembic"), "head")


def test_error_descriptions_never_show_a_password() -> None:
    url = "postgresql+asyncpg://app:s3cret-pw@db.example:5432/tenant_acme"
    exc = OperationalError("connect", {}, Exception(f"cannot reach {url}"))

    described = describe_error(exc, url_passwords([url, None, "{database}"]))

    assert described.startswith("OperationalError: ")
    assert "s3cret-pw" not in described
    assert "***" in described
    assert "Background on this error" not in described
