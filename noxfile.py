"""Developer and CI sessions: ``nox -s tests lint typecheck docs`` runs what CI runs."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]


def run_tests(
    session: nox.Session, marker: str, *options: str, env: dict[str, str] | None = None
) -> None:
    """Install the package with its dev extras and run pytest; posargs go last (a later -m wins).

    Without ``-n`` in ``options`` or posargs the run is parallel (tests/conftest.py)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", marker, *options, *session.posargs, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and service tests, without the slow ones (services are skipped when absent)."""
    run_tests(session, "not slow and not deep")


@nox.session
def tests_integration(session: nox.Session) -> None:
    """The tests that talk to PostgreSQL, MariaDB or Redis (a missing server fails), not deep."""
    run_tests(
        session,
        "(postgres or mysql or redis) and not deep",
        env={"TENANCY_TEST_REQUIRE_SERVICES": "1"},
    )


@nox.session
def deep(session: nox.Session) -> None:
    """The long property runs (the `deep` Hypothesis profile); a missing server fails."""
    run_tests(session, "deep", "-n0", env={"TENANCY_TEST_REQUIRE_SERVICES": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def soak(session: nox.Session) -> None:
    """The long fault soak (docs/failures.md); posargs go to it: ``nox -s soak -- --requests N``."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "tests.faults.soak", *session.posargs)


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, install each in a fresh venv and smoke-test it."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "slow", "-n0", "tests/packaging", *session.posargs)
