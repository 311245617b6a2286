"""The local broker alone: produce-to-consume latency as a partition fills with batches.

The tests, the demo and the benchmarks run the tansu broker with in-memory storage. This
script shows what that broker adds to any latency measured through it, with no worker:
it fills one partition with ``--block`` single-record batches at a time (``--blocks``
times), and after each block times ``--samples`` records from the producer's hand-over
to the consumer receiving them (consumer ``fetch_max_wait_ms`` as the worker's default).
Apache Kafka finds a fetch offset through an index; if this broker's fetch cost grows
with the batches before it, so does every latency measured through it.

    .venv/bin/python benchmarks/bench_broker.py [--blocks 5] [--block 4000] [--samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
from aiokafka import AIOKafkaProducer, TopicPartition

from stream_app.connections import kafka_consumer, kafka_producer
from stream_app.local_services import start_tansu
from stream_app.settings import Settings
from stream_app.topics import ensure_topics_sync

TOPIC = "broker-probe"


async def _send_one(producer: AIOKafkaProducer, value: bytes) -> None:
    batch = producer.create_batch()
    batch.append(key=None, value=value, timestamp=None)
    await (await producer.send_batch(batch, TOPIC, partition=0))


async def probe(bootstrap: str, blocks: int, block: int, samples: int) -> None:
    """Fill the partition block by block; after each, print the latency percentiles."""
    fetch_wait_ms = Settings().fetch_max_wait_ms
    producer = kafka_producer(bootstrap, linger_ms=0)
    consumer = kafka_consumer(bootstrap, fetch_max_wait_ms=fetch_wait_ms)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    print(f"consumer fetch_max_wait_ms {fetch_wait_ms}")
    print(f"{'batches':>9}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}")
    try:
        for index in range(blocks):
            filler = [producer.create_batch() for _ in range(block)]
            futures = []
            for batch in filler:
                batch.append(key=None, value=b"x" * 150, timestamp=None)
                futures.append(await producer.send_batch(batch, TOPIC, partition=0))
            await asyncio.gather(*futures)
            await consumer.seek_to_end(tp)
            latency_ms = []
            for _ in range(samples):
                start = time.perf_counter()
                await _send_one(producer, b"probe")
                while not await consumer.getmany(tp, timeout_ms=100):
                    pass
                latency_ms.append((time.perf_counter() - start) * 1000)
            p50, p90, top = np.percentile(latency_ms, [50, 90, 100])
            filled = (index + 1) * block + index * samples
            print(f"{filled:>9,}{p50:>9.1f}{p90:>9.1f}{top:>9.1f}", flush=True)
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--block", type=int, default=4000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    with start_tansu() as kafka:
        ensure_topics_sync(kafka.address, [TOPIC], 1, 1)
        asyncio.run(probe(kafka.address, args.blocks, args.block, args.samples))


if __name__ == "__main__":
    main()
