"""Tables of backends, limits-style: one test body runs over every backend, a marker per server."""

from __future__ import annotations

import pytest

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]

all_databases = pytest.mark.parametrize("database_url", DATABASES, indirect=True)
