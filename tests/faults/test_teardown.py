"""A session whose connection dies after the response was sent: the client keeps its 200.

A real uvicorn process serves tests/faults/teardown_app.py. Its route reads the tenant's rows
and answers 200; after the response is sent, a dependency terminates the session's server
connection (``pg_terminate_backend``, MariaDB's ``KILL``), so closing the session fails on a
dead connection. That failure has no client left to answer: it is logged as a warning and
counted in ``fastapi_tenancy_storage_failures_after_response_total``, the server logs no
application crash, and the client's keep-alive connection serves the next requests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastapi_tenancy import Tenancy
from tests.support.backends import isolation_config
from tests.support.http_servers import serving
from tests.support.models import Item
from tests.support.services import free_port

TENANT = "teardown"
COUNTER = "fastapi_tenancy_storage_failures_after_response"
POLLS = 200

CASES = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="row-mysql"),
]


def server_environment(case: tuple[str, str]) -> dict[str, str]:
    """The TENANCY_* variables that give the server process ``case``'s config."""
    config = isolation_config(case)
    settings = {
        "TENANCY_DATABASE_URL": config.database_url,
        "TENANCY_ISOLATION_STRATEGY": config.isolation_strategy,
        "TENANCY_TENANT_METADATA": "tests.support.models:Base.metadata",
        "TENANCY_SCHEMA_PREFIX": config.schema_prefix,
        "TENANCY_ENABLE_METRICS": "true",
        "TENANCY_EXCLUDED_PATHS": "/health/*,/metrics",
    }
    if config.database_url_template is not None:
        settings["TENANCY_DATABASE_URL_TEMPLATE"] = config.database_url_template
    return {**os.environ, **settings}


@pytest.fixture
async def server(
    isolation_case: tuple[str, str], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    async with Tenancy(isolation_config(isolation_case)) as tenancy:
        await tenancy.create_tenant(TENANT)
        async with tenancy.session(TENANT) as session:
            session.add_all([Item(name=f"{TENANT}:{n}") for n in range(2)])
            await session.commit()
    port = free_port()
    command = [
        sys.executable,
        *("-m", "uvicorn", "tests.faults.teardown_app:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]
    log = tmp_path / "uvicorn.log"
    env = server_environment(isolation_case)
    async with serving(command, port=port, env=env, ready_path="/health/ready", log=log) as url:
        # One connection: every request below must travel over the same keep-alive connection.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            yield client, log


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection ``response`` came over."""
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


async def failures_after_response(client: httpx.AsyncClient) -> tuple[float, int]:
    response = await client.get("/metrics/")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        if family.name == COUNTER:
            return sum(sample.value for sample in family.samples), local_port(response)
    raise AssertionError(f"{COUNTER} is not exposed:\n{response.text}")


@pytest.mark.parametrize("isolation_case", CASES, indirect=True)
async def test_a_connection_lost_after_the_response_is_logged_and_counted_not_crashed(
    server: tuple[httpx.AsyncClient, Path],
) -> None:
    client, log = server
    headers = {"X-Tenant-ID": TENANT}

    answered = await client.get("/lost-after-response", headers=headers)

    assert answered.status_code == 200, log.read_text()
    assert [row["name"] for row in answered.json()] == [f"{TENANT}:0", f"{TENANT}:1"]
    ports = {local_port(answered)}
    for _ in range(POLLS):  # the teardown runs after the client has its answer
        counted, port = await failures_after_response(client)
        ports.add(port)
        if counted:
            break
    assert counted == 1, log.read_text()
    after = await client.get("/items", headers=headers)
    assert after.status_code == 200, log.read_text()
    ports.add(local_port(after))
    assert len(ports) == 1, f"the keep-alive connection was dropped:\n{log.read_text()}"
    output = log.read_text()
    assert "Exception in ASGI application" not in output, output
    assert "tenant storage failed after the response was sent" in output, output
