"""Per-key window state and the update functions of the incremental execution.

A :class:`CustomerWindow` keeps the customer's transactions within the longest customer
window (time, id, amount; list order = order applied, times ascending), the fraud labels
of that horizon, and the feature rows of the customer's last K transactions (for
sequences and for answering a re-delivered transaction). A :class:`TerminalWindow` keeps
the terminal's transactions within ``D + longest terminal window`` days and the fraud
labels of that horizon.

:class:`IncrementalFeatures` holds the constants of one feature set; its methods take the
event time as an argument, read no clock, and update the windows they are given in place.
Rows equal :func:`stream_app.features.batch.compute_features` when transactions are applied
in history order with every label whose ``label_time <= t`` applied before the transaction
at ``t``.

Re-delivery guarantee: a transaction whose id and event time are still held by its
customer's or terminal's window (30 days for the default windows, resp. D + 30 days), or
which is among the customer's last K, is not applied again (state unchanged), and
:meth:`cached_row` returns its first row while it is among the customer's last K.
Re-applying a label leaves state unchanged.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter

from stream_app.errors import InputDataError
from stream_app.features.spec import (
    EPOCH_WEEKDAY,
    MICROS_PER_HOUR,
    MICROS_PER_SECOND,
    NIGHT_LAST_HOUR,
    SATURDAY,
    FeatureSet,
    handbook_columns,
    supported_columns,
)
from stream_app.sources.history import MICROS_PER_DAY

FraudLabel = tuple[str, int, int]
"""``(transaction_id, event_time_us, label_time_us)`` of a transaction labelled fraud."""

STATE_FORMAT = 1
_HEADER = struct.Struct("<BHHHH")


@dataclass(slots=True)
class CustomerWindow:
    """A customer's recent transactions, fraud labels and last feature rows."""

    times: list[int] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)
    fraud_labels: list[FraudLabel] = field(default_factory=list)
    recent_ids: list[str] = field(default_factory=list)
    recent_rows: list[list[float]] = field(default_factory=list)


@dataclass(slots=True)
class TerminalWindow:
    """A terminal's transactions within the delayed horizon and its fraud labels."""

    times: list[int] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    fraud_labels: list[FraudLabel] = field(default_factory=list)


