"""Window stores: apply batches of labels and transactions, return feature rows and sequences.

:class:`WindowStore` is the one interface of every store: ``compute`` a batch (rows now,
nothing durable), then ``write_all`` the computed batches once their outputs are safe.
A :class:`WindowStoreConfig` opens a store on its own clients, in the worker or in a
child process. :func:`apply_batch` is the one batch algorithm; :class:`InMemoryWindowStore`
runs it over dicts, :class:`~stream_app.features.redis_store.RedisWindowStore` over the
windows it loaded for the batch. :func:`replay_history` drives an in-memory store over a
whole history in event time.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.features.batch import FeatureTable
from stream_app.features.incremental import (
    APPLIED,
    DUPLICATE,
    CustomerWindow,
    IncrementalFeatures,
    TerminalWindow,
)
from stream_app.features.spec import FeatureSet
from stream_app.sources.history import NO_LABEL_US, TransactionHistory

_REPLAY_BATCH = 4096


@dataclass(frozen=True, eq=False)
class FeatureBatch:
    """Feature rows of a batch of transactions, in the order given.

    ``values`` float64 [n, F]; ``sequences`` float32 [n, K, F]: the customer's last K rows,
    oldest first, current last, zero rows as left padding; ``mask`` float32 [n, K] (1 real,
    0 padding). ``duplicate[i]`` marks a re-delivered transaction: state was not changed,
    its row is the first one when still cached (its customer's last K), else NaN, and it
    must not be scored or alerted again. ``conflict[i]`` marks an id the windows hold with
    other content: not applied, its row NaN, for the dead-letter queue. ``late[i]`` marks a
    transaction older than a window horizon: not applied, its row computed against the
    windows as they are (:meth:`~stream_app.features.incremental.IncrementalFeatures.score_late`).
    """

    transaction_id: tuple[str, ...]
    columns: tuple[str, ...]
    values: npt.NDArray[np.float64]
    sequences: npt.NDArray[np.float32]
    mask: npt.NDArray[np.float32]
    duplicate: npt.NDArray[np.bool_]
    conflict: npt.NDArray[np.bool_]
    late: npt.NDArray[np.bool_]

    @property
    def to_score(self) -> npt.NDArray[np.intp]:
        """The positions of the transactions to score: neither re-delivered nor in conflict."""
        return np.flatnonzero(~(self.duplicate | self.conflict))


@dataclass(frozen=True)
class Progress:
    """What a worker sharing terminal windows with others tells the store with a batch.

    ``partitions``: the transactions partitions it owns (their labels partitions are the
    same numbers), of ``total_partitions``. ``through_us``: every transaction and label of
    those partitions at or before this event time is in this batch or an earlier one of
    the ``generation`` (-inf: nothing new; claims only grow); ``inf``, in a batch without
    events: nothing is left to fetch and the partitions were quiet for ``idle_grace_s``
    (the store then claims what the other partitions claimed a grace ago). See "Exact
    with N workers" in docs/design.md.
    """

    generation: int
    partitions: tuple[int, ...]
    total_partitions: int
    through_us: float
    idle_grace_s: float = 0.0


class ComputedWindows(Protocol):
    """A batch applied to the windows, not durable yet (what :meth:`WindowStore.compute`
    returns and :meth:`WindowStore.write_all` takes)."""

    @property
    def features(self) -> FeatureBatch:
        """A row per input transaction."""
        ...

    @property
    def changed(self) -> bool:
        """Whether any window changed (there is something to write)."""
        ...


C = TypeVar("C", bound=ComputedWindows)


class WindowStore(Protocol[C]):
    """Keeps customer and terminal windows and turns event batches into feature rows."""

    @property
    def feature_set(self) -> FeatureSet:
        """The feature set whose columns the batches hold."""
        ...

    @property
    def computes_in_order(self) -> bool:
        """Whether computes may overlap: each applies after those called before it."""
        ...

    async def compute(
        self,
        transactions: Sequence[TransactionEvent],
        labels: Sequence[LabelEvent],
        progress: Progress | None = None,
    ) -> C:
        """Apply ``labels``, then ``transactions`` in order; nothing is durable yet.

        ``progress`` (while terminals are shared): the batch's terminal changes are
        stored first, then the rows wait until every partition's owner stored its
        terminal changes up to the batch's newest transaction; a call without events
        whose ``progress`` says caught up and quiet only claims progress. Raises
        :class:`~stream_app.errors.Superseded` when :meth:`supersede` ends the wait.
        """
        ...

    async def write_all(self, batches: Sequence[C]) -> None:
        """Make computed batches' window changes durable, in the order given."""
        ...

    def reset_cache(self, *, shared_terminals: bool) -> None:
        """Drop windows cached in the process (after a rebalance); ``shared_terminals``:
        other workers write terminal windows too."""
        ...

    def supersede(self, generation: int) -> None:
        """Computes of generations before ``generation`` stop waiting (a rebalance)."""
        ...

    async def close(self) -> None:
        """Release the store's clients (or child process)."""
        ...


class WindowStoreConfig(Protocol):
    """A picklable, frozen description of a store: the same config opens it in the worker
    or in a child process (:class:`~stream_app.worker.window_process.WindowProcess`)."""

    def open(self) -> WindowStore[Any]:
        """A new store on its own clients; :meth:`WindowStore.close` releases them."""
        ...


def apply_batch(
    features: IncrementalFeatures,
    customers: MutableMapping[str, CustomerWindow],
    terminals: MutableMapping[str, TerminalWindow],
    transactions: Sequence[TransactionEvent],
    labels: Sequence[LabelEvent],
    *,
    terminals_inserted: bool = False,
) -> FeatureBatch:
    """Apply a batch to the windows in the mappings (missing keys get new, empty windows).

    ``terminals_inserted``: the terminal windows took the batch's labels and transactions
    already (:func:`insert_terminals`); they are only read.
    """
    k = features.sequence_length
    columns = features.feature_set.columns
    steps = _apply_steps(
        features, customers, terminals, transactions, labels, k, terminals_inserted
    )
    n = len(transactions)
    flat = np.frombuffer(steps.packed, dtype="<f8").reshape(n, k, len(columns))
    values = flat[:, -1].astype(np.float64)
    values[steps.missing] = np.nan
    padded = k - np.array(steps.real, dtype=np.int64).reshape(n, 1)
    return FeatureBatch(
        transaction_id=tuple(map(itemgetter(0), transactions)),
        columns=columns,
        values=values,
        sequences=flat.astype(np.float32),
        mask=(np.arange(k) >= padded).astype(np.float32),
        duplicate=_mask(n, steps.duplicates),
        conflict=_mask(n, steps.conflicts),
        late=_mask(n, steps.late),
    )


def _mask(n: int, positions: list[int]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=np.bool_)
    mask[positions] = True
    return mask


def insert_terminals(
    features: IncrementalFeatures,
    terminals: MutableMapping[str, TerminalWindow],
    transactions: Sequence[TransactionEvent],
    labels: Sequence[LabelEvent],
    cutoff_us: float,
) -> set[str]:
    """Add a batch's labels, then its transactions, to their terminals' windows ahead of
    its rows (:meth:`~stream_app.features.incremental.IncrementalFeatures.insert_terminal`;
    missing keys get new, empty windows): the ids of the terminals that may have changed."""
    touched = set()
    for label in labels:
        terminal = terminals.get(label.terminal_id)
        if terminal is None:
            terminal = terminals[label.terminal_id] = TerminalWindow()
        features.insert_terminal_label(
            terminal, label.transaction_id, label.event_time_us, label.label_time_us,
            label.is_fraud,
        )  # fmt: skip
        touched.add(label.terminal_id)
    insert = features.insert_terminal
    for tx_id, _, terminal_id, event_time_us, _ in transactions:
        terminal = terminals.get(terminal_id)
        if terminal is None:
            terminal = terminals[terminal_id] = TerminalWindow()
        if insert(terminal, tx_id, event_time_us, cutoff_us):
            touched.add(terminal_id)
    return touched


@dataclass
class _Steps:
    """What :func:`_apply_steps` returns: the rows packed (``steps`` rows a transaction,
    oldest first, current last, zero rows as left padding), the number of real rows of
    each transaction, and the positions of the re-delivered, conflicting, late
    transactions and of those without a row (all padding, NaN values)."""

    packed: bytearray = field(default_factory=bytearray)
    real: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def _apply_steps(
    features: IncrementalFeatures,
    customers: MutableMapping[str, CustomerWindow],
    terminals: MutableMapping[str, TerminalWindow],
    transactions: Sequence[TransactionEvent],
    labels: Sequence[LabelEvent],
    steps: int,
    terminals_inserted: bool,
) -> _Steps:
    """Apply a batch; per transaction, its customer's last ``steps`` rows up to it."""
    for label in labels:
        customer = customers.get(label.customer_id)
        if customer is None:
            customer = customers[label.customer_id] = CustomerWindow()
        label_fields = (
            label.transaction_id, label.event_time_us, label.label_time_us, label.is_fraud
        )  # fmt: skip
        if terminals_inserted:
            features.apply_customer_label(customer, *label_fields)
            continue
        terminal = terminals.get(label.terminal_id)
        if terminal is None:
            terminal = terminals[label.terminal_id] = TerminalWindow()
        features.apply_label(customer, terminal, *label_fields)
    row_bytes = features.row_bytes
    size = steps * row_bytes
    padding = bytes(size)
    out = _Steps()
    packed, real, duplicates, missing = out.packed, out.real, out.duplicates, out.missing
    apply, is_late = features.apply_transaction, features.is_late
    get_customer, get_terminal, add_real = customers.get, terminals.get, real.append
    for i, (tx_id, customer_id, terminal_id, event_time_us, amount) in enumerate(transactions):
        customer = get_customer(customer_id)
        if customer is None:
            customer = customers[customer_id] = CustomerWindow()
        terminal = get_terminal(terminal_id)
        if terminal is None:
            terminal = terminals[terminal_id] = TerminalWindow()
        if is_late(customer, terminal, event_time_us):
            out.late.append(i)
            status, scored = features.score_late(
                customer, terminal, tx_id, event_time_us, amount,
                terminal_inserted=terminals_inserted,
            )  # fmt: skip
        else:
            status = apply(
                customer, terminal, tx_id, event_time_us, amount,
                terminal_inserted=terminals_inserted,
            )  # fmt: skip
            scored = customer
        if status == APPLIED:
            rows = scored.recent_rows
        elif status == DUPLICATE and tx_id in customer.recent_ids:
            duplicates.append(i)
            recent_ids = customer.recent_ids
            rows = customer.recent_rows[: (recent_ids.index(tx_id) + 1) * row_bytes]
        else:
            (duplicates if status == DUPLICATE else out.conflicts).append(i)
            missing.append(i)
            packed += padding
            add_real(0)
            continue
        held = len(rows)
        if held < size:
            packed += padding[held:]
            packed += rows
        elif held == size:
            packed += rows
        else:
            packed += rows[held - size :]
            held = size
        add_real(held // row_bytes)
    return out


@dataclass(frozen=True, eq=False)
class InMemoryBatch:
    """A batch :class:`InMemoryWindowStore` applied: nothing is left to write (``changed``
    is False)."""

    features: FeatureBatch

    @property
    def changed(self) -> bool:
        """False: :meth:`InMemoryWindowStore.compute` changed the windows already."""
        return False


class InMemoryWindowStore:
    """A :class:`WindowStore` holding every window in process memory (tests, replays).

    :meth:`compute` applies a batch at once to the dicts (:meth:`apply`), so computes run
    in the order called and :meth:`write_all` has nothing to do; the windows are the
    state, not a cache of it, so :meth:`reset_cache` keeps them.
    """

    def __init__(self, fs: FeatureSet) -> None:
        self._features = IncrementalFeatures(fs)
        self.customers: dict[str, CustomerWindow] = {}
        self.terminals: dict[str, TerminalWindow] = {}

    @property
    def feature_set(self) -> FeatureSet:
        """The feature set whose columns the batches hold."""
        return self._features.feature_set

    @property
    def computes_in_order(self) -> bool:
        """True: a compute applies its batch without awaiting anything."""
        return True

    def apply(
        self, transactions: Sequence[TransactionEvent], labels: Sequence[LabelEvent]
    ) -> FeatureBatch:
        """Apply ``labels``, then ``transactions`` in order; the rows of ``transactions``
        (:meth:`compute` without an event loop: backtests and replays)."""
        return apply_batch(self._features, self.customers, self.terminals, transactions, labels)

    async def compute(
        self,
        transactions: Sequence[TransactionEvent],
        labels: Sequence[LabelEvent],
        progress: Progress | None = None,
    ) -> InMemoryBatch:
        """:meth:`apply` (``progress`` is for stores shared by workers)."""
        return InMemoryBatch(self.apply(transactions, labels))

    async def write_all(self, batches: Sequence[InMemoryBatch]) -> None:
        """Nothing to do: :meth:`compute` changed the windows already."""

    def reset_cache(self, *, shared_terminals: bool) -> None:
        """Nothing to do: the dicts hold the only copy of the windows."""

    def supersede(self, generation: int) -> None:
        """Nothing to do: a compute never waits."""

    async def close(self) -> None:
        """Nothing to release (the windows stay readable)."""


@dataclass(frozen=True)
class InMemoryStoreConfig:
    """Opens a new, empty :class:`InMemoryWindowStore` (e.g. in a window process)."""

    feature_set: FeatureSet

    def open(self) -> InMemoryWindowStore:
        """A new, empty store."""
        return InMemoryWindowStore(self.feature_set)


def replay_history(
    history: TransactionHistory, fs: FeatureSet, store: InMemoryWindowStore | None = None
) -> FeatureTable:
    """Drive an in-memory store (:meth:`InMemoryWindowStore.apply`) over ``history`` in
    event time.

    Fraud labels are released at their ``label_time``: those with ``label_time <= t`` are
    applied before the transaction at ``t`` (genuine labels change no window, so they are
    not sent). ``sequence_index`` lists each customer's last K rows, as the store's
    ``sequences`` do. Without a ``store``, the windows live in dicts dropped at the end and
    no sequences are built (the table only needs the rows).
    """
    rows_of = _values_without_sequences(fs) if store is None else _values_of(store)
    frauds = np.flatnonzero((history.is_fraud == 1) & (history.label_time_us != NO_LABEL_US))
    frauds = frauds[np.argsort(history.label_time_us[frauds], kind="stable")]
    released = np.searchsorted(history.label_time_us[frauds], history.event_time_us, "right")
    cuts = np.flatnonzero(np.diff(released)) + 1
    bounds = np.unique(np.r_[0, cuts, np.arange(0, len(history), _REPLAY_BATCH), len(history)])
    transactions = transaction_events(history)
    values = np.empty((len(history), len(fs.columns)), dtype=np.float64)
    applied = 0
    collecting = gc.isenabled()
    gc.disable()  # the replay makes millions of objects and no cycles: skip the scans
    try:
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            due = int(released[start])
            labels = [_label_event(history, int(row)) for row in frauds[applied:due]]
            applied = due
            values[start:stop] = rows_of(transactions[start:stop], labels)
    finally:
        if collecting:
            gc.enable()
    return FeatureTable(
        transaction_id=history.transaction_id,
        columns=fs.columns,
        values=values,
        sequence_index=_last_rows(history.customer_id, fs.sequence_length),
    )


def transaction_events(history: TransactionHistory) -> list[TransactionEvent]:
    """The history's transactions as the window stores take them, in history order."""
    return [
        TransactionEvent(*fields)
        for fields in zip(
            history.transaction_id.tolist(),
            history.customer_id.tolist(),
            history.terminal_id.tolist(),
            history.event_time_us.tolist(),
            history.amount.tolist(),
            strict=True,
        )
    ]


_RowsOf = Callable[[Sequence[TransactionEvent], Sequence[LabelEvent]], npt.NDArray[np.float64]]


def _values_of(store: InMemoryWindowStore) -> _RowsOf:
    return lambda transactions, labels: store.apply(transactions, labels).values


def _values_without_sequences(fs: FeatureSet) -> _RowsOf:
    features = IncrementalFeatures(fs)
    customers: dict[str, CustomerWindow] = {}
    terminals: dict[str, TerminalWindow] = {}
    width = len(fs.columns)

    def rows_of(
        transactions: Sequence[TransactionEvent], labels: Sequence[LabelEvent]
    ) -> npt.NDArray[np.float64]:
        steps = _apply_steps(features, customers, terminals, transactions, labels, 1, False)
        values = np.frombuffer(steps.packed, dtype="<f8").reshape(len(transactions), width)
        if steps.missing:
            values = values.copy()
            values[steps.missing] = np.nan
        return values

    return rows_of


def _label_event(history: TransactionHistory, row: int) -> LabelEvent:
    return LabelEvent(
        str(history.transaction_id[row]),
        str(history.customer_id[row]),
        str(history.terminal_id[row]),
        int(history.event_time_us[row]),
        int(history.label_time_us[row]),
        bool(history.is_fraud[row]),
    )


def _last_rows(customer_ids: npt.NDArray[np.object_], k: int) -> npt.NDArray[np.int64]:
    """Row indices of each customer's last ``k`` rows up to each row, oldest first."""
    codes = pa.array(customer_ids, type=pa.string()).dictionary_encode().indices.to_numpy()
    order = np.argsort(codes, kind="stable")  # by customer, history order within each
    n = len(order)
    sorted_codes = codes[order]
    starts = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]] if n else np.zeros(0, np.bool_)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    steps = np.arange(n)[:, None] + np.arange(1 - k, 1)[None, :]
    rows = np.where(steps >= group_start[:, None], order[np.maximum(steps, 0)], -1)
    out = np.empty((n, k), dtype=np.int64)
    out[order] = rows
    return out
