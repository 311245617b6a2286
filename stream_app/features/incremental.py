"""Per-key window state, its one encoding, and the update functions of the incremental execution.

A :class:`CustomerWindow` keeps the customer's transactions within the longest customer
window (time, id, amount; list order = order applied, times ascending), the fraud labels
of that horizon, and the feature rows of the customer's last K transactions, packed (for
sequences and for answering a re-delivered transaction). A :class:`TerminalWindow` keeps
the terminal's transactions within ``D + longest terminal window`` days and the fraud
labels of that horizon. :func:`encode_window`, :func:`decode_customer` and
:func:`decode_terminal` are the windows' one serialised form (msgpack arrays).

:class:`IncrementalFeatures` holds the constants of one feature set; its methods take the
event time as an argument, read no clock, and update the windows they are given in place.
Rows equal :func:`stream_app.features.batch.compute_features` when transactions are applied
in history order with every label whose ``label_time <= t`` applied before the transaction
at ``t``.

Re-delivery guarantee: a transaction whose id and event time are still held by its
customer's or terminal's window (30 days for the default windows, resp. D + 30 days), or
which is among the customer's last K, is not applied again (state unchanged), and its
first row stays in the customer's ``recent_rows`` while it is among the customer's last K.
Re-applying a label leaves state unchanged.

Conflicts: an id the windows hold with other content (another event time or amount in the
customer's window, or the terminal's at the same time but not the customer's) is a
:data:`CONFLICT`, not applied. An id reused by another customer at another time is not
seen: the terminal's window is not searched by id (a busy terminal holds thousands), only
its transactions at the same time.

Late transactions: one older than a window horizon relative to its customer's or
terminal's newest event (:meth:`IncrementalFeatures.is_late`) cannot be added (its id could
no longer be recognised on re-delivery). :meth:`IncrementalFeatures.score_late` gives its
row against the windows as they are, changing nothing.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, TypeVar

import msgspec

from stream_app.errors import InputDataError
from stream_app.features.spec import (
    EPOCH_WEEKDAY,
    NIGHT_LAST_HOUR,
    SATURDAY,
    FeatureSet,
    handbook_columns,
    supported_columns,
)
from stream_app.time import MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND

FraudLabel = tuple[str, int, int]
"""``(transaction_id, event_time_us, label_time_us)`` of a transaction labelled fraud."""

MAX_ID_LENGTH = 255
APPLIED, DUPLICATE, CONFLICT = 0, 1, 2
"""What :meth:`IncrementalFeatures.apply_transaction` did: added the transaction, found it
already there (a re-delivery), or found its id there with other content."""
ROW_ITEM = struct.Struct("<d")
"""One value of a packed feature row: little-endian float64."""

if TYPE_CHECKING:
    IntArray = array[int]
    FloatArray = array[float]
else:  # array is not subscriptable at run time before Python 3.12
    IntArray = FloatArray = array

# Times (int64 µs), id lengths (a byte each) and amounts (float64) are plain arrays, not
# subclasses: C code (bisect) reads a subclass's items through a Python-level slot, ~10x
# slower.


def int64s(values: Iterable[int] = ()) -> IntArray:
    """Packed int64 values (event times in µs): a quarter of a list's memory, encoded as
    one binary (machine byte order: little-endian on x86-64 and arm64)."""
    return array("q", values)


def id_lengths(values: Iterable[int] = ()) -> IntArray:
    """Packed lengths (up to :data:`MAX_ID_LENGTH`) of the ids of a window, a byte each."""
    return array("B", values)


def float64s(values: Iterable[float] = ()) -> FloatArray:
    """Packed float64 values (amounts), stored like :func:`int64s`."""
    return array("d", values)


class CustomerWindow(msgspec.Struct, gc=False):
    """A customer's recent transactions, fraud labels and last K feature rows.

    The transactions' ids are packed too: ``id_text`` is their concatenation and
    ``id_lengths`` their lengths (one object per window, not one per id: cheaper to keep
    and to encode). ``recent_rows`` holds the rows of ``recent_ids``, oldest first, packed
    as little-endian float64 (``len(recent_ids) * width * 8`` bytes). Not tracked by the
    garbage collector (it never takes part in a reference cycle): the worker caches
    millions of windows.
    """

    times: IntArray = msgspec.field(default_factory=int64s)
    id_text: str = ""
    id_lengths: IntArray = msgspec.field(default_factory=id_lengths)
    amounts: FloatArray = msgspec.field(default_factory=float64s)
    fraud_labels: list[FraudLabel] = msgspec.field(default_factory=list)
    recent_ids: list[str] = msgspec.field(default_factory=list)
    recent_rows: bytearray = msgspec.field(default_factory=bytearray)

    @property
    def transaction_ids(self) -> list[str]:
        """The ids of the transactions in ``times`` order."""
        return _split(self.id_text, self.id_lengths)


class TerminalWindow(msgspec.Struct, gc=False):
    """A terminal's transactions within the delayed horizon and its fraud labels."""

    times: IntArray = msgspec.field(default_factory=int64s)
    id_text: str = ""
    id_lengths: IntArray = msgspec.field(default_factory=id_lengths)
    fraud_labels: list[FraudLabel] = msgspec.field(default_factory=list)

    @property
    def transaction_ids(self) -> list[str]:
        """The ids of the transactions in ``times`` order (packed as in CustomerWindow)."""
        return _split(self.id_text, self.id_lengths)


