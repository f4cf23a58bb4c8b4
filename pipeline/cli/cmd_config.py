"""`pipeline config show|check|reference`: the effective configuration (secrets masked), its validation, and
the reference of every key generated from the model (docs/configuration.md, config/pipeline.yaml)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_config_option, settings_from, write_output


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "config",
        help="show, check or document the configuration (secrets masked)",
        description="The configuration is a YAML file (--config, else $PIPELINE_CONFIG, else "
        "config/pipeline.yaml if present) overridden key by key by PIPELINE_<SECTION>__<KEY> variables.",
    )
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True
    for name, func, help_text, description in (
        (
            "show",
            _show,
            "print the effective configuration as YAML, secrets masked",
            "Print the effective configuration (file + environment + defaults) as YAML, every secret "
            "masked. The first line (a YAML comment) names the file and the variables read.",
        ),
        (
            "check",
            _check,
            "validate the configuration; exit 2 with one line per problem",
            "Validate the configuration as `pipeline run` would at start-up: 'configuration OK' and the "
            "file and variables read, or one line per problem naming the key (exit 2).",
        ),
    ):
        command = action.add_parser(name, help=help_text, description=description)
        add_config_option(command)
        command.set_defaults(func=func)
    reference = action.add_parser(
        "reference",
        help="print the reference of every key (Markdown table, or the commented example YAML file)",
        description="Generated from the configuration model: `--format markdown` is docs/configuration.md, "
        "`--format yaml` is config/pipeline.yaml.",
    )
    reference.add_argument(
        "--format", choices=("markdown", "yaml"), default="markdown", help="default: markdown"
    )
    reference.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    reference.set_defaults(func=_reference)


def _show(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.ops.config import describe_sources, redacted_dump

    settings = settings_from(args, logging=False)
    print(f"# {describe_sources(args.config)}")
    print(yaml.safe_dump(redacted_dump(settings), sort_keys=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from pipeline.ops.config import describe_sources

    settings_from(args, logging=False)
    print(f"configuration OK: {describe_sources(args.config)}")
    return 0


def _reference(args: argparse.Namespace) -> int:
    from pipeline.ops.config.reference import render_markdown, render_yaml

    write_output(render_yaml() if args.format == "yaml" else render_markdown(), args.output)
    return 0
