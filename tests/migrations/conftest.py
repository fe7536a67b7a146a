"""Fixtures the migration test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config

from tests.support.migration_scripts import alembic_config


@pytest.fixture
def script(tmp_path: Path) -> Config:
    """A fresh copy of the two-revision Alembic script directory."""
    return alembic_config(tmp_path / "alembic")
