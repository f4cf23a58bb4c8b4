"""`pipeline config show|check|reference`: the effective configuration (secrets masked), its validation, and
the reference of every key generated from the model (docs/configuration.md)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_config_option, fail, settings_from


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("config", help="show, check or document the configuration (secrets masked)")
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True
    show = action.add_parser("show", help="print the effective configuration as YAML, secrets masked")
    add_config_option(show)
    show.set_defaults(func=lambda args: _show(args))
    check = action.add_parser("check", help="validate the configuration; exit 2 with one line per problem")
    add_config_option(check)
    check.set_defaults(func=lambda args: _check(args))
    reference = action.add_parser(
        "reference",
        help="print the reference of every key (Markdown: key, env variable, type, default, description)",
        description="Generated from the configuration model; docs/configuration.md is its output.",
    )
    reference.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    reference.set_defaults(func=lambda args: _reference(args))


def _show(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.ops.config import redacted_dump

    settings = settings_from(args, logging=False)
    print(yaml.safe_dump(redacted_dump(settings), sort_keys=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    settings_from(args, logging=False)
    print("configuration OK")
    return 0


def _reference(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.ops.configref import render_markdown

    text = render_markdown()
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            return fail(f"cannot write {args.output}: {exc.strerror}")
    else:
        print(text, end="")
    return 0
