"""`TenantLogFilter`: every record carries the current tenant, so ``%(tenant)s`` always works."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_tenancy import (
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    TenantLogFilter,
    get_current_tenant,
    tenant_context,
)
from fastapi_tenancy.testing import run_app

FORMAT = "%(levelname)s [%(tenant)s %(tenant_id)s] %(name)s: %(message)s"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler formats with ``%(tenant)s`` behind a `TenantLogFilter`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TenantLogFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("tests.logs.app")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_records_outside_a_tenant_show_a_dash(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("starting")
    assert stream.getvalue() == "INFO [- -] tests.logs.app: starting\n"


def test_records_inside_a_tenant_scope_show_its_identifier_and_id(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    tenant = Tenant(id="t-1", identifier="acme")
    with tenant_context(tenant):
        logger.info("inside")
    logger.info("after")
    assert stream.getvalue().splitlines() == [
        "INFO [acme t-1] tests.logs.app: inside",
        "INFO [- -] tests.logs.app: after",
    ]


def test_a_tenant_given_with_extra_is_kept(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("explicit", extra={"tenant": "globex", "tenant_id": "t-2"})
    assert stream.getvalue() == "INFO [globex t-2] tests.logs.app: explicit\n"


async def test_records_logged_while_serving_a_request_carry_its_tenant(
    tmp_path: Path, captured: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = captured
    app = FastAPI()
    app.add_middleware(
        TenancyMiddleware,
        config=TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"),
    )

    @app.get("/hello")
    async def hello(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        logger.info("hello")
        return {"identifier": tenant.identifier}

    async with run_app(app) as harness:
        acme = await harness.create_tenant("acme")
        transport = httpx.ASGITransport(app=harness.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/hello", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200
    assert stream.getvalue() == f"INFO [acme {acme.id}] tests.logs.app: hello\n"


def test_the_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "m", None, None)
    assert TenantLogFilter().filter(record) is True
