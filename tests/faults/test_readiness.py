"""Readiness reports what this replica can serve, with each dependency's status and latency.

* Every connection of the app's pool held by a slow request (the pool is saturated: a tenant
  request times out waiting): still ready, because readiness opens a connection of its own.
* The central database refusing and cutting connections (a `FaultProxy`): not ready (503), and
  ready again once it answers.
* Redis down with rate limiting failing closed: not ready, since every request would be refused.
  Failing open: ready, reported ``degraded``, with the Redis checks ``unavailable``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.backends import isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import GENERIC_503, Holder, Running, running
from tests.support.redis_server import PrivateRedis

TENANT = "readyalpha"

DATABASES = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="mysql"),
]


async def readiness(service: Running) -> tuple[int, dict[str, Any]]:
    response = await service.client.get("/health/ready")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def statuses(body: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Each check's (status, required), after checking that every check reports its latency."""
    checks: dict[str, dict[str, Any]] = body["checks"]
    for name, check in checks.items():
        assert check["latency_ms"] >= 0, (name, body)
    return {name: (check["status"], check["required"]) for name, check in checks.items()}


@pytest.mark.parametrize("isolation_case", DATABASES, indirect=True)
async def test_a_saturated_pool_is_still_ready(isolation_case: tuple[str, str]) -> None:
    holder = Holder()
    config = isolation_config(
        isolation_case, database_pool_size=1, database_max_overflow=0, database_pool_timeout=0.5
    )
    async with running(config, [TENANT], holder=holder) as service:
        held = asyncio.create_task(service.get(TENANT, "/hold"))
        try:
            await holder.holding.wait()
            waiting = await service.get(TENANT)  # the pool's only connection is taken
            status, body = await readiness(service)
        finally:
            holder.release.set()
            await held

        report = service.failures.report()
        assert (waiting.status_code, waiting.json()) == (503, GENERIC_503), report
        assert status == 200, body
        assert body["status"] == "ok", body
        assert statuses(body) == {"database": ("ok", True)}


@pytest.mark.parametrize("isolation_case", DATABASES, indirect=True)
async def test_the_central_database_down_is_not_ready_then_ready_again(
    isolation_case: tuple[str, str],
) -> None:
    _, url = isolation_case
    async with FaultProxy.for_url(url, 5432 if url.startswith("postgres") else 3306) as proxy:
        config = isolation_config(isolation_case, database_url=proxy.url_for(url))
        async with running(config, [TENANT]) as service:
            assert (await readiness(service))[0] == 200

            await proxy.refuse()
            proxy.cut()
            status, body = await readiness(service)
            assert status == 503, body
            assert body["status"] == "unavailable", body
            assert statuses(body) == {"database": ("unavailable", True)}

            await proxy.restore()
            status, body = await readiness(service)
            assert (status, body["status"]) == (200, "ok"), body


@pytest.mark.redis
@pytest.mark.parametrize(
    ("isolation_case", "fail_closed"),
    [
        pytest.param(("row", "postgres"), True, marks=pytest.mark.postgres, id="fail-closed"),
        pytest.param(("row", "postgres"), False, marks=pytest.mark.postgres, id="fail-open"),
    ],
    indirect=["isolation_case"],
)
async def test_redis_down_is_not_ready_only_when_rate_limiting_fails_closed(
    isolation_case: tuple[str, str], fail_closed: bool, private_redis: PrivateRedis
) -> None:
    config = isolation_config(
        isolation_case,
        redis_url=private_redis.url,
        enable_rate_limiting=True,
        rate_limit_fail_closed=fail_closed,
    )
    async with running(config, [TENANT]) as service:
        status, body = await readiness(service)
        assert status == 200, body
        assert statuses(body) == {
            "database": ("ok", True),
            "redis_rate_limit": ("ok", fail_closed),
            "redis_cache": ("ok", False),
        }

        await private_redis.stop()
        try:
            status, body = await readiness(service)
            served = await service.get(TENANT)
        finally:
            await private_redis.start()

        assert statuses(body) == {
            "database": ("ok", True),
            "redis_rate_limit": ("unavailable", fail_closed),
            "redis_cache": ("unavailable", False),
        }
        if fail_closed:
            assert (status, body["status"]) == (503, "unavailable"), body
            assert served.status_code == 503  # what readiness predicted: requests are refused
        else:
            assert (status, body["status"]) == (200, "degraded"), body
            assert served.status_code == 200, service.failures.report()
