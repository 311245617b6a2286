"""``fraudstream models``: show a model store, promote a bundle, set the shadow challengers.

A model store is a directory of bundles with a ``CURRENT`` pointer (the serving bundle's
directory name) and an optional ``CHALLENGERS`` list; a worker whose
``FRAUDSTREAM_MODEL_DIR`` is the store switches to a new choice between batches, without a
restart. Every bundle is verified (sha256, schema, feature hash, and the same feature rows
as the serving one) before a pointer is rewritten; the rewrite is atomic.

    fraudstream models show --models models/
    fraudstream models promote --models models/ 2026-12-13-weekly
    fraudstream models challengers --models models/ gan-v1 cnn-v1
    fraudstream models clear-challengers --models models/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.model_store import is_store, promote, read_selection, set_challengers
from stream_app.settings import Settings

NAME = "models"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models`` and its actions."""
    settings = Settings.from_env()
    parser = subparsers.add_parser(
        NAME, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, names, text in (
        ("show", None, "print the serving bundle and the challengers"),
        ("promote", 1, "verify bundle NAME, then serve it"),
        ("challengers", "+", "verify bundles NAME..., then shadow-score with them"),
        ("clear-challengers", None, "stop shadow scoring"),
    ):
        sub = actions.add_parser(action, help=text, description=text)
        if names is not None:
            sub.add_argument("names", nargs=names, metavar="NAME",
                             help="bundle directory name inside the store")
        sub.add_argument("--models", default=Path(settings.model_dir), type=Path,
                         metavar="DIR", help="the model store (default FRAUDSTREAM_MODEL_DIR)")


def run(args: argparse.Namespace) -> int:
    """Do the action; print the store's choice after it."""
    store: Path = args.models
    if args.action == "promote":
        promote(store, args.names[0])
    elif args.action == "challengers":
        set_challengers(store, tuple(args.names))
    elif args.action == "clear-challengers":
        set_challengers(store, ())
    selection = read_selection(store)
    serving = load_bundle(selection.serving)
    kind = "model store" if is_store(store) else "single bundle (not watched)"
    print(f"{store}: {kind}")
    print(f"  serving     {selection.serving.name}: {serving.model_version}, "
          f"threshold {serving.threshold:g}")
    for path in selection.challengers:
        print(f"  challenger  {path.name}: {load_bundle(path).model_version}")
    return 0
