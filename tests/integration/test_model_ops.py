"""Model operations on a live worker (real tansu broker and redis-server): a bundle swapped
under load, a corrupted bundle refused, challengers in the shadow, a daily alert budget.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np
import pytest
import redis

from stream_app.contracts import alert_id, decode_alert, decode_score, decode_shadow
from stream_app.scoring.backtest import backtest
from stream_app.scoring.bundle import load_bundle
from stream_app.scoring.model_store import CHALLENGERS, CURRENT, promote
from stream_app.scoring.policy import load_policy
from stream_app.scoring.scorer import Scorer
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.worker.app import WorkerApp
from tests.integration.worker_support import (
    bundle_with_threshold,
    counter_value,
    create_topics,
    read_all,
    replay_at_rate,
    replay_history,
    running_worker,
    small_history,
    wait_for,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.train]

TIMEOUT_S = 90


def _store(root: Path, current: str, **bundles: float) -> Path:
    """A model store with a bundle per name (the tiny bundle at the given threshold)."""
    store = root / "models"
    store.mkdir()
    for name, threshold in bundles.items():
        shutil.copytree(bundle_with_threshold(threshold), store / name)
    (store / CURRENT).write_text(f"{current}\n", encoding="utf-8")
    return store


def _serving(app: WorkerApp) -> str:
    models = app.runtime.models
    assert models is not None
    return models.serving.model.version


async def _score_all(app: WorkerApp, history: TransactionHistory, settings: Settings) -> None:
    """Replay ``history`` and wait until the worker scored and committed all of it."""
    await replay_history(history, settings)
    await wait_for(
        lambda: counter_value(app, "fraudstream_scores_out_total") >= len(history),
        TIMEOUT_S, "every score",
    )
    await app.runtime.drained()


def _settings(kafka_bootstrap: str, redis_url: str, store: Path, **changes: object) -> Settings:
    return worker_settings(
        kafka_bootstrap, redis_url, model_dir=str(store), model_poll_ms=50,
        publish_scores=True, **changes,
    )  # fmt: skip


async def test_a_bundle_swapped_under_load_scores_every_transaction_once_per_version(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = _store(tmp_path, "a", a=0.5, b=0.25)
    corrupted = shutil.copytree(store / "a", store / "c")
    onnx = corrupted / "combined.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    version = {name: load_bundle(store / name).model_version for name in ("a", "b")}
    settings = _settings(kafka_bootstrap, redis_url, store)
    topics = await create_topics(settings)
    history = small_history(n_days=14)
    async with running_worker(settings, load_bundle(store / "a")) as app:
        feed = asyncio.create_task(
            asyncio.to_thread(replay_at_rate, history, kafka_bootstrap, settings.namespace, 150)
        )
        await wait_for(lambda: counter_value(app, "fraudstream_scores_out_total") >= 150,
                       TIMEOUT_S, "scores of bundle a")
        promote(store, "b")
        await wait_for(lambda: _serving(app) == version["b"], TIMEOUT_S, "the swap to b")
        (store / CURRENT).write_text("c\n", encoding="utf-8")  # a corrupted bundle
        await wait_for(lambda: counter_value(app, "fraudstream_model_refusals_total") >= 1,
                       TIMEOUT_S, "the corrupted bundle's refusal")
        assert not feed.done(), "the replay ended before the swaps: slow it down"
        await feed
        await app.runtime.drained()
        assert _serving(app) == version["b"]
        assert counter_value(app, "fraudstream_model_swaps_total") == 1
        assert counter_value(app, "fraudstream_model_refusals_total") == 1  # logged once
        assert counter_value(app, "fraudstream_model_info", role="serving",
                             model_version=version["b"], policy="bundle") == 1
        assert counter_value(app, "fraudstream_model_info", role="serving",
                             model_version=version["a"], policy="bundle") == 0
    scores = await read_all(kafka_bootstrap, topics.scores)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    versions_by_partition: dict[int, list[str]] = defaultdict(list)
    for record in sorted(scores, key=lambda r: (r.partition, r.offset)):
        score = decode_score(record.value)
        seen[score.transaction_id, score.model_version] += 1
        versions_by_partition[record.partition].append(score.model_version)
    assert set(seen.values()) == {1}, "a transaction scored twice by one version"
    scored = {tx for tx, _ in seen}
    assert scored == set(history.transaction_id.tolist()), "a transaction was lost"
    assert len(seen) == len(scored), "a transaction scored by both versions without a restart"
    assert {v for _, v in seen} == {version["a"], version["b"]}
    for in_order in versions_by_partition.values():  # a, ..., a, b, ..., b: between batches
        assert in_order == sorted(in_order, key=lambda v: v == version["b"])
    alerts = [decode_alert(r.value) for r in await read_all(kafka_bootstrap, topics.alerts)]
    assert alerts
    for alert in alerts:
        assert alert.model_version in version.values()
        assert alert.alert_id == alert_id(alert.transaction_id, alert.model_version)
        assert alert.threshold == (0.5 if alert.model_version == version["a"] else 0.25)


async def test_challengers_score_into_the_shadow_topic_and_never_alert(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    store = _store(tmp_path, "serving", serving=1.0, challenger=0.0)
    (store / CHALLENGERS).write_text("challenger\n", encoding="utf-8")
    serving = load_bundle(store / "serving")
    challenger = load_bundle(store / "challenger").model_version
    settings = _settings(kafka_bootstrap, redis_url, store)
    topics = await create_topics(settings)
    history = small_history(n_days=10)
    async with running_worker(settings, serving) as app:
        await _score_all(app, history, settings)
        assert counter_value(app, "fraudstream_model_info", role="challenger",
                             model_version=challenger, policy="bundle") == 1
    shadow = [decode_shadow(r.value) for r in await read_all(kafka_bootstrap, topics.shadow)]
    scores = {
        s.transaction_id: s
        for s in (decode_score(r.value) for r in await read_all(kafka_bootstrap, topics.scores))
    }
    assert sorted(s.transaction_id for s in shadow) == sorted(history.transaction_id.tolist())
    for record in shadow:
        assert record.model_version == challenger
        assert record.serving_model_version == serving.model_version
        assert record.would_alert  # threshold 0: the challenger would alert on everything
        assert record.serving_score == scores[record.transaction_id].score
        assert record.serving_alert is scores[record.transaction_id].is_alert is False
    assert shadow and not scores[shadow[0].transaction_id].is_alert
    assert await read_all(kafka_bootstrap, topics.alerts) == []  # serving threshold 1


async def test_a_daily_budget_alerts_in_the_stream_exactly_as_in_the_backtest(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.json"
    policy_file.write_bytes(msgspec.json.encode(
        {"schema": "policy.v1", "name": "top-5", "daily_budget": 5, "threshold": 0.0}
    ))
    store = _store(tmp_path, "a", a=0.5)
    bundle = load_bundle(store / "a")
    settings = _settings(kafka_bootstrap, redis_url, store, alert_policy=str(policy_file))
    topics = await create_topics(settings)
    history = small_history(n_days=12)
    async with running_worker(settings, bundle) as app:
        await _score_all(app, history, settings)
    expected = backtest(history, Scorer(bundle), policy=load_policy(policy_file))
    want = dict(zip(expected.transaction_id.tolist(), expected.thresholds.tolist(), strict=True))
    scores = [decode_score(r.value) for r in await read_all(kafka_bootstrap, topics.scores)]
    assert len(scores) == len(want)
    for score in scores:
        assert score.policy == "top-5"
        assert score.threshold == want[score.transaction_id], score.transaction_id
    alerts = {a.transaction_id: a for a in
              (decode_alert(r.value) for r in await read_all(kafka_bootstrap, topics.alerts))}
    alert_rows = np.flatnonzero(expected.scores.is_alert)
    assert set(alerts) == set(expected.transaction_id[alert_rows].tolist())
    assert any(a.threshold != bundle.threshold for a in alerts.values())  # the policy's
    explained = dict(zip(expected.transaction_id[alert_rows].tolist(),
                         expected.scores.reasons_for(alert_rows), strict=True))
    for transaction_id, alert in alerts.items():  # reasons explain the policy's alerts too
        want = explained[transaction_id]
        assert [r.feature for r in alert.reasons] == [f for f, _, _ in want]
        np.testing.assert_allclose([(r.contribution, r.value) for r in alert.reasons],
                                   np.array([(c, v) for _, c, v in want]).reshape(-1, 2),
                                   atol=1e-6, rtol=1e-6)
        assert alert.reasons_baseline == expected.scores.baseline_score
    days = expected.event_time_us // 86_400_000_000
    for day in np.unique(days).tolist():  # the budget's rule, computed here on its own
        previous = np.sort(expected.scores.score[days == day - 1])[::-1]
        rule = float(previous[4]) if len(previous) >= 5 else 0.0
        assert set(expected.thresholds[days == day].tolist()) == {rule}, day
    keys = redis_client.keys(f"{topics.redis_key_prefix}budget:{bundle.model_version}:*")
    assert len(keys) == len(np.unique(days))
    assert all(redis_client.zcard(key) <= 5 for key in keys)
