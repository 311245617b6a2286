"""``fraudstream console``: the operations console, a web page for analysts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from stream_app.settings import Settings

DESCRIPTION = """\
Serve the operations console on FRAUDSTREAM_CONSOLE_HOST:FRAUDSTREAM_CONSOLE_PORT
(127.0.0.1:6067 by default): live throughput, lag, latency, alert rate and drift read from
the worker's /metrics (FRAUDSTREAM_CONSOLE_METRICS_URL, default the worker's
FRAUDSTREAM_WEB_HOST:FRAUDSTREAM_WEB_PORT), the namespace's latest alerts with their reasons
(filterable by customer, terminal, score and model), one alert's features and the customer's
recent transactions. An analyst marks an alert fraud or genuine: a label.v1 goes to the
labels topic (label_time = now) and a line to the audit log (FRAUDSTREAM_CONSOLE_AUDIT_LOG).
Analysts are the `name:token` lines of FRAUDSTREAM_CONSOLE_TOKENS_FILE; every request
without a valid token is refused (401). Stop with Ctrl-C or SIGTERM."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``console``."""
    parser = subparsers.add_parser(
        "console", help="serve the operations console (alerts, labels, live figures)",
        description=DESCRIPTION,
    )  # fmt: skip
    parser.add_argument("--namespace", default=None, metavar="NAME",
                        help="namespace to show (default FRAUDSTREAM_NAMESPACE)")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM."""
    from stream_app.topics import validate_namespace

    overrides: dict[str, Any] = {}
    if args.namespace is not None:
        overrides["namespace"] = validate_namespace(args.namespace)
    settings = Settings.from_env(**overrides)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))
    return 0


async def _serve(settings: Settings) -> None:
    from stream_app.console.app import running_console

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with running_console(settings) as running:
        console = running.console
        print(
            f"console on {running.url} (namespace {settings.namespace!r}; analysts "
            f"{', '.join(running.analysts.names)}; audit log {console.audit.path}; worker "
            f"metrics {console.metrics_url})",
            flush=True,
        )
        await stop.wait()
