"""The slow-query log: slow statements logged with tenant and text, never parameters; counted."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.observe.slowquery import SlowQueryLog
from tests.support.backends import isolation_config
from tests.support.models import Base

LOGGER = "fastapi_tenancy.slow_query"


def slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


def counted_slow_queries(tenancy: Tenancy, tenant: str | None = None) -> float:
    assert tenancy.metrics is not None
    assert tenancy.metrics.registry is not None
    labels = {} if tenant is None else {"tenant": tenant}
    found = tenancy.metrics.registry.get_sample_value("fastapi_tenancy_slow_queries_total", labels)
    return 0.0 if found is None else found


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_slow_statement_is_logged_with_tenant_and_text_but_never_parameters(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"s3cret-{secrets.token_hex(8)}"
    config = TenancyConfig(
        database_url=database_url,
        tenant_metadata=Base.metadata,
        slow_query_threshold_ms=100,
        enable_metrics=True,
        metrics_tenant_label=True,
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        async with tenancy.session("acme") as session:
            # pg_sleep(0.3) lasts at least 300 ms, whatever the machine: above the threshold.
            await session.execute(
                text("SELECT pg_sleep(0.3), CAST(:secret AS text) AS secret"), {"secret": secret}
            )
        slow = [record for record in slow_records(caplog) if "pg_sleep" in record.getMessage()]
        assert len(slow) == 1
        record = slow[0]
        assert record.levelno == logging.WARNING
        assert "tenant acme" in record.getMessage()
        assert "SELECT pg_sleep(0.3), CAST($1 AS text) AS secret" in record.getMessage()
        assert getattr(record, "duration_ms", 0) >= 300
        for logged in caplog.records:
            assert secret not in logged.getMessage()
            assert secret not in str(logged.__dict__)
        assert tenancy.slow_queries is not None
        assert tenancy.slow_queries.count >= 1
        assert counted_slow_queries(tenancy, "acme") == 1


async def test_statements_under_the_threshold_are_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=Base.metadata,
        slow_query_threshold_ms=600_000,
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        async with tenancy.session("acme") as session:
            await session.execute(text("SELECT 1"))
        assert tenancy.slow_queries is not None
        assert tenancy.slow_queries.count == 0
    assert slow_records(caplog) == []


async def test_slow_query_log_works_without_metrics_on_tenant_engines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A zero threshold logs every statement: the tenant engines of database isolation included.
    config = isolation_config(
        ("database", f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"),
        slow_query_threshold_ms=0,
    )
    secret = f"s3cret-{secrets.token_hex(8)}"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with Tenancy(config) as tenancy:
        assert tenancy.metrics is None
        await tenancy.create_tenant("acme")
        caplog.clear()
        async with tenancy.session("acme") as session:
            await session.execute(text("SELECT :secret AS tenant_probe"), {"secret": secret})
        assert tenancy.slow_queries is not None
        assert tenancy.slow_queries.count >= 1
    probes = [record for record in slow_records(caplog) if "tenant_probe" in record.getMessage()]
    assert len(probes) == 1
    assert "tenant acme: SELECT ? AS tenant_probe" in probes[0].getMessage()
    assert all(secret not in record.getMessage() for record in caplog.records)


async def test_statements_outside_a_tenant_are_logged_with_a_dash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        slow_query_threshold_ms=0,
        enable_metrics=True,
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with Tenancy(config) as tenancy:
        async with tenancy.engine.connect() as conn:
            await conn.execute(text("SELECT 42 AS outside_probe"))
        assert counted_slow_queries(tenancy) >= 1
    probes = [record for record in slow_records(caplog) if "outside_probe" in record.getMessage()]
    assert len(probes) == 1
    assert "tenant -: SELECT 42 AS outside_probe" in probes[0].getMessage()


async def test_a_failing_statement_leaves_no_timing_behind(tmp_path: Path) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}", slow_query_threshold_ms=0
    )
    async with Tenancy(config) as tenancy, tenancy.engine.connect() as conn:
        with pytest.raises(DBAPIError):
            await conn.execute(text("SELECT * FROM no_such_table"))
        raw = await conn.get_raw_connection()
        assert raw.info.get("fastapi_tenancy_statement_started") == {}


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SlowQueryLog(-1)
