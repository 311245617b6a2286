"""``fraudstream worker``: score the transactions stream and publish alerts."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from stream_app.settings import Settings

DESCRIPTION = """\
Run the stream worker (a Faust app): consume transactions and labels of the namespace in
micro-batches, keep the feature windows in Redis, score with the model bundle, publish
alerts (and scores when FRAUDSTREAM_PUBLISH_SCORES=1); invalid events go to the DLQ
topic. Topics are created at start-up. /metrics, /health (liveness) and /ready (Redis,
broker and partitions) are served on FRAUDSTREAM_WEB_HOST:FRAUDSTREAM_WEB_PORT. Other
settings come from FRAUDSTREAM_* variables (broker, Redis, batch size and wait, label
barrier timeout, key TTL). Stop with Ctrl-C or
SIGTERM: batches in flight are finished and committed first."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``worker``."""
    parser = subparsers.add_parser(
        "worker",
        help="run the stream worker: score transactions, publish alerts",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "--models",
        default=None,
        metavar="DIR",
        help="model bundle or model store directory (default FRAUDSTREAM_MODEL_DIR)",
    )
    parser.add_argument(
        "--namespace",
        default=None,
        metavar="NAME",
        help="topics/group/Redis prefix (default FRAUDSTREAM_NAMESPACE)",
    )
    parser.add_argument(
        "--loglevel",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level",
    )


def run(args: argparse.Namespace) -> int:
    """Start the worker; returns when it was stopped (exit code 0)."""
    import faust

    from stream_app.scoring.bundle import load_bundle
    from stream_app.scoring.model_store import load_compatible, read_selection
    from stream_app.scoring.policy import load_policy
    from stream_app.topics import stream_topics, validate_namespace
    from stream_app.worker.app import create_app

    overrides: dict[str, Any] = {}
    if args.models is not None:
        overrides["model_dir"] = args.models
    if args.namespace is not None:
        overrides["namespace"] = validate_namespace(args.namespace)
    settings = Settings.from_env(**overrides)
    topics = stream_topics(settings.namespace)
    # A bundle, or a model store's serving bundle and challengers, and the alert policy; a
    # bad one is an error line, not a crash.
    selection = read_selection(settings.model_dir)
    bundle = load_bundle(selection.serving)
    for challenger in selection.challengers:
        load_compatible(challenger, bundle)
    if settings.alert_policy:
        load_policy(settings.alert_policy)
    _wait_for_dependencies(settings, topics.all)  # so are a refused login, a bad topic
    app = create_app(settings, bundle)
    worker = faust.Worker(app, loglevel=args.loglevel.upper(), redirect_stdouts=False)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


def _wait_for_dependencies(settings: Settings, names: tuple[str, ...]) -> None:
    """Check that Redis answers, create and check the topics; while Redis or the broker is
    unreachable, retry with the worker's backoff. A refused login or an untrusted
    certificate is an :class:`~stream_app.errors.AuthenticationFailed` (no retry)."""
    from stream_app.connections import KafkaConnection, RedisConnection, check_redis
    from stream_app.topics import ensure_topics
    from stream_app.worker.metrics import WorkerMetrics
    from stream_app.worker.retry import Backoff

    kafka = KafkaConnection.from_settings(settings)
    redis = RedisConnection.from_settings(settings)

    async def check() -> None:
        await check_redis(redis)
        await ensure_topics(kafka, names, settings.topic_partitions, settings.topic_replication)

    asyncio.run(Backoff("Redis or the Kafka broker", WorkerMetrics()).call(check))