class IncrementalFeatures:
    """Apply one transaction to its customer and terminal windows and return its row."""

    def __init__(self, fs: FeatureSet) -> None:
        self.feature_set = fs
        self.sequence_length = fs.sequence_length
        self._customer_windows_us = [n * MICROS_PER_DAY for n in fs.customer_windows_days]
        self._terminal_windows_us = [n * MICROS_PER_DAY for n in fs.terminal_windows_days]
        self._delay_us = fs.label_delay_days * MICROS_PER_DAY
        self._customer_horizon_us = self._customer_windows_us[-1]
        self._terminal_horizon_us = self._delay_us + self._terminal_windows_us[-1]
        self._horizons_us = (self._customer_horizon_us, self._terminal_horizon_us, self._delay_us)
        self._customer_inner_windows_us = self._customer_windows_us[:-1]
        days = fs.customer_windows_days
        longest = days[-1]
        # the row holds the handbook columns, then only the selected extras
        self._gap = f"customer_seconds_since_prev_tx_capped_{longest}d" in fs.columns
        self._amount_ratio_picks = [
            i for i, n in enumerate(days) if f"amount_to_customer_mean_{n}d_ratio" in fs.columns
        ]
        self._mean_ratio_picks = [
            i
            for i, n in enumerate(days[:-1])
            if f"customer_avg_amount_{n}d_to_{longest}d_ratio" in fs.columns
        ]
        self._known_frauds = f"customer_nb_fraud_known_{longest}d" in fs.columns
        self._undelayed_windows_us = [
            window
            for n, window in zip(fs.terminal_windows_days, self._terminal_windows_us, strict=True)
            if f"terminal_nb_tx_{n}d_undelayed" in fs.columns
        ]
        handbook = handbook_columns(days, fs.terminal_windows_days)
        computed = [
            *handbook,
            *(name for name in supported_columns(days, fs.terminal_windows_days)
              if name in fs.columns and name not in handbook),
        ]  # fmt: skip
        picks = [computed.index(name) for name in fs.columns]
        self._select: Callable[[list[float]], list[float]] | None = None
        if len(picks) == 1:
            only = picks[0]
            self._select = lambda row: [row[only]]
        elif picks != list(range(len(computed))):
            getter = itemgetter(*picks)
            self._select = lambda row: list(getter(row))

    def apply_label(
        self,
        customer: CustomerWindow,
        terminal: TerminalWindow,
        transaction_id: str,
        event_time_us: int,
        label_time_us: int,
        is_fraud: bool,
    ) -> None:
        """Record (or, for ``is_fraud=False``, withdraw) a transaction's fraud label.

        A label of a transaction older than a window's horizon is not recorded there.
        """
        label = (transaction_id, event_time_us, label_time_us, is_fraud)
        _record_label(customer, self._customer_horizon_us, *label)
        _record_label(terminal, self._terminal_horizon_us, *label)

    def cached_row(self, customer: CustomerWindow, transaction_id: str) -> list[float] | None:
        """The row first returned for one of the customer's last K transactions, else None."""
        if transaction_id in customer.recent_ids:
            return customer.recent_rows[customer.recent_ids.index(transaction_id)]
        return None

    def apply_transaction(
        self,
        customer: CustomerWindow,
        terminal: TerminalWindow,
        transaction_id: str,
        event_time_us: int,
        amount: float,
    ) -> list[float] | None:
        """Add a transaction to both windows; its row in ``feature_set.columns`` order.

        Returns None, changing nothing, when the windows already hold this transaction id
        at this event time (a re-delivery).
        """
        t = event_time_us
        recent_ids = customer.recent_ids
        if transaction_id in recent_ids:
            return None
        times = customer.times
        terminal_times = terminal.times
        here = len(times)
        if here and times[-1] >= t:  # not the customer's newest event: mind the ties
            here = _position(times, customer.transaction_ids, transaction_id, t)
        terminal_here = len(terminal_times)
        if terminal_here and terminal_times[-1] >= t:
            terminal_here = _position(terminal_times, terminal.transaction_ids, transaction_id, t)
        if here < 0 or terminal_here < 0:
            return None
        horizon, terminal_horizon, delay = self._horizons_us
        amounts = customer.amounts
        # drop what no window can reach: every transaction left is inside the longest windows
        cutoff = t - horizon
        if here and times[0] <= cutoff:
            stale = bisect_right(times, cutoff, 0, here)
            del times[:stale], customer.transaction_ids[:stale], amounts[:stale]
            here -= stale
        if customer.fraud_labels:
            _drop_labels(customer, cutoff)
        cutoff = t - terminal_horizon
        if terminal_here and terminal_times[0] <= cutoff:
            stale = bisect_right(terminal_times, cutoff, 0, terminal_here)
            del terminal_times[:stale], terminal.transaction_ids[:stale]
            terminal_here -= stale
        if terminal.fraud_labels:
            _drop_labels(terminal, cutoff)
        days, within_day = divmod(t, MICROS_PER_DAY)
        row = [
            amount,
            1.0 if (days + EPOCH_WEEKDAY) % 7 >= SATURDAY else 0.0,
            1.0 if within_day // MICROS_PER_HOUR <= NIGHT_LAST_HOUR else 0.0,
        ]
        append = row.append
        means = []
        end = here
        total = amount
        # plain sums of at most the window's few hundred amounts: within ~1e-13 of exact, as
        # close as the batch path's cumulative sums (fsum cost ~3x more here)
        for window in self._customer_inner_windows_us:  # ascending, so nested
            start = bisect_right(times, t - window, 0, end)
            if start < end:
                total += sum(amounts[start:end])
                end = start
            count = here - start + 1.0
            mean = total / count
            append(count)
            append(mean)
            means.append(mean)
        if end:
            total += sum(amounts[:end])
        count = here + 1.0
        longest_mean = total / count
        append(count)
        append(longest_mean)

        terminal_times.insert(terminal_here, t)
        terminal.transaction_ids.insert(terminal_here, transaction_id)
        delayed = t - delay
        delayed_end = bisect_right(terminal_times, delayed, 0, terminal_here + 1)
        terminal_frauds = terminal.fraud_labels
        end = delayed_end
        longest = terminal_horizon - delay
        for window in self._terminal_windows_us:
            if end and window < longest:
                end = bisect_right(terminal_times, delayed - window, 0, end)
            else:  # the longest window starts at the horizon
                end = 0
            count = delayed_end - end + 0.0
            append(count)
            if count and terminal_frauds:
                opens = delayed - window
                append(
                    sum(1 for _, e, lt in terminal_frauds if lt <= t and opens < e <= delayed)
                    / count
                )
            else:
                append(0.0)

        if self._gap:
            append((min(t - times[here - 1], horizon) if here else horizon) / MICROS_PER_SECOND)
        means.append(longest_mean)
        for i in self._amount_ratio_picks:
            mean = means[i]
            append(amount / mean if mean > 0 else 1.0)
        for i in self._mean_ratio_picks:
            append(means[i] / longest_mean if longest_mean > 0 else 1.0)
        if self._known_frauds:
            frauds = customer.fraud_labels
            if frauds:
                append(float(sum(1 for _, e, lt in frauds if lt <= t and t - horizon < e <= t)))
            else:
                append(0.0)
        end = terminal_here
        for window in self._undelayed_windows_us:
            end = bisect_right(terminal_times, t - window, 0, end)
            append(terminal_here - end + 1.0)

        times.insert(here, t)
        amounts.insert(here, amount)
        customer.transaction_ids.insert(here, transaction_id)
        selected = row if self._select is None else self._select(row)
        recent_ids.append(transaction_id)
        recent_rows = customer.recent_rows
        recent_rows.append(selected)
        if len(recent_ids) > self.sequence_length:
            del recent_ids[0]
            del recent_rows[0]
        return selected


