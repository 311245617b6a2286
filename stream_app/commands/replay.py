"""``fraudstream replay``: publish a history to Kafka in event-time order."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from stream_app.connections import KafkaConnection
from stream_app.errors import ConfigError
from stream_app.features.horizon import warmup_us
from stream_app.settings import Settings
from stream_app.sources.load import load_history
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.timeargs import parse_rate, parse_speed, parse_window_us
from stream_app.topics import (
    DEFAULT_NAMESPACE,
    ensure_topics_sync,
    stream_topics,
    validate_namespace,
)

DESCRIPTION = """\
Publish a recorded history to Kafka: transactions (keyed by customer_id, record timestamp =
event time) and their labels (at event time + label delay), merged in event-time order.
--speed N replays N times faster than real time relative to the first event; 'max' sends
as fast as the broker takes it; --rate N sends N transactions per second instead (each
label goes with the transaction before it), a steady feed for a live stack. The namespace
isolates the replay: its own topics (<namespace>.transactions ...), consumer group and
Redis keys. --namespace (or
FRAUDSTREAM_NAMESPACE) is required: the live topics are written only with --namespace live.
With --from D, the events of the window horizon before D (37 days with a 7-day label
delay) go first, marked as warm-up: the worker applies them to the windows without
alerting, so the scores from D on are those of warm windows. The live worker ignores the
mark, so --namespace live --from D needs --no-warmup (cold windows)."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``replay``."""
    parser = subparsers.add_parser(
        "replay", help="publish a history to Kafka in event-time order", description=DESCRIPTION
    )
    parser.add_argument("--input", required=True, type=Path, metavar="PATH",
                        help="history file: handbook Parquet/CSV or our JSONL events")
    parser.add_argument("--format", choices=("handbook", "jsonl"), default=None,
                        help="file format (default: guessed from the file name)")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="first event time to publish (ISO date/time, UTC by default)")
    parser.add_argument("--to", dest="stop", metavar="DATE",
                        help="publish events before this time (exclusive)")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument("--speed", default="max", metavar="max|N",
                        help="'max' (default) or a multiple of real time, e.g. 3600")
    pacing.add_argument("--rate", default=None, metavar="N",
                        help="N transactions per second, e.g. 50 (instead of --speed)")
    parser.add_argument("--namespace", default=None, metavar="NAME",
                        help="topics/group/Redis prefix to use (default FRAUDSTREAM_NAMESPACE; "
                        "'live' only when named here)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="with --from: publish from --from on only (cold windows)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Replay ``args.input``; print a summary line."""
    settings = Settings.from_env()
    speed = parse_speed(args.speed)
    rate = None if args.rate is None else parse_rate(args.rate)
    start, stop = parse_window_us(args.start, args.stop, "--to")
    topics = stream_topics(replay_namespace(args.namespace, settings.namespace))
    warmup_until = None if start is None or args.no_warmup else start
    if warmup_until is not None and topics.namespace == DEFAULT_NAMESPACE:
        raise ConfigError(
            f"--namespace live --from {args.start}: the live worker alerts on warm-up events "
            "(it ignores the mark), so the window horizon before --from would raise alerts "
            "again; replay into a namespace of its own, or add --no-warmup to publish from "
            "--from on with cold windows"
        )
    history = load_history(args.input, format=args.format,
                           label_delay_days=settings.label_delay_days)
    first = start if warmup_until is None else warmup_until - warmup_us(settings.label_delay_days)
    order = replay_order(history, first, stop)
    kafka = KafkaConnection.from_settings(settings)
    ensure_topics_sync(kafka, topics.all, settings.topic_partitions, settings.topic_replication)
    summary = asyncio.run(replay(history, order, kafka, topics, speed,
                                 events_per_s=rate, progress=not args.no_progress,
                                 warmup_until_us=warmup_until))
    print(summary.line(topics), flush=True)
    return 0


def replay_namespace(flag: str | None, configured: str) -> str:
    """The namespace to replay into: ``--namespace``, else FRAUDSTREAM_NAMESPACE unless that
    is the live one (set for the worker, it must not send a replay into the live topics)."""
    if flag is not None:
        return validate_namespace(flag)
    if configured == DEFAULT_NAMESPACE:
        raise ConfigError(
            f"no namespace given (FRAUDSTREAM_NAMESPACE is {configured!r} or unset): a replay "
            "would write into the live topics; pass --namespace <name> to replay into topics of "
            "its own, or --namespace live to really write into the live topics"
        )
    return configured
