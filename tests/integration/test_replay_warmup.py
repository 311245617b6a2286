"""``replay --from D`` scores from D exactly what ``backtest --from D`` scores.

A 50-day simulated history is replayed from day 45 into a namespace of its own: the 37
days before D go first as warm-up (transactions and labels with the warm-up header), then
D on. A worker on the real tansu broker and redis-server, publishing every score, applies
the warm-up to its windows without alerting or scoring it; ``fraudstream backtest --from
D`` warms its windows on the same horizon. Every score from D must agree to 1e-6, the alert
sets must be identical, and no warm-up transaction may be alerted or scored.
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
from aiokafka import TopicPartition

from stream_app.cli import main as fraudstream
from stream_app.contracts import TransactionScore, decode_alert, to_epoch_us
from stream_app.scoring.bundle import load_bundle
from stream_app.settings import ENV_PREFIX, Settings
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.tools.topic_reader import read_topic
from stream_app.tools.worker_process import settings_environment
from tests.integration.worker_support import (
    create_topics,
    read_all,
    running_worker,
    wait_for,
    worker_settings,
)
from tests.unit.model_bundles import tiny_bundle

pytestmark = [pytest.mark.integration, pytest.mark.train]

TOLERANCE = 1e-6
TIMEOUT_S = 120
FROM = "2018-05-15"  # day 45 of the history: the warm-up starts on day 8
_SCORE = msgspec.json.Decoder(TransactionScore)


async def _replay_and_score(
    settings: Settings, history_path: Path, monkeypatch: pytest.MonkeyPatch, expected: int
) -> tuple[dict[str, TransactionScore], set[str]]:
    """Run a worker, ``fraudstream replay --from FROM`` into its namespace; every score and
    alerted transaction id once the worker scored ``expected`` transactions and drained."""
    topics = await create_topics(settings)
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    scores: dict[str, TransactionScore] = {}
    stop = asyncio.Event()

    def on_scores(_tp: TopicPartition, records: Sequence[Any]) -> None:
        scores.update((s.transaction_id, s) for s in map(_SCORE.decode, (r.value for r in records)))

    async with running_worker(settings, load_bundle(settings.model_dir)) as app:
        reader = asyncio.create_task(
            read_topic(settings.kafka_bootstrap, topics.scores, on_scores, follow=True, stop=stop)
        )
        replayed = await asyncio.to_thread(
            fraudstream, ["replay", "--input", str(history_path), "--from", FROM, "--no-progress"]
        )
        assert replayed == 0
        try:
            await wait_for(lambda: len(scores) >= expected, TIMEOUT_S, "the scores from --from")
            await app.runtime.drained()  # the warm-up too: nothing is left to score
        finally:
            stop.set()
            await reader
    alerts = await read_all(settings.kafka_bootstrap, topics.alerts)
    every_score = await read_all(settings.kafka_bootstrap, topics.scores)
    assert len(every_score) == len(scores)  # one score per transaction scored
    return scores, {decode_alert(r.value).transaction_id for r in alerts}


def test_replay_from_a_date_scores_what_the_backtest_from_it_scores(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = simulate(40, 30, 50, dt.date(2018, 4, 1), seed=8, label_delay_days=7)
    path = tmp_path / "history.jsonl"
    write_jsonl(history, path)
    bundle = tiny_bundle().path
    start = to_epoch_us(dt.datetime.fromisoformat(FROM).replace(tzinfo=dt.UTC))
    from_start = {t for t, at in zip(history.transaction_id.tolist(),
                                     history.event_time_us.tolist(), strict=True) if at >= start}
    monkeypatch.delenv(f"{ENV_PREFIX}NAMESPACE", raising=False)
    settings = worker_settings(kafka_bootstrap, redis_url, publish_scores=True,
                               model_dir=str(bundle), batch_max_events=128)
    scores, alerts = asyncio.run(_replay_and_score(settings, path, monkeypatch, len(from_start)))

    out = tmp_path / "backtest.parquet"
    assert fraudstream(["backtest", "--input", str(path), "--models", str(bundle), "--out",
                        str(out), "--from", FROM, "--no-progress"]) == 0
    table = pq.read_table(out).to_pydict()
    expected = dict(zip(table["transaction_id"], table["score"], strict=True))
    expected_alerts = {t for t, a in zip(table["transaction_id"], table["is_alert"],
                                         strict=True) if a}

    assert set(scores) == set(expected) == from_start  # no warm-up transaction scored
    ids = sorted(expected)
    difference = np.abs(np.array([scores[t].score for t in ids])
                        - np.array([expected[t] for t in ids]))
    assert float(difference.max()) <= TOLERANCE, (
        f"{int((difference > TOLERANCE).sum())} of {len(ids)} scores differ by more than "
        f"{TOLERANCE}; worst {float(difference.max()):.3g}")
    assert 0 < len(expected_alerts) < len(ids)
    assert alerts == expected_alerts  # none of a warm-up transaction
