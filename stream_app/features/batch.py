"""Vectorised execution of a feature set over a whole history (numpy, no per-row Python).

Ids are factorised to integer codes; rows are sorted by (key, time rank) with a stable
sort so ties keep history order; window bounds come from ``searchsorted`` on that
composite key; sums come from per-key cumulative sums (a cumulative sum over the whole
history would lose precision); fraud counts count the intervals of query time in which
each known fraud falls inside a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from stream_app.features.spec import (
    EPOCH_WEEKDAY,
    NIGHT_LAST_HOUR,
    SATURDAY,
    FeatureSet,
)
from stream_app.sources.history import NO_LABEL_US, TransactionHistory
from stream_app.time import MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
_N = TypeVar("_N", bound=np.generic)

_CUMSUM_BLOCK_CELLS = 1 << 22


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Feature rows of a history, in history order.

    ``sequence_index[i]`` holds the row indices of the customer's last K transactions up
    to and including row i, oldest first, -1 as left padding.
    """

    transaction_id: npt.NDArray[np.object_]
    columns: tuple[str, ...]
    values: Floats
    sequence_index: Ints


def compute_features(history: TransactionHistory, fs: FeatureSet) -> FeatureTable:
    """All of ``fs.columns`` for every row of ``history`` (see ``spec`` for definitions)."""
    times = history.event_time_us
    customers = _Timeline(_codes(history.customer_id), times)
    terminals = _Timeline(_codes(history.terminal_id), times)
    frauds = (history.is_fraud == 1) & (history.label_time_us != NO_LABEL_US)
    computed: dict[str, Floats] = {}
    computed.update(_transaction(history))
    customer_means = _customer_windows(history, fs, customers, computed)
    _customer_extras(history, fs, customers, frauds, customer_means, computed)
    _terminal_windows(history, fs, terminals, frauds, computed)
    values = np.empty((len(history), len(fs.columns)), dtype=np.float64)
    for j, name in enumerate(fs.columns):
        values[:, j] = computed[name]
    return FeatureTable(
        transaction_id=history.transaction_id,
        columns=fs.columns,
        values=values,
        sequence_index=customers.last_rows(fs.sequence_length),
    )


class _Timeline:
    """Rows grouped by key, each group in history order (times ascending, ties kept).

    Queries are answered in sorted order (key, then history order), where the composite
    search keys ascend, which keeps ``searchsorted`` cache friendly.
    """

    def __init__(self, keys: Ints, times: Ints) -> None:
        new_time = np.r_[True, times[1:] != times[:-1]]
        self.distinct_times = times[new_time]
        self.n_times = len(self.distinct_times)
        composite = keys * self.n_times + (np.cumsum(new_time) - 1)
        self.order = np.argsort(composite, kind="stable")
        self.sorted = composite[self.order]
        self.sorted_keys = keys[self.order]
        self.position = np.empty_like(self.order)
        self.position[self.order] = np.arange(len(keys))
        sizes = np.bincount(keys)
        self.sorted_group_start = (np.cumsum(sizes) - sizes)[self.sorted_keys]

    def first_after(self, bound_us: Ints) -> Ints:
        """Per sorted row: sorted index of its key's first row with time > ``bound_us``.

        ``bound_us`` is in history order and ascending (event time minus a constant).
        """
        rank = np.searchsorted(self.distinct_times, bound_us, side="right")
        return np.searchsorted(
            self.sorted, self.sorted_keys * self.n_times + rank[self.order], side="left"
        )

    def count_at_most(self, point_keys: Ints, point_times: Ints, times: Ints) -> Ints:
        """Per sorted row: points of its key with a time <= ``times`` (history order, ascending)."""
        if len(point_keys) == 0:
            return np.zeros(len(self.order), dtype=np.int64)
        distinct = np.unique(point_times)
        points = np.sort(point_keys * len(distinct) + np.searchsorted(distinct, point_times))
        base = self.sorted_keys * len(distinct)
        rank = np.searchsorted(distinct, times, side="right")[self.order]
        return np.searchsorted(points, base + rank, side="left") - np.searchsorted(
            points, base, side="left"
        )

    def known_frauds(
        self, fraud_keys: Ints, visible_from: Ints, visible_until: Ints, times: Ints
    ) -> Ints:
        """Per sorted row: frauds of its key with ``visible_from <= t < visible_until``."""
        live = visible_from < visible_until
        return self.count_at_most(fraud_keys[live], visible_from[live], times) - (
            self.count_at_most(fraud_keys[live], visible_until[live], times)
        )

    def grouped_cumsum(self, values: Floats) -> tuple[Floats, Floats]:
        """Per-key running sums in sorted order: (inclusive, exclusive)."""
        inclusive = _grouped_cumsum(values[self.order], self.sorted_keys)
        exclusive = np.empty_like(inclusive)
        exclusive[1:] = inclusive[:-1]
        exclusive[self.sorted_group_start == np.arange(len(inclusive))] = 0.0
        return inclusive, exclusive

    def in_history_order(self, sorted_values: npt.NDArray[_N]) -> npt.NDArray[_N]:
        """Values given per sorted row, returned per history row."""
        return sorted_values[self.position]

    def last_rows(self, k: int) -> Ints:
        """Row indices of each row's key's last ``k`` rows up to it, oldest first."""
        index = np.arange(len(self.order))[:, None] + np.arange(-k + 1, 1)[None, :]
        rows = np.where(
            index >= self.sorted_group_start[:, None], self.order[np.maximum(index, 0)], -1
        )
        return self.in_history_order(rows)


