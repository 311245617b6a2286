"""The Faust app of ``fraudstream worker``: lifecycle, web server, the batch runtime.

Faust owns the process (CLI worker, signals, start/stop order) and runs the web server of
:mod:`stream_app.worker.web` (``/metrics``, ``/health``, ``/ready``; Faust's own pages are not
served). The topics are *not* Faust agents:
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

import asyncio
import gc
import logging
import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service

from stream_app.ahead import AheadLimit
from stream_app.connections import (
    KafkaConnection,
    RedisConnection,
    check_redis,
    kafka_consumer,
    kafka_producer,
)
from stream_app.features.redis_slots import ClusterOptions
from stream_app.features.redis_store import RedisStoreConfig
from stream_app.features.spec import feature_set
from stream_app.features.store import WindowStore
from stream_app.scoring.bundle import ModelBundle
from stream_app.scoring.model_store import is_store, load_compatible, read_selection
from stream_app.scoring.policy import AlertPolicy, DailyThresholds, load_policy
from stream_app.scoring.redis_day_scores import RedisDayScores
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.topics import DEFAULT_NAMESPACE, StreamTopics, ensure_topics, stream_topics
from stream_app.worker.align import Alignment
from stream_app.worker.barrier import LabelBarrier
from stream_app.worker.batch_worker import BatchWorker
from stream_app.worker.batches import Sent, Windowed
from stream_app.worker.commit import Committer, Publish
from stream_app.worker.decode import Decoder
from stream_app.worker.emit import Emitter
from stream_app.worker.fetch import POLL_STALE_S, Fetcher, FetchPacing, batch_consumer
from stream_app.worker.grace import ArrivalSkew
from stream_app.worker.lag import ConsumerLag, HighwaterProbe, probe_loop
from stream_app.worker.metrics import CONTENT_TYPE, WorkerMetrics
from stream_app.worker.models import Models, ServedModel, Serving
from stream_app.worker.publisher import BatchPublisher
from stream_app.worker.readiness import Failing, Readiness, RedisPing
from stream_app.worker.redis_stats import RedisStats
from stream_app.worker.retry import Backoff
from stream_app.worker.runner import Lane, Runner
from stream_app.worker.score import Score
from stream_app.worker.web import WorkerWeb
from stream_app.worker.window_process import WindowProcess
from stream_app.worker.windows import Windows

log = logging.getLogger(__name__)

_PRODUCER_BATCH_BYTES = 256 * 1024
_PRODUCER_LINGER_MS = 2
_QUEUE_DEPTH = 1  # batches waiting for the windows lane, and computed ones for scoring
_SENT_DEPTH = 3  # batches waiting for their acknowledgements, and for their window writes
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
    """Topics, bundle, window store, producer and batch worker, started and stopped together."""

    def __init__(self, settings: Settings, bundle: ModelBundle, **kwargs: Any) -> None:
        self.settings = settings
        self.bundle = bundle
        self.topics: StreamTopics = stream_topics(settings.namespace)
        self.metrics = WorkerMetrics(drift_window=settings.drift_window)
        self.ready = False  # started, not stopping: the readiness checks apply
        self._kafka_connection = KafkaConnection.from_settings(settings)
        self._redis_connection = RedisConnection.from_settings(settings)
        self.readiness = Readiness(
            RedisPing(self._redis_connection),
            self.topics.transactions,
            stall_s=settings.ready_stall_s,
        )
        self._worker: BatchWorker | None = None
        self._probe: HighwaterProbe | None = None
        self._redis_stats: RedisStats | None = None
        self._producer: Any = None
        self._store: WindowStore[Any] | None = None
        self._day_scores_client: Any = None
        self.models: Models | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Check topics and bundle, connect Redis and the broker, start consuming."""
        settings, topics, metrics = self.settings, self.topics, self.metrics
        self.models = await asyncio.to_thread(self._models)
        kafka, redis = Backoff("kafka", metrics), Backoff("redis", metrics)
        await kafka.call(
            lambda: ensure_topics(
                self._kafka_connection,
                topics.all,
                settings.topic_partitions,
                settings.topic_replication,
            )
        )
        await redis.call(lambda: check_redis(self._redis_connection))
        self._store = await self._open_store(redis)
        self._producer = kafka_producer(
            self._kafka_connection,
            client_id=f"{topics.consumer_group}-producer",
            acks="all",
            linger_ms=_PRODUCER_LINGER_MS,
            max_batch_size=_PRODUCER_BATCH_BYTES,
        )
        await self._producer.start()
        self._worker = self._batch_worker(self.models, self._store, kafka, redis)
        await self._worker.start(kafka)
        if settings.redis_stats_interval_s > 0 and not settings.redis_cluster:
            client = self._redis_connection.async_client(
                socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
            )
            self._redis_stats = RedisStats(client, topics.redis_key_prefix, metrics)
        gc.freeze()  # what start-up built lives as long as the worker: out of every collection
        gc.set_threshold(*_GC_THRESHOLDS)
        self.ready = True
        serving = self.models.serving
        log.info(
            "fraudstream worker: namespace %s, model %s, challengers [%s], %s, topics %s",
            topics.namespace,
            serving.model.version,
            ", ".join(c.version for c in serving.challengers),
            serving.policy.describe(),
            ", ".join(topics.all),
        )

    def _models(self) -> Models:
        """The bundle, the challengers of a model store and the policy in force at start (a
        bad challenger or policy file stops the start with its error)."""
        settings = self.settings
        location = Path(settings.model_dir)
        policy_file = Path(settings.alert_policy) if settings.alert_policy else None
        policy = load_policy(policy_file) if policy_file else AlertPolicy()
        self._day_scores_client = self._redis_connection.async_client(
            socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
        )

        def build(path: Path, bundle: ModelBundle, policy: AlertPolicy) -> ServedModel:
            days = RedisDayScores(
                self._day_scores_client,
                self.topics.redis_key_prefix,
                bundle.model_version,
                settings.redis_key_ttl_days,
            )
            return ServedModel(
                path,
                Scorer.from_settings(bundle, settings),
                DailyThresholds(policy, bundle.threshold, days),
            )

        challengers = read_selection(location).challengers if is_store(location) else ()
        serving = Serving(
            build(self.bundle.path, self.bundle, policy),
            tuple(build(p, load_compatible(p, self.bundle), policy) for p in challengers),
            policy,
        )
        return Models(
            serving,
            build,
            self.metrics,
            location=location,
            policy_file=policy_file,
            poll_s=settings.model_poll_ms / 1000,
        )

    async def _open_store(self, redis: Backoff) -> WindowStore[Any]:
        """The Redis window store, in a child process unless ``window_process`` is off."""
        manifest = self.bundle.manifest
        config = RedisStoreConfig(
            connection=self._redis_connection,
            feature_set=feature_set(manifest.feature_set, manifest.label_delay_days),
            key_prefix=self.topics.redis_key_prefix,
            ttl_days=self.settings.redis_key_ttl_days,
            redis_timeout_s=_REDIS_TIMEOUT_S,
            pseudonym_key=self.settings.pseudonym_key.encode(),
            cluster=ClusterOptions(
                self.settings.redis_wait_replicas, self.settings.redis_wait_timeout_ms
            ),
        )
        if self.settings.window_process:
            return await WindowProcess.start(config, redis)
        return config.open()

    def _batch_worker(
        self, models: Models, store: WindowStore[Any], kafka: Backoff, redis: Backoff
    ) -> BatchWorker:
        """The stages, wired: fetch -> decode -> align -> barrier (the worker's source),
        then windows -> score, publish -> acknowledge -> store, then commit."""
        settings, topics, metrics = self.settings, self.topics, self.metrics
        pacing = FetchPacing(settings.fetch_max_wait_ms, settings.fetch_max_wait_busy_ms)
        consumer = self.readiness.consumer = batch_consumer(settings, topics)
        lags = ConsumerLag(consumer, metrics)
        fetcher = Fetcher(consumer, topics, settings.batch_max_events, pacing, lags)
        probe = self._probe = HighwaterProbe(
            lambda: kafka_consumer(
                self._kafka_connection,
                group_id=None,
                enable_auto_commit=False,
                client_id=f"{topics.consumer_group}-lag-probe",
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )
        )
        decoder = Decoder(
            topics,
            metrics,
            dlq_partitions=settings.topic_partitions,
            max_payload_bytes=settings.max_payload_bytes,
            ahead=AheadLimit(settings.event_clock, settings.max_event_ahead_s),
        )
        grace_cap_s = settings.align_idle_ms / 1000
        grace_floor_s = settings.fetch_max_wait_ms / 1000
        alignment = Alignment(
            fetcher,
            topics.transactions,
            metrics,
            max_buffered=settings.align_max_buffered_events,
            max_per_partition=2 * settings.batch_max_events,
            max_wait_s=settings.align_max_wait_ms / 1000,
            grace=ArrivalSkew(floor_s=grace_floor_s, cap_s=grace_cap_s),
        )
        barrier = LabelBarrier(
            fetcher,
            decoder,
            topics,
            metrics,
            timeout_s=settings.label_barrier_timeout_ms / 1000,
            poll_s=settings.batch_max_wait_ms / 1000,
            grace=ArrivalSkew(floor_s=grace_floor_s, cap_s=grace_cap_s),
        )
        windows = Windows(store, redis, metrics)
        emitter = Emitter(
            topics,
            metrics,
            publish_scores=settings.publish_scores,
            dlq_partitions=settings.topic_partitions,
        )
        warmups_silent = settings.namespace != DEFAULT_NAMESPACE
        score = Score(models, emitter, metrics, redis, honor_warmup=warmups_silent)
        publish = Publish(BatchPublisher(self._producer), kafka, metrics)

        async def score_and_publish(windowed: Windowed) -> Sent | None:
            scored = await score(windowed)
            return None if scored is None else await publish(scored)

        committer = Committer(
            fetcher.consumer, kafka, metrics, interval_s=settings.commit_interval_ms / 1000
        )
        runner = Runner(
            [
                Lane("windows", windows.compute, _QUEUE_DEPTH),
                Lane("score", score_and_publish, _QUEUE_DEPTH),
                Lane("acknowledge", publish.acknowledge, _SENT_DEPTH),
                Lane("store", windows.store, _SENT_DEPTH, grouped=True),
            ],
            sink=committer.stored,
            metrics=metrics,
            loops=[
                ("commit", committer.loop),
                ("lag", lambda: probe_loop(consumer, lags, probe, POLL_STALE_S)),
            ],
        )
        self.readiness.watch_progress(lags, runner.stalled_s)
        return BatchWorker(
            settings, topics, fetcher, decoder, alignment, barrier, committer, runner, windows
        )

    @Service.task
    async def _run(self) -> None:
        if self._worker is not None:
            await self._worker.run()

    @Service.task
    async def _watch_models(self) -> None:
        """Swap the bundles or the policy when the model store or the policy file changes."""
        if self.models is not None and self.models.watched:
            await self.models.watch()

    @Service.task
    async def _sample_redis(self) -> None:
        """Window-key counts and Redis memory every ``redis_stats_interval_s``."""
        if self._redis_stats is not None:
            await self._redis_stats.loop(self.settings.redis_stats_interval_s)

    async def drained(self) -> None:
        """Return once every record consumed so far is scored, written and committed."""
        if self._worker is not None:
            await self._worker.drained()

    async def not_ready(self) -> Failing:
        """The readiness checks that fail (empty: ready); ``worker`` while not running."""
        if self.crashed:
            return {"worker": f"crashed: {self.crash_reason!r}"}
        if not self.ready:
            return {"worker": "starting" if self._worker is None else "stopping"}
        return await self.readiness.failing()

    async def on_stop(self) -> None:
        """Finish in-flight batches, then close the consumer, producer and window store."""
        self.ready = False
        if self._worker is not None:
            await self._worker.stop()
        if self._probe is not None:
            await self._probe.close()
        if self._redis_stats is not None:
            await self._redis_stats.close()
        if self._producer is not None:
            await self._producer.stop()
        if self._store is not None:
            await self._store.close()
        if self._day_scores_client is not None:
            await self._day_scores_client.aclose()
        await self.readiness.close()


def create_app(settings: Settings, bundle: ModelBundle) -> WorkerApp:
    """The worker's Faust app for ``settings.namespace``, scoring with ``bundle``."""
    topics = stream_topics(settings.namespace)
    kafka = KafkaConnection.from_settings(settings)
    app = WorkerApp(
        f"{topics.consumer_group}-app",
        broker=kafka.faust_broker(),
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        # Faust creates its data dir even without tables: keep it out of the working tree
        datadir=str(Path(tempfile.gettempdir()) / "{conf.name}-data"),
        autodiscover=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        web_port=settings.web_port,  # shown in the process title; WorkerWeb binds it
        web_enabled=True,
    )
    runtime = app.runtime = StreamRuntime(settings, bundle)

    async def start_runtime() -> None:
        await app.add_runtime_dependency(runtime)

    app.task(start_runtime)

    app.web_server(
        WorkerWeb(
            settings.web_host,
            settings.web_port,
            topics.namespace,
            metrics=runtime.metrics.render,
            metrics_type=CONTENT_TYPE,
            alive=lambda: not runtime.crashed,
            failing=runtime.not_ready,
        )
    )
    return app
