"""The always-on stream scores exactly what ``fraudstream backtest`` scores.

A small simulated history is replayed (transactions and labels on the event-time clock)
through a worker on the real tansu broker and redis-server, which publishes every score;
``fraudstream backtest`` scores the same history with the same bundle. Every
transaction's score must agree to 1e-6, the alert sets must be identical and so must each
alert's reasons (inputs, contributions and values to 1e-6, baseline), also with
pseudonymous ids (then Redis holds only the ids' pseudonyms; alerts keep the ids).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from aiokafka import TopicPartition

from stream_app.cli import main as fraudstream
from stream_app.contracts import Alert, TransactionScore, decode_alert
from stream_app.pseudonyms import Pseudonymizer
from stream_app.scoring.bundle import load_bundle
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.tools.topic_reader import read_topic
from stream_app.topics import StreamTopics
from tests.integration.stream_checks import assert_reasons_equal, pseudonymous_keys
from tests.integration.worker_support import (
    create_topics,
    replay_history,
    running_worker,
    worker_settings,
)
from tests.secrets import PARITY_PSEUDONYM_KEY
from tests.unit.model_bundles import tiny_bundle

pytestmark = [pytest.mark.integration, pytest.mark.train]

TOLERANCE = 1e-6
KEY = PARITY_PSEUDONYM_KEY
_SCORE = msgspec.json.Decoder(TransactionScore)


def _history() -> TransactionHistory:
    # ~1,400 transactions over 14 days: windows fill, labels arrive 7 days later.
    return simulate(50, 40, 14, dt.date(2018, 4, 1), seed=21, label_delay_days=7)


async def _stream_scores(
    history: TransactionHistory, settings: Settings
) -> tuple[dict[str, TransactionScore], dict[str, Alert]]:
    """Replay ``history`` through a worker; its score records and alerts by transaction id."""
    bootstrap = settings.kafka_bootstrap
    topics: StreamTopics = await create_topics(settings)
    scores: dict[str, TransactionScore] = {}
    alerts: dict[str, Alert] = {}
    done, stop = asyncio.Event(), asyncio.Event()

    def check_done() -> None:
        if len(scores) >= len(history) and len(alerts) >= sum(
                s.is_alert for s in scores.values()):
            done.set()

    def on_scores(_tp: TopicPartition, records: Sequence[Any]) -> None:
        scores.update((s.transaction_id, s) for s in map(_SCORE.decode, (r.value for r in records)))
        check_done()

    def on_alerts(_tp: TopicPartition, records: Sequence[Any]) -> None:
        alerts.update((a.transaction_id, a) for a in (decode_alert(r.value) for r in records))
        check_done()

    async with running_worker(settings, load_bundle(settings.model_dir)):
        readers = [
            asyncio.create_task(read_topic(bootstrap, topic, on_records, follow=True, stop=stop))
            for topic, on_records in ((topics.scores, on_scores), (topics.alerts, on_alerts))
        ]
        await replay_history(history, settings)
        try:
            await asyncio.wait_for(done.wait(), timeout=120)
        finally:
            stop.set()
            await asyncio.gather(*readers)
    return scores, alerts


@pytest.mark.parametrize(("partitions", "pseudonyms"), [(1, False), (3, False), (3, True)],
                         ids=["1", "3", "3-pseudonyms"])
def test_stream_scores_and_alerts_equal_the_backtest(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path,
    partitions: int, pseudonyms: bool
) -> None:
    # With 3 partitions the worker must still apply transactions in event-time order
    # across them: terminal windows are shared by customers of every partition.
    history = _history()
    bundle = tiny_bundle().path
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(f"{KEY}\n")
    key = Settings.from_env({"FRAUDSTREAM_PSEUDONYM_KEY_FILE": str(key_file)}).pseudonym_key
    settings = worker_settings(kafka_bootstrap, redis_url, publish_scores=True,
                               model_dir=str(bundle), batch_max_events=128,
                               topic_partitions=partitions, pseudonym_key=key if pseudonyms else "")
    scores, alerts = asyncio.run(_stream_scores(history, settings))

    path = tmp_path / "history.jsonl"
    write_jsonl(history, path)
    out = tmp_path / "backtest.parquet"
    assert fraudstream(["backtest", "--input", str(path), "--models", str(bundle),
                        "--out", str(out), "--no-progress"]) == 0
    table = pq.read_table(out).to_pydict()
    expected = dict(zip(table["transaction_id"], table["score"], strict=True))
    expected_alerts = {t for t, a in zip(table["transaction_id"], table["is_alert"],
                                         strict=True) if a}

    assert set(scores) == set(expected) == set(history.transaction_id.tolist())
    ids = sorted(expected)
    difference = np.abs(np.array([scores[t].score for t in ids])
                        - np.array([expected[t] for t in ids]))
    assert float(difference.max()) <= TOLERANCE, (
        f"{int((difference > TOLERANCE).sum())} of {len(ids)} scores differ by more than "
        f"{TOLERANCE}; worst {float(difference.max()):.3g}")
    assert 0 < len(expected_alerts) < len(ids)
    assert set(alerts) == expected_alerts
    assert {t for t, s in scores.items() if s.is_alert} == expected_alerts
    assert_reasons_equal(alerts, out)
    customers = dict(zip(history.transaction_id, history.customer_id, strict=True))
    assert all(a.customer_id == customers[t] for t, a in alerts.items()), "ids as received"
    keys = set(redis_client.scan_iter(f"fraudstream:{settings.namespace}:*"))
    if pseudonyms:
        assert keys == pseudonymous_keys(settings.namespace, history, Pseudonymizer(KEY.encode()))
    else:
        assert f"fraudstream:{settings.namespace}:v2:cust:{history.customer_id[0]}".encode() in keys