def _position(times: list[int], transaction_ids: list[str], transaction_id: str, t: int) -> int:
    """Where a transaction at ``t`` goes (after its ties); -1 if a tie has its id."""
    first_tie = bisect_left(times, t)
    here = bisect_right(times, t, first_tie)
    if first_tie < here and transaction_id in transaction_ids[first_tie:here]:
        return -1
    return here


def _record_label(
    window: CustomerWindow | TerminalWindow,
    horizon_us: int,
    transaction_id: str,
    event_time_us: int,
    label_time_us: int,
    is_fraud: bool,
) -> None:
    labels = window.fraud_labels
    for i, (known_id, _, _) in enumerate(labels):
        if known_id == transaction_id:
            if is_fraud:
                labels[i] = (transaction_id, event_time_us, label_time_us)
            else:
                del labels[i]
            return
    beyond_horizon = bool(window.times) and event_time_us <= window.times[-1] - horizon_us
    if is_fraud and not beyond_horizon:
        labels.append((transaction_id, event_time_us, label_time_us))


def _drop_labels(window: CustomerWindow | TerminalWindow, cutoff_us: int) -> None:
    """Drop the fraud labels of transactions at or before ``cutoff_us`` (outside every window)."""
    labels = window.fraud_labels
    if any(e <= cutoff_us for _, e, _ in labels):
        window.fraud_labels = [label for label in labels if label[1] > cutoff_us]


def customer_to_bytes(window: CustomerWindow) -> bytes:
    """Compact little-endian encoding of a customer window (see :func:`customer_from_bytes`).

    Layout: a header (format, counts, row width); one packed block of the times, amounts,
    fraud label times, recent rows and the length of every id; then all ids as one UTF-8
    string.
    """
    n, n_labels, n_recent = len(window.times), len(window.fraud_labels), len(window.recent_ids)
    width = len(window.recent_rows[0]) if window.recent_rows else 0
    ids = [*window.transaction_ids, *(label[0] for label in window.fraud_labels),
           *window.recent_ids]  # fmt: skip
    block = struct.pack(
        f"<{n}q{n}d{2 * n_labels}q{n_recent * width}d{len(ids)}H",
        *window.times, *window.amounts,
        *(v for _, e, lt in window.fraud_labels for v in (e, lt)),
        *(v for row in window.recent_rows for v in row), *map(len, ids),
    )  # fmt: skip
    header = _HEADER.pack(STATE_FORMAT, n, n_labels, n_recent, width)
    return header + block + "".join(ids).encode()


