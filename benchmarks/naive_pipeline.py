"""The naive per-event version of the worker, the baseline of ``bench_stream.py``.

Same code as the worker (its decode, windows, score and publish stages on a
:class:`RedisWindowStore` and the bundle's :class:`Scorer`), but driven one event at a
time, as a straightforward consumer would be written: ``async for`` over the consumer, then
per event one Redis round trip, one ONNX Runtime call per graph and one send.

It reads the transactions and labels of ``--input-namespace`` (with its own consumer
group) and writes windows, scores and alerts under ``--namespace``, so it can run on the
records the batched worker was benchmarked on. Stops after ``--transactions`` events.

    .venv/bin/python benchmarks/naive_pipeline.py --bootstrap 127.0.0.1:9092 \
        --redis-url redis://127.0.0.1:6380/0 --bundle .run/demo/bundle \
        --input-namespace bench --namespace bench-naive --transactions 20000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

from aiokafka import TopicPartition

from stream_app.ahead import AheadLimit
from stream_app.connections import kafka_consumer, kafka_producer, redis_connection
from stream_app.features.redis_store import RedisWindowStore
from stream_app.features.spec import feature_set
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.topics import StreamTopics, stream_topics
from stream_app.worker.commit import Publish
from stream_app.worker.decode import Decoder
from stream_app.worker.emit import Emitter
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.models import Models
from stream_app.worker.publisher import BatchPublisher
from stream_app.worker.retry import Backoff
from stream_app.worker.score import Score
from stream_app.worker.windows import Windows


def naive_topics(input_namespace: str, namespace: str) -> StreamTopics:
    """Inputs of ``input_namespace``; outputs, group and Redis keys of ``namespace``."""
    source = stream_topics(input_namespace)
    return dataclasses.replace(
        stream_topics(namespace), transactions=source.transactions, labels=source.labels
    )


async def run_naive(
    bootstrap: str, redis_url: str, bundle_dir: str, topics: StreamTopics, transactions: int
) -> None:
    """Process events one by one until ``transactions`` transactions were scored."""
    settings = Settings.from_env(kafka_bootstrap=bootstrap, redis_url=redis_url)
    bundle = load_bundle(bundle_dir)
    metrics = WorkerMetrics()
    redis = redis_connection(redis_url).async_client()
    store = RedisWindowStore(
        redis,
        feature_set(bundle.manifest.feature_set, bundle.manifest.label_delay_days),
        key_prefix=topics.redis_key_prefix,
        ttl_days=settings.redis_key_ttl_days,
    )
    producer = kafka_producer(bootstrap)
    consumer = kafka_consumer(
        bootstrap, topics.transactions, topics.labels,
        group_id=topics.consumer_group,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
    )  # fmt: skip
    scorer = Scorer.from_settings(bundle, settings)
    decode = Decoder(
        topics, metrics, dlq_partitions=settings.topic_partitions,
        max_payload_bytes=settings.max_payload_bytes,
        ahead=AheadLimit(settings.event_clock, settings.max_event_ahead_s),
    )  # fmt: skip
    windows = Windows(store, Backoff("redis", metrics), metrics)
    emitter = Emitter(
        topics, metrics, publish_scores=True, dlq_partitions=settings.topic_partitions
    )
    score = Score(
        Models.of(scorer, metrics), emitter, metrics, Backoff("redis", metrics),
        honor_warmup=False,
    )
    publish = Publish(BatchPublisher(producer), Backoff("kafka", metrics), metrics)
    await producer.start()
    await consumer.start()
    pending: list[Any] = []
    scored = 0
    try:
        async for record in consumer:
            tp = TopicPartition(record.topic, record.partition)
            batch = decode({tp: [record]}, generation=0)
            windowed = await windows.compute(batch)
            assert windowed is not None
            sent = await publish(await score(windowed))
            pending.extend(sent.futures)
            scored += len(batch.transactions)
            if scored >= transactions:
                break
        await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--input-namespace", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--transactions", type=int, default=20_000)
    args = parser.parse_args()
    topics = naive_topics(args.input_namespace, args.namespace)
    asyncio.run(run_naive(args.bootstrap, args.redis_url, args.bundle, topics,
                          args.transactions))


if __name__ == "__main__":
    main()
