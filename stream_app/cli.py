"""The ``fraudstream`` console script: argparse, one sub-command a module (``commands/``).

Only the chosen command's module is imported (see :mod:`stream_app.commands`). Every
:class:`FraudstreamError` becomes one ``error: ...`` line on stderr and exit code 2, with
no traceback; Ctrl-C exits with code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

import stream_app
from stream_app.commands import COMMANDS, Command
from stream_app.errors import FraudstreamError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class CommandModule(Protocol):
    """What a module in ``stream_app.commands`` provides."""

    def add_parser(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add the command's sub-parser and arguments."""

    def run(self, args: argparse.Namespace) -> int:
        """Run the command; return the exit code."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        chosen = _chosen_command(arguments)
        module = _load(chosen) if chosen else None
        parser = build_parser(chosen, module)
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exit_:  # --help, --version, usage errors (already printed)
            return exit_.code if isinstance(exit_.code, int) else EXIT_USER_ERROR
        assert module is not None, "argparse requires a command"
        return module.run(args)
    except FraudstreamError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser(
    chosen: Command | None = None, module: CommandModule | None = None
) -> argparse.ArgumentParser:
    """The parser: every command listed; only ``chosen`` has its arguments (from ``module``)."""
    parser = argparse.ArgumentParser(
        prog="fraudstream",
        description="Real-time card-fraud detection: simulate and featurise histories, "
        "train and evaluate models, run the stream worker, replay and backtest.",
        epilog="Run `fraudstream COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=stream_app.__version__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if command == chosen and module is not None:
            module.add_parser(subparsers)
        else:
            subparsers.add_parser(command.name, help=command.help)
    return parser


def _chosen_command(arguments: Sequence[str]) -> Command | None:
    """The command named by the first non-option argument (top-level options take no value)."""
    first = next((a for a in arguments if not a.startswith("-")), None)
    return next((c for c in COMMANDS if c.name == first), None)


def _load(command: Command) -> CommandModule:
    try:
        return cast(CommandModule, importlib.import_module(command.module))
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.startswith(stream_app.__name__):
            raise
        hint = f"pip install 'fraudstream[{command.extra}]'" if command.extra else (
            f"pip install {exc.name.split('.')[0]}")
        raise FraudstreamError(
            f"the {command.name!r} command needs the Python package {exc.name!r}, which is "
            f"not installed; install it ({hint})"
        ) from None
