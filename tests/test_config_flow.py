"""Configuration flows one way: the operations layer reads plain settings, never the config."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.pool import QueuePool

from fastapi_tenancy import Tenancy, TenancyConfig

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fastapi_tenancy"

# The modules that work on a built Tenancy and read `tenancy.settings.operations`.
OPERATIONS_LAYER = [
    "migrations/runner.py",
    "migrations/status.py",
    "migrations/targets.py",
    "adoption.py",
    *(f"transfer/{path.name}" for path in sorted((PACKAGE / "transfer").glob("*.py"))),
]


def _config_reads(source: str) -> list[str]:
    """Imports of the config or the wiring (other than the settings type), and ``*.config``
    read on a runtime, in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "fastapi_tenancy.config":
            found.append(f"line {node.lineno}: imports fastapi_tenancy.config")
        if isinstance(node, ast.ImportFrom) and node.module == "fastapi_tenancy._wiring":
            names = {alias.name for alias in node.names} - {"OperationsSettings"}
            if names:
                found.append(f"line {node.lineno}: imports {sorted(names)} from _wiring")
        if isinstance(node, ast.ImportFrom) and node.module == "fastapi_tenancy":
            if any(alias.name in ("_wiring", "TenancyConfig") for alias in node.names):
                found.append(f"line {node.lineno}: imports the config or the wiring")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "config"
            and ast.unparse(node.value).endswith("tenancy")
        ):
            found.append(f"line {node.lineno}: reads {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("module", OPERATIONS_LAYER)
def test_operations_module_reads_no_config(module: str) -> None:
    assert _config_reads((PACKAGE / module).read_text(encoding="utf-8")) == []


def test_the_check_finds_a_runtime_config_read() -> None:
    source = "from fastapi_tenancy import _wiring\ndef f(tenancy):\n    return tenancy.config.x\n"
    assert len(_config_reads(source)) == 2


def test_operations_settings_carry_the_configured_values(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    config = TenancyConfig(
        database_url=url,
        isolation_strategy="database",
        database_url_template="postgresql+asyncpg://app:s3cret-pw@127.0.0.1/{database}",
        database_pool_size=7,
        database_pool_timeout=12.5,
    )
    operations = Tenancy(config).settings.operations
    assert operations.isolation_strategy == "database"
    assert operations.database_url == url
    assert operations.database_url_template == config.database_url_template
    assert operations.concurrency == 7
    # A one-connection engine per tenant database, with the central pool's timeout.
    engine = operations.engine("postgresql+asyncpg://app@127.0.0.1/tenant_db")
    try:
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.size() == 1
        assert engine.pool._max_overflow == 0
        assert engine.pool._timeout == 12.5
    finally:
        engine.sync_engine.dispose()
    assert "s3cret-pw" not in repr(operations)
