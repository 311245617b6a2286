"""Deterministic transaction simulator with the handbook's three fraud scenarios.

Modelled on the generator of Le Borgne et al., *Fraud Detection Handbook*, chapter 3
("Simulated dataset"): customers and terminals live on a 100 x 100 grid; each customer
has a spending mean/std and a mean number of transactions per day, and pays at the
terminals within a radius of home. Transactions cluster around noon. Frauds follow the
handbook's scenarios (:class:`FraudScenario`); the daily compromise rates are the
handbook's (2 of 10,000 terminals, 3 of 5,000 customers) so the fraud rate stays near
its ~0.8 % at any population size. Everything is drawn from one seeded
``numpy.random.Generator``: the same arguments give the identical history.
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from stream_app.errors import ConfigError
from stream_app.sources.history import TransactionHistory
from stream_app.time import MICROS_PER_DAY, SECONDS_PER_DAY

GRID_SIZE = 100.0
TERMINAL_RADIUS = 5.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MAX_MEAN_TX_PER_DAY = 4.0
NOON_S = 43_200
TIME_OF_DAY_STD_S = 20_000

LARGE_AMOUNT_THRESHOLD = 220.0
TERMINAL_COMPROMISE_RATE = 2 / 10_000
"""Probability that a given terminal is compromised on a given day."""
TERMINAL_COMPROMISE_DAYS = 28
CUSTOMER_COMPROMISE_RATE = 3 / 5_000
"""Probability that a given customer's credentials leak on a given day."""
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMER_FRAUD_SHARE = 1 / 3
CUSTOMER_FRAUD_AMOUNT_FACTOR = 5.0

_EPOCH = dt.date(1970, 1, 1)
_DISTANCE_BLOCK = 512


class FraudScenario(IntEnum):
    """``fraud_scenario`` codes, as in the handbook's ``TX_FRAUD_SCENARIO``."""

    GENUINE = 0
    LARGE_AMOUNT = 1
    COMPROMISED_TERMINAL = 2
    COMPROMISED_CUSTOMER = 3


def simulate(
    n_customers: int,
    n_terminals: int,
    n_days: int,
    start_date: dt.date,
    seed: int,
    label_delay_days: int = 7,
    currency: str = "EUR",
) -> TransactionHistory:
    """Simulate ``n_days`` of transactions from midnight UTC of ``start_date``.

    Ids are decimal strings (transaction ids number the rows in time order); every
    transaction is labelled, the label known ``label_delay_days`` after the event.
    """
    _check_arguments(n_customers, n_terminals, n_days, seed, label_delay_days)
    rng = np.random.default_rng(seed)

    customer_xy = rng.uniform(0.0, GRID_SIZE, size=(n_customers, 2))
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, size=n_customers)
    std_amount = mean_amount / 2
    mean_tx_per_day = rng.uniform(0.0, MAX_MEAN_TX_PER_DAY, size=n_customers)
    terminal_xy = rng.uniform(0.0, GRID_SIZE, size=(n_terminals, 2))
    reach_offsets, reach_terminals = _terminals_in_reach(customer_xy, terminal_xy)

    # Draws per (customer, day), customer-major; times outside the day are dropped, as
    # in the handbook.
    counts = rng.poisson(np.repeat(mean_tx_per_day, n_days)).astype(np.int64)
    slot = np.repeat(np.arange(n_customers * n_days), counts)
    customer = slot // n_days
    day = slot % n_days
    time_of_day = rng.normal(NOON_S, TIME_OF_DAY_STD_S, size=len(slot)).astype(np.int64)
    kept = (time_of_day > 0) & (time_of_day < SECONDS_PER_DAY)
    customer, day, time_of_day = customer[kept], day[kept], time_of_day[kept]
    n = len(customer)

    amount = rng.normal(mean_amount[customer], std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2 * mean_amount[customer[negative]])
    amount = np.round(amount, 2)
    reach_size = np.diff(reach_offsets)[customer]
    pick = (rng.random(n) * reach_size).astype(np.int64)
    terminal = reach_terminals[reach_offsets[customer] + pick]

    scenario = np.zeros(n, dtype=np.int8)
    scenario[amount > LARGE_AMOUNT_THRESHOLD] = FraudScenario.LARGE_AMOUNT
    terminal_hit = _compromised(rng, n_terminals, n_days, TERMINAL_COMPROMISE_RATE,
                                TERMINAL_COMPROMISE_DAYS)
    scenario[terminal_hit[terminal, day]] = FraudScenario.COMPROMISED_TERMINAL
    customer_hit = _compromised(rng, n_customers, n_days, CUSTOMER_COMPROMISE_RATE,
                                CUSTOMER_COMPROMISE_DAYS)
    leaked = customer_hit[customer, day] & (rng.random(n) < CUSTOMER_FRAUD_SHARE)
    amount[leaked] = np.round(amount[leaked] * CUSTOMER_FRAUD_AMOUNT_FACTOR, 2)
    scenario[leaked] = FraudScenario.COMPROMISED_CUSTOMER

    seconds = day * SECONDS_PER_DAY + time_of_day
    order = np.argsort(seconds, kind="stable")
    start_us = (start_date - _EPOCH).days * MICROS_PER_DAY
    event_time_us = (start_us + seconds[order] * 1_000_000).astype(np.int64)
    scenario = scenario[order]
    return TransactionHistory(
        transaction_id=_decimal_ids(n),
        customer_id=_decimal_ids(n_customers)[customer[order]],
        terminal_id=_decimal_ids(n_terminals)[terminal[order]],
        event_time_us=event_time_us,
        amount=amount[order],
        currency=currency,
        is_fraud=(scenario != FraudScenario.GENUINE).astype(np.int8),
        label_time_us=event_time_us + label_delay_days * MICROS_PER_DAY,
        fraud_scenario=scenario,
    )


