"""The ``fastapi-tenancy`` command line: ``tenants``, ``migrate``, ``worker``, ``rls``, ``doctor``,
``config``.

Off the request path: nothing here is imported by the middleware. Exit codes: 0 success, 1 the
operation failed (unknown tenant, refused transition, duplicate, bad configuration, a failed doctor
check), 2 usage error (bad arguments, malformed identifier, purge without ``--yes``), 3 the database
is unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from fastapi_tenancy.cli import config, doctor, edge, migrate, rls, tenants, worker
from fastapi_tenancy.cli.output import print_error
from fastapi_tenancy.cli.runtime import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    print_usage,
)

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "build_parser", "main"]

EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        print_error(f"{message} (see {self.prog} --help)", prog=self.prog)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    # The options every command accepts, before or after its name. SUPPRESS keeps a subcommand
    # from overwriting a value given earlier on the line with its own default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="central database URL; overrides TENANCY_DATABASE_URL",
    )
    parser: argparse.ArgumentParser = OneLineParser(
        prog="fastapi-tenancy",
        description="Manage the tenants of a fastapi-tenancy app and check its configuration. "
        "Settings come from TENANCY_* environment variables and .env, as in the app.",
        epilog="exit codes: 0 ok, 1 failed, 2 usage error, 3 database unreachable",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.set_defaults(handler=lambda _args: print_usage(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    tenants.register(commands, common)
    migrate.register(commands, common)
    worker.register(commands, common)
    rls.register(commands, common)
    doctor.register(commands, common)
    config.register(commands, common)
    edge.register(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    # The working directory is importable, as under `python -m`: TENANCY_TENANT_METADATA names a
    # module of the project the command runs in, and a console script's path starts elsewhere.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code: int = args.handler(args)
    except SystemExit as exc:  # argparse exits for --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        # Expected failures are mapped where they happen; anything else is still one line.
        print_error(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    return code


def _version() -> str:
    from fastapi_tenancy import __version__

    return __version__
