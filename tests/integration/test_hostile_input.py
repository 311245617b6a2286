"""Hostile input on the real broker and redis-server: no record can switch scoring off.

Far-future, late, conflicting, duplicate-key, control-character and tombstone records, one
by one; then generated bad records of every kind beside valid traffic (the hostile-input
suite; ``benchmarks/hostile_input.py`` runs it at benchmark size and prints the counts).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import redis

from stream_app.contracts import Transaction, encode_transaction
from stream_app.scoring.bundle import ModelBundle
from stream_app.settings import Settings
from tests.hostile_records import MAX_PAYLOAD_BYTES, Record, Traffic, hostile_traffic
from tests.integration.hostile_run import run_hostile
from tests.integration.worker_support import bundle_alerting_on_all, worker_settings

pytestmark = [pytest.mark.integration, pytest.mark.train]

T0 = dt.datetime(2018, 4, 2, 10, 0, tzinfo=dt.UTC)
TIMEOUT_S = 90
SUITE_VALID = 5_000
SUITE_BAD = 10_000


@pytest.fixture(scope="module")
def alert_everything() -> ModelBundle:
    return bundle_alerting_on_all()


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis) -> Settings:
    return worker_settings(kafka_bootstrap, redis_url, max_payload_bytes=MAX_PAYLOAD_BYTES)


def _tx(tx_id: str, at: dt.datetime, customer: str = "c1", amount: str = "12.50") -> bytes:
    return encode_transaction(Transaction(tx_id, customer, f"k-{customer}", amount, "EUR", at))


def _traffic(*bad: tuple[str, bytes | None], valid: list[tuple[str, bytes, bool]]) -> Traffic:
    """Bad records first, then the valid ones (id, value, late), all keyed by customer c1."""
    traffic = Traffic()
    for kind, value in bad:
        traffic.add_bad(kind, Record("transactions", b"c1", value))
    for tx_id, value, late in valid:
        traffic.records.append(Record("transactions", b"c1", value))
        traffic.valid[tx_id] = late
    return traffic


def test_one_far_future_transaction_cannot_switch_scoring_off(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    far = _tx("far", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    normal = [(f"n{i}", _tx(f"n{i}", T0 + dt.timedelta(hours=i)), False) for i in range(40)]
    traffic = _traffic(("far future", far), valid=normal)
    outcome = asyncio.run(run_hostile(traffic, settings, alert_everything, TIMEOUT_S))
    assert sorted(s.transaction_id for s in outcome.scores) == sorted(traffic.valid)
    ((value, reason),) = outcome.dead
    assert value == far
    assert reason.startswith("event_time 9999-12-31T23:59:59Z is ")
    assert "ahead of the worker clock" in reason and "FRAUDSTREAM_MAX_EVENT_AHEAD_S=300" in reason


def test_a_late_transaction_is_scored_and_flagged_late(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    valid = [
        ("new", _tx("new", T0 + dt.timedelta(days=60)), False),
        ("old", _tx("old", T0), True),  # 60 days before its customer's newest
        ("next", _tx("next", T0 + dt.timedelta(days=60, hours=1)), False),
    ]
    traffic = _traffic(valid=valid)
    traffic.pause_at = 1  # "new" is applied before "old" arrives
    outcome = asyncio.run(run_hostile(traffic, settings, alert_everything, TIMEOUT_S))
    late = {s.transaction_id: s.late for s in outcome.scores}
    assert late == {"new": False, "old": True, "next": False}
    assert outcome.dead == []


def test_conflicts_duplicate_keys_control_characters_and_tombstones_are_dead_letters(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    first = _tx("t1", T0)
    conflict = _tx("t1", T0, amount="99.00")
    duplicate_key = _tx("t2", T0 + dt.timedelta(hours=1))[:-1] + b',"amount":"1.00"}'
    control = _tx("cZx", T0 + dt.timedelta(hours=2)).replace(b'"cZx"', b'"c\\u0000x"')
    traffic = _traffic(valid=[("t1", first, False)])
    for kind, value in [
        ("conflict", conflict),
        ("duplicate key", duplicate_key),
        ("control character in id", control),
        ("tombstone", None),
    ]:
        traffic.add_bad(kind, Record("transactions", b"c1", value))
    outcome = asyncio.run(run_hostile(traffic, settings, alert_everything, TIMEOUT_S))
    assert [s.transaction_id for s in outcome.scores] == ["t1"]
    reasons = dict(outcome.dead)
    assert set(reasons) == {conflict, duplicate_key, control, b""}
    assert "transaction id 't1' was seen before with other content" in reasons[conflict]
    assert "duplicate" in reasons[duplicate_key] and "amount" in reasons[duplicate_key]
    assert "control character U+0000" in reasons[control]
    assert "tombstone" in reasons[b""]


def test_hostile_suite_every_bad_record_is_dead_lettered_every_valid_one_scored(
    settings: Settings, alert_everything: ModelBundle
) -> None:
    traffic = hostile_traffic(SUITE_VALID, SUITE_BAD)
    assert len(traffic.bad_counts()) >= 20, "every kind of bad record is in the traffic"
    outcome = asyncio.run(run_hostile(traffic, settings, alert_everything, TIMEOUT_S))
    assert outcome.alive, "the worker is still running"
    assert outcome.missing_from_dlq(traffic) == {}
    assert len(outcome.dead) == len(traffic.bad)
    assert all(reason for _, reason in outcome.dead)
    late = {s.transaction_id: s.late for s in outcome.scores}
    assert late == traffic.valid, "every valid transaction scored once, the late ones flagged"
