"""``redis_url`` names a topology: one server, a Sentinel group or a Cluster, validated early."""

from __future__ import annotations

import pytest

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy._redis import RedisTarget, parse_redis_url, redact_redis_url
from fastapi_tenancy.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/2", RedisTarget("server", "redis://127.0.0.1:6379/2")),
        ("rediss://cache:6380/0", RedisTarget("server", "rediss://cache:6380/0")),
        ("unix:///run/redis.sock?db=1", RedisTarget("server", "unix:///run/redis.sock?db=1")),
        (
            "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/3",
            RedisTarget(
                "sentinel",
                "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/3",
                nodes=(("10.0.0.1", 26379), ("10.0.0.2", 26379)),
                service="mymaster",
                db=3,
                password="s@cret",
            ),
        ),
        (
            "redis+cluster://app:pw@node1:7000,node2:7001",
            RedisTarget(
                "cluster",
                "redis+cluster://app:pw@node1:7000,node2:7001",
                nodes=(("node1", 7000), ("node2", 7001)),
                username="app",
                password="pw",
            ),
        ),
    ],
)
def test_each_url_form_names_its_topology(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected
    assert TenancyConfig(redis_url=url).redis_url is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "redis+sentinel://:hunter2@127.0.0.1:26379",  # no service name
        "redis+sentinel://:hunter2@127.0.0.1:26379/mymaster/zero",
        "redis+sentinel://:hunter2@/mymaster",
        "redis+cluster://:hunter2@127.0.0.1:7000/1",  # a cluster has database 0 only
        "redis+cluster://:hunter2@127.0.0.1",  # no port
        "redis+cluster://:hunter2@127.0.0.1:7000?ssl=true",
    ],
)
def test_a_malformed_url_is_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        TenancyConfig(redis_url=url)

    assert "REDIS_URL" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis+sentinel://u:pw@h:1,h2:2/mymaster", "redis+sentinel://u:***@h:1,h2:2/mymaster"),
        ("redis+cluster://h:1,h:2", "redis+cluster://h:1,h:2"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
    ],
)
def test_logged_urls_mask_the_password_of_every_topology(url: str, shown: str) -> None:
    assert redact_redis_url(url) == shown