def customer_from_bytes(data: bytes) -> CustomerWindow:
    """Decode :func:`customer_to_bytes` output."""
    n, n_labels, n_recent, width = _header(data, "customer")
    n_ids = n + n_labels + n_recent
    layout = f"<{n}q{n}d{2 * n_labels}q{n_recent * width}d{n_ids}H"
    values, ids = _block(data, layout, n_ids, "customer")
    at = 2 * n + 2 * n_labels
    label_times: list[int] = list(values[2 * n : at])  # type: ignore[arg-type]
    flat: list[float] = list(values[at : at + n_recent * width])
    return CustomerWindow(
        times=list(values[:n]),  # type: ignore[arg-type]
        transaction_ids=ids[:n],
        amounts=list(values[n : 2 * n]),
        fraud_labels=_labels(ids[n : n + n_labels], label_times),
        recent_ids=ids[n + n_labels :],
        recent_rows=[flat[i * width : (i + 1) * width] for i in range(n_recent)],
    )


def terminal_to_bytes(window: TerminalWindow) -> bytes:
    """Compact little-endian encoding of a terminal window (see :func:`terminal_from_bytes`)."""
    n, n_labels = len(window.times), len(window.fraud_labels)
    ids = [*window.transaction_ids, *(label[0] for label in window.fraud_labels)]
    block = struct.pack(
        f"<{n}q{2 * n_labels}q{len(ids)}H",
        *window.times, *(v for _, e, lt in window.fraud_labels for v in (e, lt)),
        *map(len, ids),
    )  # fmt: skip
    return _HEADER.pack(STATE_FORMAT, n, n_labels, 0, 0) + block + "".join(ids).encode()


def terminal_from_bytes(data: bytes) -> TerminalWindow:
    """Decode :func:`terminal_to_bytes` output."""
    n, n_labels, _, _ = _header(data, "terminal")
    values, ids = _block(data, f"<{n}q{2 * n_labels}q{n + n_labels}H", n + n_labels, "terminal")
    return TerminalWindow(
        times=list(values[:n]),  # type: ignore[arg-type]
        transaction_ids=ids[:n],
        fraud_labels=_labels(ids[n:], list(values[n : n + 2 * n_labels])),  # type: ignore[arg-type]
    )


def _labels(ids: list[str], times: list[int]) -> list[FraudLabel]:
    return [(ids[i], times[2 * i], times[2 * i + 1]) for i in range(len(ids))]


def _corrupt(kind: str, problem: str) -> InputDataError:
    return InputDataError(
        f"{kind} window state {problem}; drop the stored state so it is rebuilt from new events"
    )


def _header(data: bytes, kind: str) -> tuple[int, int, int, int]:
    if len(data) < _HEADER.size:
        raise _corrupt(kind, f"of {len(data)} bytes is truncated")
    version, n, n_labels, n_recent, width = _HEADER.unpack_from(data)
    if version != STATE_FORMAT:
        raise _corrupt(kind, f"has format {version}, this code reads {STATE_FORMAT}")
    return n, n_labels, n_recent, width


def _block(data: bytes, layout: str, n_ids: int, kind: str) -> tuple[tuple[float, ...], list[str]]:
    """The packed numbers after the header, and the ids (their lengths end the numbers)."""
    size = struct.calcsize(layout)
    if len(data) < _HEADER.size + size:
        raise _corrupt(kind, f"of {len(data)} bytes is truncated")
    values: tuple[float, ...] = struct.unpack_from(layout, data, _HEADER.size)
    try:
        text = data[_HEADER.size + size :].decode()
    except UnicodeDecodeError as exc:
        raise _corrupt(kind, f"holds ids that are not UTF-8 ({exc})") from exc
    lengths: list[int] = list(values[len(values) - n_ids :]) if n_ids else []  # type: ignore[arg-type]
    if sum(lengths) != len(text):
        raise _corrupt(kind, f"has {len(text)} characters of ids where {sum(lengths)} belong")
    ends = list(accumulate(lengths))
    return values, [text[end - size : end] for end, size in zip(ends, lengths, strict=True)]
