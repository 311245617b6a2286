"""The simulator: determinism, order, labels and the three handbook fraud scenarios."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from stream_app.errors import ConfigError
from stream_app.sources.history import TransactionHistory
from stream_app.sources.simulator import (
    CUSTOMER_COMPROMISE_DAYS,
    LARGE_AMOUNT_THRESHOLD,
    TERMINAL_COMPROMISE_DAYS,
    FraudScenario,
    simulate,
)
from stream_app.time import MICROS_PER_DAY

START = dt.date(2018, 4, 1)
START_US = int(dt.datetime(2018, 4, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000


@pytest.fixture(scope="module")
def history() -> TransactionHistory:
    return simulate(1500, 3000, 60, START, seed=7)


def _columns(h: TransactionHistory) -> dict[str, np.ndarray]:
    return {name: getattr(h, name) for name in (
        "transaction_id", "customer_id", "terminal_id", "event_time_us", "amount",
        "is_fraud", "label_time_us", "fraud_scenario")}


def test_same_seed_gives_an_identical_history(history: TransactionHistory) -> None:
    again = simulate(1500, 3000, 60, START, seed=7)
    for name, column in _columns(history).items():
        np.testing.assert_array_equal(getattr(again, name), column, err_msg=name)


def test_another_seed_gives_another_history(history: TransactionHistory) -> None:
    other = simulate(1500, 3000, 60, START, seed=8)
    assert len(other) != len(history) or not np.array_equal(other.amount, history.amount)


def test_events_are_sorted_inside_the_simulated_days(history: TransactionHistory) -> None:
    assert np.all(np.diff(history.event_time_us) >= 0)
    assert history.event_time_us[0] >= START_US
    assert history.event_time_us[-1] < START_US + 60 * MICROS_PER_DAY
    assert np.all(history.event_time_us % 1_000_000 == 0), "times are whole seconds"
    np.testing.assert_array_equal(history.transaction_id[:3], ["0", "1", "2"])
    assert len(set(history.transaction_id)) == len(history)


def test_population_and_volume_follow_the_profiles(history: TransactionHistory) -> None:
    # mean transactions per day is uniform on [0, 4): about 2 per customer and day.
    assert 1500 * 60 * 1.8 < len(history) < 1500 * 60 * 2.1
    assert {int(c) for c in history.customer_id} <= set(range(1500))
    assert {int(t) for t in history.terminal_id} <= set(range(3000))
    assert history.amount.min() >= 0
    np.testing.assert_array_equal(history.amount, np.round(history.amount, 2))
    hour = (history.event_time_us // 3_600_000_000) % 24
    assert 0.25 < np.mean((hour >= 10) & (hour < 14)) < 0.35, "normal around noon, sd 5.6 h"


def test_every_transaction_is_labelled_after_the_delay(history: TransactionHistory) -> None:
    np.testing.assert_array_equal(
        history.label_time_us, history.event_time_us + 7 * MICROS_PER_DAY
    )
    np.testing.assert_array_equal(history.is_fraud, history.fraud_scenario != 0)
    late = simulate(50, 100, 3, START, seed=1, label_delay_days=2)
    np.testing.assert_array_equal(late.label_time_us - late.event_time_us, 2 * MICROS_PER_DAY)


def test_fraud_rate_and_scenario_mix_match_the_handbook(history: TransactionHistory) -> None:
    share = np.bincount(history.fraud_scenario, minlength=4) / len(history)
    assert 0.005 < history.is_fraud.mean() < 0.02
    assert 0 < share[FraudScenario.LARGE_AMOUNT] < share[FraudScenario.COMPROMISED_TERMINAL]
    assert share[FraudScenario.COMPROMISED_CUSTOMER] > 0.001


def test_large_amounts_are_fraud(history: TransactionHistory) -> None:
    large = history.amount > LARGE_AMOUNT_THRESHOLD
    assert np.all(history.is_fraud[large] == 1)
    first = history.fraud_scenario == FraudScenario.LARGE_AMOUNT
    assert np.all(history.amount[first] > LARGE_AMOUNT_THRESHOLD)


def _days(h: TransactionHistory, rows: np.ndarray) -> np.ndarray:
    return np.asarray((h.event_time_us[rows] - START_US) // MICROS_PER_DAY)


def test_a_compromised_terminal_turns_all_its_payments_to_fraud_for_28_days(
    history: TransactionHistory,
) -> None:
    rows = np.flatnonzero(history.fraud_scenario == FraudScenario.COMPROMISED_TERMINAL)
    terminals = set(history.terminal_id[rows])
    assert len(terminals) > 5
    spans = []
    for terminal in terminals:
        mine = np.flatnonzero(history.terminal_id == terminal)
        days = _days(history, mine)
        hit_days = days[history.fraud_scenario[mine] == FraudScenario.COMPROMISED_TERMINAL]
        inside = (days >= hit_days.min()) & (days <= hit_days.max())
        # Inside the compromised span every payment is fraud (scenario 3 may take over
        # the scenario code of a leaked customer's payment, not the label).
        assert np.all(history.is_fraud[mine[inside]] == 1), terminal
        spans.append(hit_days.max() - hit_days.min() + 1)
    # One compromise lasts 28 days; two overlapping ones on one terminal are rare.
    assert np.mean(np.array(spans) <= TERMINAL_COMPROMISE_DAYS) > 0.9
    assert max(spans) > TERMINAL_COMPROMISE_DAYS // 2


def test_a_leaked_customer_has_a_third_of_payments_fraud_at_five_times_the_amount(
    history: TransactionHistory,
) -> None:
    rows = np.flatnonzero(history.fraud_scenario == FraudScenario.COMPROMISED_CUSTOMER)
    assert len(rows) > 50
    leaked_share = []
    for customer in set(history.customer_id[rows]):
        mine = np.flatnonzero(history.customer_id == customer)
        hit = mine[history.fraud_scenario[mine] == FraudScenario.COMPROMISED_CUSTOMER]
        days = _days(history, mine)
        first = _days(history, hit[:1])[0]
        window = mine[(days >= first) & (days < first + CUSTOMER_COMPROMISE_DAYS)]
        leaked_share.append(np.mean(history.fraud_scenario[window] == 3))
        genuine = history.amount[mine][history.fraud_scenario[mine] == 0]
        if len(genuine) > 5:
            assert np.median(history.amount[hit]) > 2 * np.median(genuine), customer
    assert 0.2 < float(np.mean(leaked_share)) < 0.45


@pytest.mark.parametrize(
    ("customers", "terminals", "days", "seed", "delay", "message"),
    [
        (0, 10, 2, 0, 7, "number of customers 0"),
        (10, -1, 2, 0, 7, "number of terminals -1"),
        (10, 10, 0, 0, 7, "number of days 0"),
        (10, 10, 2, -3, 7, "seed -3"),
        (10, 10, 2, 0, -1, "label delay -1"),
    ],
)
def test_bad_arguments_raise_config_errors(
    customers: int, terminals: int, days: int, seed: int, delay: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate(customers, terminals, days, START, seed, label_delay_days=delay)


def test_a_customer_without_terminals_in_reach_uses_the_nearest() -> None:
    sparse = simulate(200, 2, 5, START, seed=3)
    assert len(sparse) > 0
    assert set(sparse.terminal_id) <= {"0", "1"}