class _CustomerState(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A customer window as :func:`encode_window` writes it: its fields in order, the
    packed ones as binaries."""

    times: bytes
    id_text: str
    id_lengths: bytes
    amounts: bytes
    fraud_labels: list[FraudLabel]
    recent_ids: list[str]
    recent_rows: bytearray


class _TerminalState(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A terminal window as :func:`encode_window` writes it."""

    times: bytes
    id_text: str
    id_lengths: bytes
    fraud_labels: list[FraudLabel]


S = TypeVar("S", _CustomerState, _TerminalState)

_ENCODE = msgspec.msgpack.Encoder().encode
_CUSTOMER = msgspec.msgpack.Decoder(_CustomerState)
_TERMINAL = msgspec.msgpack.Decoder(_TerminalState)


def encode_window(window: CustomerWindow | TerminalWindow) -> bytes:
    """The window's state as msgpack: an array of its fields in order, packed ones as
    binaries (a tuple of views: no encoder hook per field, no copy before the encoder's)."""
    if isinstance(window, CustomerWindow):
        return _ENCODE(
            (
                memoryview(window.times), window.id_text, memoryview(window.id_lengths),
                memoryview(window.amounts), window.fraud_labels, window.recent_ids,
                window.recent_rows,
            )
        )  # fmt: skip
    return _ENCODE(
        (memoryview(window.times), window.id_text, memoryview(window.id_lengths),
         window.fraud_labels)
    )  # fmt: skip


def decode_customer(data: bytes, width: int) -> CustomerWindow:
    """A customer window from :func:`encode_window` output, rows of ``width`` values."""
    state = _decode(_CUSTOMER, data, "customer")
    window = CustomerWindow(
        times=_unpack(int64s(), state.times, "customer", "times"),
        id_text=state.id_text,
        id_lengths=_unpack(id_lengths(), state.id_lengths, "customer", "id lengths"),
        amounts=_unpack(float64s(), state.amounts, "customer", "amounts"),
        fraud_labels=state.fraud_labels,
        recent_ids=state.recent_ids,
        recent_rows=state.recent_rows,
    )
    _check_ids(window, "customer")
    if len(window.amounts) != len(window.times):
        raise _corrupt(
            "customer", f"holds {len(window.amounts)} amounts for {len(window.times)} times"
        )
    expected = len(window.recent_ids) * width * ROW_ITEM.size
    if len(window.recent_rows) != expected:
        raise _corrupt(
            "customer",
            f"holds {len(window.recent_rows)} bytes of feature rows where "
            f"{len(window.recent_ids)} rows of {width} values take {expected}",
        )
    return window


def decode_terminal(data: bytes) -> TerminalWindow:
    """A terminal window from :func:`encode_window` output."""
    state = _decode(_TERMINAL, data, "terminal")
    window = TerminalWindow(
        times=_unpack(int64s(), state.times, "terminal", "times"),
        id_text=state.id_text,
        id_lengths=_unpack(id_lengths(), state.id_lengths, "terminal", "id lengths"),
        fraud_labels=state.fraud_labels,
    )
    _check_ids(window, "terminal")
    return window


A = TypeVar("A", IntArray, FloatArray)


def _unpack(packed: A, data: bytes, kind: str, field: str) -> A:
    if len(data) % packed.itemsize:
        raise _corrupt(
            kind, f"holds {len(data)} bytes of {field}, not a multiple of {packed.itemsize}"
        )
    packed.frombytes(data)
    return packed


def _check_ids(window: CustomerWindow | TerminalWindow, kind: str) -> None:
    lengths = window.id_lengths
    if len(lengths) != len(window.times) or sum(lengths) != len(window.id_text):
        raise _corrupt(
            kind,
            f"holds {len(lengths)} id lengths summing to {sum(lengths)} for "
            f"{len(window.times)} times and {len(window.id_text)} characters of ids",
        )


def _decode(decoder: msgspec.msgpack.Decoder[S], data: bytes, kind: str) -> S:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _corrupt(kind, f"of {len(data)} bytes cannot be read ({exc})") from None


def _corrupt(kind: str, problem: str) -> InputDataError:
    return InputDataError(
        f"{kind} window state {problem}; it was written by other code or another feature "
        "set: drop the stored state (or use a new namespace) so it is rebuilt from new events"
    )


class IncrementalFeatures:
    """Apply one transaction to its customer and terminal windows and record its row."""

    def __init__(self, fs: FeatureSet) -> None:
        self.feature_set = fs
        self.sequence_length = fs.sequence_length
        self._customer_windows_us = [n * MICROS_PER_DAY for n in fs.customer_windows_days]
        self._terminal_windows_us = [n * MICROS_PER_DAY for n in fs.terminal_windows_days]
        self._delay_us = fs.label_delay_days * MICROS_PER_DAY
        self._customer_horizon_us = fs.customer_horizon_days * MICROS_PER_DAY
        self._terminal_horizon_us = fs.terminal_horizon_days * MICROS_PER_DAY
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
        self.row_bytes = len(picks) * ROW_ITEM.size
        self._pack = struct.Struct(f"<{len(picks)}d").pack
        self._select: Callable[[list[float]], Sequence[float]] | None = None
        if len(picks) == 1:
            only = picks[0]
            self._select = lambda row: (row[only],)
        elif picks != list(range(len(computed))):
            self._select = itemgetter(*picks)

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
        self.apply_customer_label(customer, *label)
        self.insert_terminal_label(terminal, *label)

    def apply_customer_label(
        self,
        customer: CustomerWindow,
        transaction_id: str,
        event_time_us: int,
        label_time_us: int,
        is_fraud: bool,
    ) -> None:
        """:meth:`apply_label` on the customer's window only (its terminal's took the label
        through :meth:`insert_terminal_label`)."""
        label = (transaction_id, event_time_us, label_time_us, is_fraud)
        _record_label(customer, self._customer_horizon_us, *label)

    def insert_terminal_label(
        self,
        terminal: TerminalWindow,
        transaction_id: str,
        event_time_us: int,
        label_time_us: int,
        is_fraud: bool,
    ) -> None:
        """:meth:`apply_label` on the terminal's window only."""
        label = (transaction_id, event_time_us, label_time_us, is_fraud)
        _record_label(terminal, self._terminal_horizon_us, *label)

    def insert_terminal(
        self, terminal: TerminalWindow, transaction_id: str, event_time_us: int, cutoff_us: float
    ) -> bool:
        """Add a transaction to its terminal's window ahead of its row (workers sharing
        terminals insert their transactions first, then compute rows once every partition
        inserted up to them: :meth:`apply_transaction` with ``terminal_inserted``).

        Drops what is at or before ``cutoff_us``, which no row computed from now on can
        reach. Whether it changed the window: not if the window holds the id at that time
        (a re-delivery) or the transaction is late (:meth:`is_late`'s terminal rule).
        """
        t = event_time_us
        times = terminal.times
        if times and t <= times[-1] - self._terminal_horizon_us:
            return False
        here = len(times)
        if here and times[-1] >= t:
            here = _position(terminal, transaction_id, t)
            if here < 0:
                return False
        here = _prune_terminal(terminal, cutoff_us, here)
        _put_terminal(terminal, here, t, transaction_id)
        return True

    def is_late(self, customer: CustomerWindow, terminal: TerminalWindow, t: int) -> bool:
        """Whether a transaction at ``t`` is older than a window horizon relative to its
        customer's or terminal's newest event."""
        times, terminal_times = customer.times, terminal.times
        return bool(
            (times and t <= times[-1] - self._customer_horizon_us)
            or (terminal_times and t <= terminal_times[-1] - self._terminal_horizon_us)
        )

    def score_late(
        self,
        customer: CustomerWindow,
        terminal: TerminalWindow,
        transaction_id: str,
        event_time_us: int,
        amount: float,
        *,
        terminal_inserted: bool = False,
    ) -> tuple[int, CustomerWindow]:
        """What :meth:`apply_transaction` would do, on copies of the windows: the status and
        the customer copy whose ``recent_rows`` end with the transaction's row (when
        :data:`APPLIED`). The windows themselves are not changed."""
        copy = _copy_customer(customer)
        status = self.apply_transaction(
            copy, terminal if terminal_inserted else _copy_terminal(terminal), transaction_id,
            event_time_us, amount, terminal_inserted=terminal_inserted,
        )  # fmt: skip
        return status, copy

    def apply_transaction(
        self,
        customer: CustomerWindow,
        terminal: TerminalWindow,
        transaction_id: str,
        event_time_us: int,
        amount: float,
        *,
        terminal_inserted: bool = False,
    ) -> int:
        """Add a transaction to both windows and its row (``feature_set.columns`` order) to
        the customer's ``recent_rows``: :data:`APPLIED`.

        Changes nothing and returns :data:`DUPLICATE` when the windows already hold this
        transaction (a re-delivery), :data:`CONFLICT` when they hold its id with other
        content. ``terminal_inserted``: the terminal's window took the transaction
        already (:meth:`insert_terminal`) and may hold later ones; it is only read, and
        its rows are those of a window holding just the earlier transactions.
        """
        t = event_time_us
        recent_ids = customer.recent_ids
        if transaction_id in recent_ids:
            return _redelivered(customer, transaction_id, t, amount)
        if len(transaction_id) > MAX_ID_LENGTH:
            raise InputDataError(
                f"transaction id {transaction_id[:20]!r}... has {len(transaction_id)} "
                f"characters; windows keep ids of at most {MAX_ID_LENGTH} (transaction.v1 "
                "allows 64): shorten the ids"
            )
        times = customer.times
        terminal_times = terminal.times
        here = len(times)
        if here and times[-1] >= t:  # not the customer's newest event: mind the ties
            here = _position(customer, transaction_id, t)
        terminal_here = len(terminal_times)
        if terminal_inserted:  # the earlier transactions, whatever ties and later ones it holds
            terminal_here = bisect_left(terminal_times, t)
        elif terminal_here and terminal_times[-1] >= t:
            terminal_here = _position(terminal, transaction_id, t)
        if here < 0:
            return _redelivered(customer, transaction_id, t, amount)
        if terminal_here < 0 or _holds(customer, transaction_id):
            return CONFLICT  # the terminal's at t, not the customer's; or held at another time
        horizon, terminal_horizon, delay = self._horizons_us
        amounts = customer.amounts
        # drop what no window can reach: every transaction left is inside the longest windows
        cutoff = t - horizon
        if here and times[0] <= cutoff:
            stale = bisect_right(times, cutoff, 0, here)
            _drop_ids(customer, stale)
            del times[:stale], amounts[:stale]
            here -= stale
        if customer.fraud_labels:
            _drop_labels(customer, cutoff)
        if not terminal_inserted:  # a shared terminal's window is only read (see above)
            terminal_here = _prune_terminal(terminal, t - terminal_horizon, terminal_here)
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

        if not terminal_inserted:
            _put_terminal(terminal, terminal_here, t, transaction_id)
        delayed = t - delay
        delayed_end = bisect_right(
            terminal_times, delayed, 0, terminal_here + (not terminal_inserted)
        )
        terminal_frauds = terminal.fraud_labels
        end = delayed_end
        for window in self._terminal_windows_us:
            if end:  # the longest window starts at the horizon: nothing before it is kept,
                # unless the window was shared (insert_terminal prunes behind every worker)
                end = bisect_right(terminal_times, delayed - window, 0, end)
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
        earlier = end = bisect_left(terminal_times, t, 0, terminal_here)
        for window in self._undelayed_windows_us:
            end = bisect_right(terminal_times, t - window, 0, end)
            append(earlier - end + 1.0)

        if here == len(times):  # the customer's newest event
            times.append(t)
            amounts.append(amount)
            customer.id_text += transaction_id
            customer.id_lengths.append(len(transaction_id))
        else:
            times.insert(here, t)
            amounts.insert(here, amount)
            _insert_id(customer, here, transaction_id)
        recent_rows = customer.recent_rows
        recent_rows += self._pack(*(row if self._select is None else self._select(row)))
        recent_ids.append(transaction_id)
        if len(recent_ids) > self.sequence_length:
            del recent_ids[0]
            del recent_rows[: self.row_bytes]
        return APPLIED


def _prune_terminal(terminal: TerminalWindow, cutoff_us: float, here: int) -> int:
    """Drop the terminal's transactions before position ``here`` and its fraud labels at or
    before ``cutoff_us``: where ``here`` is now."""
    times = terminal.times
    if here and times[0] <= cutoff_us:
        stale = bisect_right(times, cutoff_us, 0, here)
        _drop_ids(terminal, stale)
        del times[:stale]
        here -= stale
    if terminal.fraud_labels:
        _drop_labels(terminal, cutoff_us)
    return here


def _put_terminal(terminal: TerminalWindow, here: int, t: int, transaction_id: str) -> None:
    """Add a transaction at position ``here`` of the terminal's window."""
    times = terminal.times
    if here == len(times):  # the terminal's newest event
        times.append(t)
        terminal.id_text += transaction_id
        terminal.id_lengths.append(len(transaction_id))
    else:
        times.insert(here, t)
        _insert_id(terminal, here, transaction_id)


def _redelivered(customer: CustomerWindow, transaction_id: str, t: int, amount: float) -> int:
    """:data:`DUPLICATE` if the customer's window holds the id at ``t`` with ``amount`` (or
    no longer holds it: only its row is left), else :data:`CONFLICT`."""
    ids = customer.transaction_ids
    if transaction_id not in ids:
        return DUPLICATE
    at = ids.index(transaction_id)
    same = customer.times[at] == t and customer.amounts[at] == amount
    return DUPLICATE if same else CONFLICT


def _holds(window: CustomerWindow, transaction_id: str) -> bool:
    """Whether ``window`` holds the id (a substring search first: cheap when it does not)."""
    return transaction_id in window.id_text and transaction_id in window.transaction_ids


def _copy_customer(window: CustomerWindow) -> CustomerWindow:
    return CustomerWindow(
        int64s(window.times), window.id_text, id_lengths(window.id_lengths),
        float64s(window.amounts), list(window.fraud_labels), list(window.recent_ids),
        bytearray(window.recent_rows),
    )  # fmt: skip


def _copy_terminal(window: TerminalWindow) -> TerminalWindow:
    return TerminalWindow(
        int64s(window.times), window.id_text, id_lengths(window.id_lengths),
        list(window.fraud_labels),
    )  # fmt: skip


def _position(window: CustomerWindow | TerminalWindow, transaction_id: str, t: int) -> int:
    """Where a transaction at ``t`` goes (after its ties); -1 if a tie has its id."""
    times = window.times
    first_tie = bisect_left(times, t)
    here = bisect_right(times, t, first_tie)
    if first_tie < here:
        lengths = window.id_lengths
        start = sum(lengths[:first_tie])
        ties = window.id_text[start : start + sum(lengths[first_tie:here])]
        if transaction_id in ties and transaction_id in _split(ties, lengths[first_tie:here]):
            return -1
    return here


def _split(text: str, lengths: Sequence[int]) -> list[str]:
    ids = []
    at = 0
    for length in lengths:
        ids.append(text[at : at + length])
        at += length
    return ids


def _insert_id(window: CustomerWindow | TerminalWindow, here: int, transaction_id: str) -> None:
    lengths = window.id_lengths
    at = sum(lengths[:here])
    text = window.id_text
    window.id_text = text[:at] + transaction_id + text[at:]
    lengths.insert(here, len(transaction_id))


def _drop_ids(window: CustomerWindow | TerminalWindow, stale: int) -> None:
    """Drop the ids of the window's first ``stale`` transactions."""
    lengths = window.id_lengths
    window.id_text = window.id_text[sum(lengths[:stale]) :]
    del lengths[:stale]


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


def _drop_labels(window: CustomerWindow | TerminalWindow, cutoff_us: float) -> None:
    """Drop the fraud labels of transactions at or before ``cutoff_us`` (outside every window)."""
    labels = window.fraud_labels
    if any(e <= cutoff_us for _, e, _ in labels):
        window.fraud_labels = [label for label in labels if label[1] > cutoff_us]
