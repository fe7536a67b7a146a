"""Hypothesis profiles for the suite, registered and loaded from tests/conftest.py.

* ``tenancy`` (loaded by default): Hypothesis' defaults, plus the ``@reproduce_failure`` blob of
  every failure (``print_blob``) so a failure on CI can be replayed locally.
* ``deep``: the long run of the property tests behind the ``deep`` marker (`pytest -m deep`).

`ROW_PROPERTY` and `DEEP` are the settings of the row-isolation property tests: a few dozen
examples per backend in the default run, many more in the ``deep`` one.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings

# An example is a few dozen statements on a shared two-core machine: never the timing a deadline
# is for, but a hung example still fails instead of stalling the run.
_GENEROUS_DEADLINE = timedelta(seconds=20)
# The world fixture opens a database once per test, and each example resets it itself.
_FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

PROFILES = ("tenancy", "deep")

settings.register_profile("tenancy", print_blob=True)
settings.register_profile(
    "deep",
    parent=settings.get_profile("tenancy"),
    max_examples=500,
    deadline=None,
    suppress_health_check=_FIXTURE_OK,
)

ROW_PROPERTY = settings(
    settings.get_profile("tenancy"),
    max_examples=25,
    deadline=_GENEROUS_DEADLINE,
    suppress_health_check=_FIXTURE_OK,
)
DEEP = settings(settings.get_profile("deep"))
