"""``fraudstream alerts``: print the alerts of a namespace, readable or as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from stream_app.connections import KafkaConnection
from stream_app.pseudonyms import Pseudonymizer
from stream_app.settings import Settings
from stream_app.tools.alerts_consumer import (
    consume_alerts,
    printer,
    warn_invalid,
    warn_invalid_masked,
)
from stream_app.tools.timeargs import parse_since_us
from stream_app.topics import stream_topics

DESCRIPTION = """\
Print the alerts on <namespace>.fraud-alerts: time, customer, terminal, amount, score vs
threshold, the explanation baseline's score and the top reasons (how much each input
raised the score above that baseline, then its value), or one alert.v1 JSON object per
line with --json. Without
--follow it stops at the current end of the topic; with it, it waits for new alerts until
Ctrl-C. --since takes an ISO date/time (UTC by default) or a duration back from now
(90s, 15m, 2h, 7d) and compares it with the alerts' record timestamps. Customer and
terminal ids are masked (first 2 characters of ids of 8 or more, "…", and a tag that is the
start of the id's pseudonym with FRAUDSTREAM_PSEUDONYM_KEY set, of its SHA-256 without):
--show-ids prints them as received."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``alerts``."""
    parser = subparsers.add_parser("alerts", help="print alerts", description=DESCRIPTION)
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep waiting for new alerts (Ctrl-C stops)")
    parser.add_argument("--since", metavar="DATE|DURATION",
                        help="only alerts from this time on, e.g. 2018-09-01 or 2h")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--show-ids", action="store_true",
                        help="print customer and terminal ids in clear (default: masked)")
    parser.add_argument("--namespace", default=None, metavar="NAME",
                        help="namespace to read (default FRAUDSTREAM_NAMESPACE)")


def run(args: argparse.Namespace) -> int:
    """Print the alerts; 0 also when stopped with Ctrl-C."""
    settings = Settings.from_env()
    kafka = KafkaConnection.from_settings(settings)
    topics = stream_topics(args.namespace or settings.namespace)
    since_ms = None
    if args.since is not None:
        since_ms = parse_since_us(args.since, time.time_ns() // 1000) // 1000
    show = printer(args.json, show_ids=args.show_ids,
                   pseudonymizer=Pseudonymizer.from_key(settings.pseudonym_key))
    on_invalid = warn_invalid if args.show_ids else warn_invalid_masked
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume_alerts(kafka, topics.alerts, show,
                                   since_ms=since_ms, follow=args.follow, on_invalid=on_invalid))
    return 0
