"""The ``fraudstream`` sub-commands: one module per command, listed in :data:`COMMANDS`.

A command is a module ``stream_app.commands.<name>`` (``-`` in the name becomes ``_``)
that defines:

- ``add_parser(subparsers) -> None``: add its sub-parser, named after the command, with
  ``subparsers.add_parser(name, description=...)`` and its arguments;
- ``run(args) -> int``: do the work and return the exit code. Raise a
  :class:`~stream_app.errors.FraudstreamError` for anything the user can fix; the CLI
  prints it as one ``error: ...`` line and exits with code 2.

Loading is lazy. ``fraudstream --help`` lists the commands from this table alone, without
importing any command module; running a command imports that one module only. Heavy
imports (the training code, which needs torch) still belong inside ``run``: the serving
package must stay importable without torch (``tests/unit/test_no_torch.py`` imports every
module). To add a command, write its module and add a :class:`Command` line below, in the
order ``--help`` should show it; ``extra`` names the optional dependency group the command
needs, so a missing package gets an install hint.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """One sub-command: its name, the one-line help ``--help`` shows, its extra if any."""

    name: str
    help: str
    extra: str | None = None

    @property
    def module(self) -> str:
        """The module that implements the command."""
        return f"{__name__}.{self.name.replace('-', '_')}"


COMMANDS: tuple[Command, ...] = (
    Command("simulate", "write a simulated history with the handbook's three fraud scenarios"),
    Command("features", "compute a feature set over a history file and write it as Parquet"),
    Command("train", "train the models on a history and write a model bundle", "train"),
    Command("evaluate", "run the handbook's prequential protocol and write a report", "train"),
    Command("backtest", "replay a history through the stream's features and a model bundle"),
    Command("compare", "the serving bundle beside challengers on a history: alerts, "
            "catches, metrics, time to detection, workload", "train"),
    Command("drift", "a history's drift against a bundle's training distribution: PSI of "
            "every feature and of the score per day or week", "train"),
    Command("models", "show a model store, promote a bundle, set the shadow challengers"),
    Command("worker", "run the stream worker: score transactions, publish alerts"),
    Command("replay", "publish a history to Kafka in event-time order"),
    Command("alerts", "print alerts"),
    Command("console", "serve the operations console (alerts, labels, live figures)"),
    Command("demo", "run the whole system locally on simulated data (broker, Redis, worker)"),
)
