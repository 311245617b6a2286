"""The Faust app of ``fraudstream worker``: lifecycle, web server, the batch runtime.

Faust owns the process (CLI worker, signals, start/stop order) and the web server with
``/metrics`` (Prometheus text) and ``/health``. The topics are *not* Faust agents:
:class:`StreamRuntime`, a service started with the app, runs the batched consumer of
:mod:`stream_app.worker.batch_worker` for transactions *and* labels (Faust's per-message dispatch
caps near 5k events/s, labels arrive as fast as transactions, and both update the same
cached customer windows). Faust's own Kafka clients are therefore switched off (with no
agent its consumer would crash on an empty subscription); the session timeout (6 s) and
heartbeat (1 s) settings apply to the batch consumer. No Faust Tables: state is in Redis.
Run it in-process (tests, benchmarks) with::

    app = create_app(settings, load_bundle("models/current"))
    await app.start()           # ... app.stop()
"""

from __future__ import annotations

import gc
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.app.base import BootStrategy
from mode import Service

from stream_app.features.redis_store import RedisWindowStore
from stream_app.features.spec import feature_set
from stream_app.scoring.bundle import ModelBundle
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.topics import StreamTopics, ensure_topics, stream_topics
from stream_app.worker.batch_worker import BatchWorker
from stream_app.worker.metrics import CONTENT_TYPE, WorkerMetrics
from stream_app.worker.pipeline import Pipeline
from stream_app.worker.publisher import BatchPublisher
from stream_app.worker.retry import Backoff
from stream_app.worker.window_process import (
    WindowProcess,
    WindowStoreConfig,
    redis_window_store,
)

log = logging.getLogger(__name__)

_PRODUCER_BATCH_BYTES = 256 * 1024
_PRODUCER_LINGER_MS = 2
_REDIS_TIMEOUT_S = 5.0  # a hung Redis becomes an error the worker retries with backoff
# The hot path allocates many short-lived tuples: with CPython's default (700, 10, 10) a
# young collection ran every few hundred events and full ones scanned the window cache,
# about a tenth of the worker's time (bench_worker, measured with gc callbacks).
_GC_THRESHOLDS = (20_000, 20, 20)


class _BatchRuntimeBoot(BootStrategy):
    """Faust without its own Kafka consumer/producer: the batch runtime owns those."""

    enable_kafka = False


class WorkerApp(faust.App):
    """The Faust app with the batch runtime it starts (``app.runtime``)."""

    BootStrategy = _BatchRuntimeBoot
    runtime: StreamRuntime

    async def on_start(self) -> None:
        """Faust's start without touching ``self.consumer``: that would build Faust's
        Kafka consumer (and its thread's event loop) although it never runs here."""
        self.finalize()


class StreamRuntime(Service):
    """Topics, bundle, Redis store, producer and batch worker, started and stopped together."""

    def __init__(self, settings: Settings, bundle: ModelBundle, **kwargs: Any) -> None:
        self.settings = settings
        self.bundle = bundle
        self.topics: StreamTopics = stream_topics(settings.namespace)
        self.metrics = WorkerMetrics()
        self.ready = False
        self._worker: BatchWorker | None = None
        self._producer: Any = None
        self._window_process: WindowProcess | None = None
        self._close_store: Callable[[], Awaitable[None]] | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Check topics and bundle, connect Redis and the broker, start consuming."""
        settings, topics = self.settings, self.topics
        bundle = self.bundle
        scorer = Scorer.from_settings(bundle, settings)
        features = feature_set(bundle.manifest.feature_set, bundle.manifest.label_delay_days)
        await Backoff("kafka", self.metrics).call(
            lambda: ensure_topics(
                settings.kafka_bootstrap,
                topics.all,
                settings.topic_partitions,
                settings.topic_replication,
            )
        )
        redis_backoff = Backoff("redis", self.metrics)
        config = WindowStoreConfig(
            redis_url=settings.redis_url,
            feature_set=features,
            key_prefix=topics.redis_key_prefix,
            ttl_days=settings.redis_key_ttl_days,
            redis_timeout_s=_REDIS_TIMEOUT_S,
        )
        store: RedisWindowStore | WindowProcess
        if settings.window_process:
            store = self._window_process = await WindowProcess.start(config, redis_backoff)
        else:
            store, self._close_store = redis_window_store(config)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{topics.consumer_group}-producer",
            acks="all",
            linger_ms=_PRODUCER_LINGER_MS,
            max_batch_size=_PRODUCER_BATCH_BYTES,
        )
        await self._producer.start()
        pipeline: Pipeline[Any] = Pipeline(
            topics=topics,
            store=store,
            scorer=scorer,
            publisher=BatchPublisher(self._producer),
            metrics=self.metrics,
            dlq_partitions=settings.topic_partitions,
            publish_scores=settings.publish_scores,
            max_payload_bytes=settings.max_payload_bytes,
            redis_backoff=redis_backoff,
        )
        self._worker = BatchWorker(settings, topics, pipeline, self.metrics)
        await self._worker.start()
        gc.freeze()  # what start-up built lives as long as the worker: out of every collection
        gc.set_threshold(*_GC_THRESHOLDS)
        self.ready = True
        log.info(
            "fraudstream worker: namespace %s, model %s, topics %s",
            topics.namespace,
            bundle.model_version,
            ", ".join(topics.all),
        )

    @Service.task
    async def _run(self) -> None:
        if self._worker is not None:
            await self._worker.run()

    async def drained(self) -> None:
        """Return once every record consumed so far is scored, written and committed."""
        if self._worker is not None:
            await self._worker.drained()

    async def on_stop(self) -> None:
        """Finish in-flight batches, then close the consumer, producer and Redis."""
        self.ready = False
        if self._worker is not None:
            await self._worker.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._window_process is not None:
            await self._window_process.close()
        if self._close_store is not None:
            await self._close_store()


def create_app(settings: Settings, bundle: ModelBundle) -> WorkerApp:
    """The worker's Faust app for ``settings.namespace``, scoring with ``bundle``."""
    topics = stream_topics(settings.namespace)
    app = WorkerApp(
        f"{topics.consumer_group}-app",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        # Faust creates its data dir even without tables: keep it out of the working tree
        datadir=str(Path(tempfile.gettempdir()) / "{conf.name}-data"),
        autodiscover=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
    )
    runtime = app.runtime = StreamRuntime(settings, bundle)

    async def start_runtime() -> None:
        await app.add_runtime_dependency(runtime)

    app.task(start_runtime)

    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type=: pass the header as such
        return view.bytes(runtime.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/health")
    async def health(view: Any, request: Any) -> Any:
        healthy = runtime.ready and not runtime.crashed
        return view.json(
            {
                "status": "ok" if healthy else "starting" if not runtime.crashed else "failed",
                "namespace": topics.namespace,
            },
            status=200 if healthy else 503,
        )

    return app