def _codes(ids: npt.NDArray[np.object_]) -> Ints:
    encoded = pa.array(ids, type=pa.string()).dictionary_encode()
    return np.asarray(encoded.indices.to_numpy(), dtype=np.int64)


def _grouped_cumsum(ordered: Floats, keys: Ints) -> Floats:
    """Cumulative sums restarting at each key (keys contiguous), row blocks padded 2-D."""
    n = len(ordered)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, n])
    by_size = np.argsort(-sizes, kind="stable")
    first = 0
    while first < len(by_size):
        width = int(sizes[by_size[first]])
        count = max(1, _CUMSUM_BLOCK_CELLS // width)
        block = by_size[first : first + count]
        first += count
        block_sizes = sizes[block]
        row = np.repeat(np.arange(len(block)), block_sizes)
        column = np.arange(int(block_sizes.sum())) - np.repeat(
            np.cumsum(block_sizes) - block_sizes, block_sizes
        )
        source = np.repeat(starts[block], block_sizes) + column
        padded = np.zeros((len(block), width), dtype=np.float64)
        padded[row, column] = ordered[source]
        out[source] = np.cumsum(padded, axis=1)[row, column]
    return out


def _transaction(history: TransactionHistory) -> dict[str, Floats]:
    times = history.event_time_us
    days, within_day = np.divmod(times, MICROS_PER_DAY)
    weekday = (days + EPOCH_WEEKDAY) % 7
    return {
        "TX_AMOUNT": history.amount,
        "TX_DURING_WEEKEND": (weekday >= SATURDAY).astype(np.float64),
        "TX_DURING_NIGHT": (within_day // MICROS_PER_HOUR <= NIGHT_LAST_HOUR).astype(np.float64),
    }


def _customer_windows(
    history: TransactionHistory, fs: FeatureSet, customers: _Timeline, out: dict[str, Floats]
) -> dict[int, Floats]:
    """Counts and means per customer window; returns the means by window length."""
    times = history.event_time_us
    inclusive, exclusive = customers.grouped_cumsum(history.amount)
    here = np.arange(len(times))
    means: dict[int, Floats] = {}
    for n in fs.customer_windows_days:
        start = customers.first_after(times - n * MICROS_PER_DAY)
        count = (here - start + 1).astype(np.float64)
        means[n] = customers.in_history_order((inclusive - exclusive[start]) / count)
        out[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = customers.in_history_order(count)
        out[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = means[n]
    return means


def _ratio(numerator: Floats, denominator: Floats) -> Floats:
    """``numerator / denominator``, 1 where the denominator is 0."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 1.0)


def _customer_extras(
    history: TransactionHistory,
    fs: FeatureSet,
    customers: _Timeline,
    frauds: npt.NDArray[np.bool_],
    means: dict[int, Floats],
    out: dict[str, Floats],
) -> None:
    times = history.event_time_us
    longest = fs.customer_windows_days[-1]
    horizon_us = longest * MICROS_PER_DAY
    sorted_times = times[customers.order]
    gap = np.full(len(times), horizon_us, dtype=np.int64)
    has_previous = customers.sorted_group_start < np.arange(len(times))
    gap[has_previous] = np.minimum(np.diff(sorted_times, prepend=0)[has_previous], horizon_us)
    out[f"customer_seconds_since_prev_tx_capped_{longest}d"] = customers.in_history_order(
        gap / MICROS_PER_SECOND
    )
    for n in fs.customer_windows_days:
        out[f"amount_to_customer_mean_{n}d_ratio"] = _ratio(history.amount, means[n])
    for n in fs.customer_windows_days[:-1]:
        out[f"customer_avg_amount_{n}d_to_{longest}d_ratio"] = _ratio(means[n], means[longest])
    event = times[frauds]
    known = customers.known_frauds(
        customers.sorted_keys[customers.position[frauds]],
        np.maximum(event, history.label_time_us[frauds]),
        event + horizon_us,
        times,
    )
    out[f"customer_nb_fraud_known_{longest}d"] = customers.in_history_order(
        known.astype(np.float64)
    )


def _terminal_windows(
    history: TransactionHistory,
    fs: FeatureSet,
    terminals: _Timeline,
    frauds: npt.NDArray[np.bool_],
    out: dict[str, Floats],
) -> None:
    times = history.event_time_us
    delay_us = fs.label_delay_days * MICROS_PER_DAY
    here = np.arange(len(times))
    # rows applied so far: only a zero delay can reach the current row and its later ties
    delayed_end = np.minimum(terminals.first_after(times - delay_us), here + 1)
    event = times[frauds]
    fraud_keys = terminals.sorted_keys[terminals.position[frauds]]
    # undelayed windows count the strictly earlier rows and the current one
    earlier = terminals.first_after(times - 1)
    for n in fs.terminal_windows_days:
        window_us = n * MICROS_PER_DAY
        count = (delayed_end - terminals.first_after(times - delay_us - window_us)).astype(
            np.float64
        )
        known = terminals.known_frauds(
            fraud_keys,
            np.maximum(event + delay_us, history.label_time_us[frauds]),
            event + delay_us + window_us,
            times,
        )
        risk = np.where(count > 0, known / np.maximum(count, 1.0), 0.0)
        undelayed = earlier - terminals.first_after(times - window_us) + 1
        out[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = terminals.in_history_order(count)
        out[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = terminals.in_history_order(risk)
        out[f"terminal_nb_tx_{n}d_undelayed"] = terminals.in_history_order(
            undelayed.astype(np.float64)
        )