def _check_arguments(
    n_customers: int, n_terminals: int, n_days: int, seed: int, label_delay_days: int
) -> None:
    for name, value in (("customers", n_customers), ("terminals", n_terminals),
                        ("days", n_days)):
        if value < 1:
            raise ConfigError(f"number of {name} {value} is not positive; ask for at least 1")
    if seed < 0:
        raise ConfigError(f"seed {seed} is negative; use a seed >= 0")
    if label_delay_days < 0:
        raise ConfigError(
            f"label delay {label_delay_days} days is negative; use 0 or more days"
        )


def _terminals_in_reach(
    customer_xy: npt.NDArray[np.float64], terminal_xy: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per customer, the terminals within ``TERMINAL_RADIUS`` (the nearest one if none).

    Returned as CSR: customer ``c`` uses ``terminals[offsets[c]:offsets[c + 1]]``.
    Distances are computed in blocks of customers to bound memory.
    """
    sizes: list[npt.NDArray[np.int64]] = []
    members: list[npt.NDArray[np.int64]] = []
    for start in range(0, len(customer_xy), _DISTANCE_BLOCK):
        block = customer_xy[start:start + _DISTANCE_BLOCK]
        distance = np.hypot(block[:, 0:1] - terminal_xy[:, 0], block[:, 1:2] - terminal_xy[:, 1])
        within = distance < TERMINAL_RADIUS
        lonely = ~within.any(axis=1)
        within[lonely, np.argmin(distance[lonely], axis=1)] = True
        rows, cols = np.nonzero(within)
        sizes.append(np.bincount(rows, minlength=len(block)).astype(np.int64))
        members.append(cols.astype(np.int64))
    offsets = np.concatenate(([0], np.cumsum(np.concatenate(sizes)))).astype(np.int64)
    return offsets, np.concatenate(members)


def _compromised(
    rng: np.random.Generator, n_items: int, n_days: int, daily_rate: float, duration_days: int
) -> npt.NDArray[np.bool_]:
    """``[item, day]`` is True while a compromise that started on one of the previous
    ``duration_days`` days (that day included) is active."""
    starts = np.cumsum(rng.random((n_items, n_days)) < daily_rate, axis=1)
    ended = np.zeros_like(starts)
    ended[:, duration_days:] = starts[:, : max(n_days - duration_days, 0)]
    return np.asarray(starts - ended > 0)


def _decimal_ids(n: int) -> npt.NDArray[np.object_]:
    return np.arange(n).astype(str).astype(object)
