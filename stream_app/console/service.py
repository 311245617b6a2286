"""The console's moving parts: topic readers, the label producer, the worker's metrics.

:class:`Console` follows the namespace's alerts, transactions, scores and labels topics
from their beginning (no consumer group: reading moves nobody's offsets; tansu's end
offsets are wrong, so "the last N records" cannot be sought reliably) into a bounded
:class:`~stream_app.console.state.ConsoleState`, reads the worker's ``/metrics`` every
``METRICS_INTERVAL_S``, and publishes analysts' decisions as labels. Every client is built
by :mod:`stream_app.connections`, so the Kafka security settings apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_app.connections import KafkaConnection, kafka_producer, start_client
from stream_app.console.decisions import AuditLog, Decision, label_for
from stream_app.console.state import ConsoleState
from stream_app.console.stats import Scrape, parse, summarize
from stream_app.contracts import Alert, encode_label, to_epoch_us
from stream_app.errors import ConfigError, DependencyUnavailable, FraudstreamError
from stream_app.settings import Settings
from stream_app.tools.topic_reader import read_topic
from stream_app.topics import ensure_topics, stream_topics

METRICS_INTERVAL_S = 2.0
METRICS_TIMEOUT_S = 1.5
RETRY_S = 2.0
SEND_TIMEOUT_MS = 10_000


def metrics_url(settings: Settings) -> str:
    """The worker's ``/metrics`` URL: ``console_metrics_url``, else the worker's own web
    host and port from the same settings."""
    url = settings.console_metrics_url or (
        f"http://{settings.web_host}:{settings.web_port}/metrics"
    )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"FRAUDSTREAM_CONSOLE_METRICS_URL={url!r} is not an http(s) URL; set it to the "
            "worker's metrics page, e.g. http://127.0.0.1:6066/metrics"
        )
    return url


class Console:
    """State, feeds and the label producer of one namespace's console."""

    def __init__(
        self,
        settings: Settings,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.kafka = KafkaConnection.from_settings(settings)
        self.topics = stream_topics(settings.namespace)
        self.state = ConsoleState(settings.console_max_alerts)
        self.audit = AuditLog(Path(settings.console_audit_log))
        self.metrics_url = metrics_url(settings)
        self.worker_status = "not read yet"
        self.feed_errors: dict[str, str] = {}
        self._scrapes: tuple[Scrape | None, Scrape | None] = (None, None)
        self._now = now
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Check the topics exist (creating missing ones, as every fraudstream process
        does: tansu drops records sent to an unknown topic), start the producer, the topic
        readers and the metrics poller."""
        topics = self.topics
        await ensure_topics(
            self.kafka,
            (topics.transactions, topics.labels, topics.alerts, topics.scores),
            self.settings.topic_partitions,
            self.settings.topic_replication,
        )
        producer = kafka_producer(self.kafka, acks="all", request_timeout_ms=SEND_TIMEOUT_MS)
        await start_client(producer, self.kafka)
        self._producer = producer
        feeds: Sequence[tuple[str, Callable[[Iterable[bytes | None]], None]]] = (
            (topics.alerts, self.state.on_alerts),
            (topics.transactions, self.state.on_transactions),
            (topics.scores, self.state.on_scores),
            (topics.labels, self.state.on_labels),
        )
        self._tasks = [asyncio.create_task(self._follow(t, h)) for t, h in feeds]
        self._tasks.append(asyncio.create_task(self._poll_metrics()))

    async def stop(self) -> None:
        """Stop the readers, the poller and the producer."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()

    def figures(self) -> dict[str, Any]:
        """The worker's figures (None where a metric is absent) and whether it answers."""
        before, now = self._scrapes
        return {
            "worker": self.worker_status,
            "metrics_url": self.metrics_url,
            "figures": summarize(now, before),
        }

    async def decide(self, alert: Alert, analyst: str, is_fraud: bool) -> Decision:
        """Publish the label of ``analyst``'s decision on ``alert`` (acknowledged by the
        broker), then log it; :class:`DependencyUnavailable` when the broker refuses."""
        if self._producer is None:
            raise DependencyUnavailable("the console is not started; start it first")
        label = label_for(alert, is_fraud, self._now())
        try:
            sent = await self._producer.send_and_wait(
                self.topics.labels,
                encode_label(label),
                key=label.customer_id.encode(),
                timestamp_ms=to_epoch_us(label.label_time) // 1000,
            )
        except KafkaError as exc:
            raise DependencyUnavailable(
                f"the label of transaction {label.transaction_id!r} was not published to "
                f"{self.topics.labels!r} ({exc!r}); check the broker and decide again"
            ) from exc
        decision = Decision(
            analyst, alert.alert_id, label, self.topics.labels, sent.partition, sent.offset
        )
        self.audit.append(decision)
        self.state.record_label(label, analyst)
        return decision

    async def _follow(
        self, topic: str, handle: Callable[[Iterable[bytes | None]], None]
    ) -> None:
        def on_records(_tp: Any, records: Sequence[Any]) -> None:
            self.feed_errors.pop(topic, None)
            handle(record.value for record in records)

        while not self._stop.is_set():
            try:
                await read_topic(self.kafka, topic, on_records, follow=True, stop=self._stop)
            except FraudstreamError as exc:
                self.feed_errors[topic] = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)

    async def _poll_metrics(self) -> None:
        timeout = aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                try:
                    async with session.get(self.metrics_url) as response:
                        response.raise_for_status()
                        text = await response.text()
                    scrape = parse(text, time.monotonic())
                    self._scrapes = (self._scrapes[1], scrape)
                    self.worker_status = "up"
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    self._scrapes = (None, None)
                    self.worker_status = f"unreachable ({exc.__class__.__name__})"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), METRICS_INTERVAL_S)
