"""`pipeline config show|check`: the effective configuration (secrets masked) and its validation."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_config_option, settings_from


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("config", help="show or check the effective configuration (secrets masked)")
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True
    show = action.add_parser("show", help="print the effective configuration as YAML, secrets masked")
    add_config_option(show)
    show.set_defaults(func=lambda args: _show(args))
    check = action.add_parser("check", help="validate the configuration; exit 2 with one line per problem")
    add_config_option(check)
    check.set_defaults(func=lambda args: _check(args))


def _show(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.config import redacted_dump

    settings = settings_from(args, logging=False)
    print(yaml.safe_dump(redacted_dump(settings), sort_keys=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    settings_from(args, logging=False)
    print("configuration OK")
    return 0
