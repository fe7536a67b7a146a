"""What every command shares: exit codes, loading the config, and turning errors into exit codes.

Expected failures (an unknown tenant, an unreachable database, a bad setting) end in a one-line
message on stderr and a documented exit code, never a traceback. Messages pass through `scrub`,
so a password that a driver echoes never reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from fastapi_tenancy._secrets import scrub
from fastapi_tenancy.cli.output import print_error
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import (
    ConfigurationError,
    InvalidTenantIdentifier,
    ServiceUnavailable,
    TenancyError,
)
from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.tenancy import Tenancy

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Commands",
    "Handler",
    "add_command",
    "add_group",
    "alembic_config",
    "load_config",
    "positive_float",
    "positive_int",
    "print_usage",
    "run_with_config",
    "run_with_tenancy",
    "scrub",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def print_usage(parser: argparse.ArgumentParser) -> int:
    """Print ``parser``'s help to stderr, for a command given without its subcommand."""
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# A quoted alias: `_SubParsersAction` is generic only to type checkers, not at runtime.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def add_command(
    commands: Commands,
    name: str,
    *,
    help: str,
    description: str | None,
    common: argparse.ArgumentParser,
    handler: Handler,
) -> argparse.ArgumentParser:
    """Add the command ``name`` that runs ``handler``; the caller adds its arguments."""
    parser = commands.add_parser(name, help=help, description=description, parents=[common])
    parser.set_defaults(handler=handler)
    return parser


def add_group(
    commands: Commands,
    name: str,
    *,
    help: str,
    description: str | None,
    common: argparse.ArgumentParser,
) -> Commands:
    """Add the command group ``name`` and return where its commands go.

    Given without a command, the group prints its help and exits with a usage error.
    """
    group = commands.add_parser(name, help=help, description=description, parents=[common])
    group.set_defaults(handler=lambda _args: print_usage(group))
    return group.add_subparsers(title="commands", metavar="COMMAND")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def load_config(database_url: str | None = None, **overrides: Any) -> TenancyConfig:
    """`TenancyConfig()` from the environment, with ``--database-url`` and ``overrides`` on top.

    Raises `ConfigurationError` for every kind of bad setting, with a message naming the setting.
    """
    if database_url is not None:
        overrides["database_url"] = database_url
    return TenancyConfig(**overrides)


def run_with_tenancy(
    args: argparse.Namespace,
    operation: Callable[[Tenancy], Awaitable[int]],
    *,
    secrets: Iterable[str | None] = (),
    **overrides: Any,
) -> int:
    """Open a `Tenancy` on the command's config, run ``operation`` on it, map errors to codes."""
    return run_with_config(
        args, lambda config: _run(config, operation), secrets=secrets, **overrides
    )


def run_with_config(
    args: argparse.Namespace,
    operation: Callable[[TenancyConfig], Coroutine[Any, Any, int]],
    *,
    secrets: Iterable[str | None] = (),
    **overrides: Any,
) -> int:
    """Load the command's config, run ``operation`` on it, map errors to exit codes.

    For commands that must not open a `Tenancy` (its start-up creates tables and checks).
    """
    urls = [getattr(args, "database_url", None), *secrets]
    try:
        config = load_config(getattr(args, "database_url", None), **overrides)
        urls += [config.database_url, config.database_url_template]
        return asyncio.run(operation(config))
    except InvalidTenantIdentifier:
        print_error("malformed tenant identifier: use 1-63 lower-case letters, digits and hyphens")
        return EXIT_USAGE
    except ServiceUnavailable as exc:
        print_error(scrub(str(exc), urls))
        return EXIT_UNAVAILABLE
    except TenancyError as exc:
        print_error(scrub(str(exc), urls))
        return EXIT_FAILURE
    except DBAPIError as exc:
        # The driver's own message; SQLAlchemy's wrapper would add the statement's parameters.
        cause = exc.orig if exc.orig is not None else exc
        print_error(scrub(f"database error: {type(cause).__name__}: {cause}", urls))
        return EXIT_UNAVAILABLE if is_unavailable(exc) else EXIT_FAILURE
    except SQLAlchemyError as exc:
        print_error(scrub(f"database error: {type(exc).__name__}: {exc}", urls))
        return EXIT_UNAVAILABLE if is_unavailable(exc) else EXIT_FAILURE
    except OSError as exc:
        if not is_unavailable(exc):  # the app's own, e.g. a migration script's missing file
            print_error(scrub(f"{type(exc).__name__}: {exc}", urls))
            return EXIT_FAILURE
        # Drivers raise connection failures unwrapped (refused, timed out, unresolvable host).
        print_error(scrub(f"database unreachable: {type(exc).__name__}: {exc}", urls))
        return EXIT_UNAVAILABLE
    except Exception as exc:
        # Alembic's and the app's own errors (a migration script failing to import, ...).
        print_error(scrub(f"{type(exc).__name__}: {exc}", urls))
        return EXIT_FAILURE


def alembic_config(path: str, option: str) -> AlembicConfig:
    """The Alembic config at ``path`` (given with ``option``), or a `ConfigurationError` saying why
    it cannot be used, before anything is opened."""
    try:
        from alembic.config import Config
    except ImportError:
        raise ConfigurationError(
            'migrations need Alembic: pip install "fastapi-tenancy-kit[migrations]"'
        ) from None
    if not Path(path).is_file():
        raise ConfigurationError(
            f"no Alembic config file at {path}: pass {option} with the alembic.ini of the tenant "
            "migrations (see docs/migrations.md)"
        )
    try:
        config = Config(path)
        location = config.get_main_option("script_location")
    except Exception as exc:  # configparser's errors: the file is not an ini file
        raise ConfigurationError(f"{path} is not a readable Alembic config: {exc}") from None
    if not location:
        raise ConfigurationError(
            f"{path} has no script_location in its [alembic] section: point it at the folder of "
            "the tenant migrations"
        )
    return config


async def _run(config: TenancyConfig, operation: Callable[[Tenancy], Awaitable[int]]) -> int:
    async with Tenancy(config) as tenancy:
        return await operation(tenancy)
