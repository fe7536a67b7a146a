"""``fastapi-tenancy config reference``: every setting, its env var, default and effect."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi_tenancy.cli.output import print_error
from fastapi_tenancy.cli.runtime import EXIT_FAILURE, EXIT_OK, print_usage
from fastapi_tenancy.config_reference import config_reference, replace_reference

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    config = commands.add_parser(
        "config",
        help="the configuration reference",
        description="Print the reference of every TENANCY_* setting of this version.",
        parents=[common],
    )
    sub = config.add_subparsers(title="commands", metavar="COMMAND")
    reference = sub.add_parser(
        "reference",
        help="print every setting as Markdown tables",
        description="Print every TENANCY_* setting (field, env var, default, effect) as Markdown. "
        "With --write, replace the generated part of a page (below its marker) instead.",
        parents=[common],
    )
    reference.add_argument(
        "--write", type=Path, metavar="PAGE", help="update the reference in this Markdown page"
    )
    reference.set_defaults(handler=_reference)
    config.set_defaults(handler=lambda _args: print_usage(config))


def _reference(args: argparse.Namespace) -> int:
    if args.write is None:
        print(config_reference(), end="")
        return EXIT_OK
    page: Path = args.write
    try:
        page.write_text(replace_reference(page.read_text(encoding="utf-8")), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print_error(f"cannot update {page}: {exc}")
        return EXIT_FAILURE
    print(f"updated {page}")
    return EXIT_OK
