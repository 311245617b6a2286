"""History rows as ``transaction.v1`` / ``label.v1`` events, in the order a live system sees them.

The one place that turns a :class:`TransactionHistory` into contract events:
:func:`~stream_app.sources.jsonl.write_jsonl` writes them to a file and
:func:`~stream_app.tools.replay.replay` publishes them to Kafka, both in
:func:`replay_order` and both through :class:`RecordEncoder`.

The replay clock is a transaction's event time and its label's ``label_time``. At the same
instant labels come before transactions (terminal windows count labels with
``label_time <= t``, so a transaction at ``t`` sees them; the worker's label barrier relies
on this), then history rows in order.

Both paths format amounts with :func:`format_amount`, so a backtest of a written file and a
replay of the same history see identical amounts, and every amount the contract can carry
(at most 4 decimals) reads back as exactly the float the history holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream_app.contracts import (
    Label,
    Transaction,
    encode_label,
    encode_transaction,
    from_epoch_us,
)
from stream_app.errors import ContractError, InputDataError
from stream_app.sources.history import NO_LABEL_US, TransactionHistory


@dataclass(frozen=True, eq=False)
class ReplayOrder:
    """The merged publication order of a history: one entry per event.

    ``row`` is the history row, ``is_label`` says whether the event is that row's label
    (else its transaction) and ``clock_us`` is the replay clock at which it is published
    (event time for transactions, label time for labels), non-decreasing.
    """

    row: npt.NDArray[np.int64]
    is_label: npt.NDArray[np.bool_]
    clock_us: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.row)

    @property
    def transactions(self) -> int:
        """Transactions in the order."""
        return int(len(self.row) - np.count_nonzero(self.is_label))

    @property
    def labels(self) -> int:
        """Labels in the order."""
        return int(np.count_nonzero(self.is_label))


def replay_order(
    history: TransactionHistory,
    start_us: int | None = None,
    stop_us: int | None = None,
    *,
    labels: bool = True,
) -> ReplayOrder:
    """Merge the transactions in ``[start_us, stop_us)`` and their labels on one clock.

    A label is included when its transaction is, and (with ``stop_us``) when its
    ``label_time`` is before ``stop_us``: the replay clock never passes ``stop_us``.
    ``labels=False`` leaves every label out.
    """
    if start_us is not None and stop_us is not None and stop_us <= start_us:
        raise InputDataError(
            f"the replay range is empty: --to {_iso(stop_us)} is not after --from "
            f"{_iso(start_us)}; pick a --to later than --from"
        )
    times = history.event_time_us
    lo = 0 if start_us is None else int(np.searchsorted(times, start_us, side="left"))
    hi = len(history) if stop_us is None else int(np.searchsorted(times, stop_us, side="left"))
    tx_rows = np.arange(lo, hi, dtype=np.int64)
    label_times = history.label_time_us[lo:hi]
    known = label_times != NO_LABEL_US
    if stop_us is not None:
        known &= label_times < stop_us
    label_rows = tx_rows[known] if labels else tx_rows[:0]
    rows = np.concatenate([label_rows, tx_rows])
    is_label = np.concatenate(
        [np.ones(len(label_rows), dtype=np.bool_), np.zeros(len(tx_rows), dtype=np.bool_)]
    )
    clock = np.concatenate([history.label_time_us[label_rows], times[tx_rows]])
    # Sort by clock; at equal clock labels first; then by history row (file order).
    order = np.lexsort((rows, ~is_label, clock))
    return ReplayOrder(row=rows[order], is_label=is_label[order], clock_us=clock[order])


def format_amount(amount: float) -> str:
    """``amount`` as a contract decimal string: no exponent, no trailing zeros.

    The shortest decimal that reads back as the same float when it has at most 4 decimal
    places (``12.5 -> "12.5"``, ``3.0 -> "3"``), so such amounts round-trip exactly; else
    rounded to 4 places, the contract's limit (float noise such as
    ``2.3000000000000003 -> "2.3"``, which the handbook data holds).
    """
    return np.format_float_positional(amount, precision=4, unique=True, trim="-")


class RecordEncoder:
    """Builds the ``transaction.v1`` / ``label.v1`` events of history rows."""

    def __init__(self, history: TransactionHistory) -> None:
        self._history = history

    def transaction(self, row: int) -> Transaction:
        """The transaction of ``row``."""
        h = self._history
        return Transaction(
            transaction_id=str(h.transaction_id[row]),
            customer_id=str(h.customer_id[row]),
            terminal_id=str(h.terminal_id[row]),
            amount=format_amount(float(h.amount[row])),
            currency=h.currency,
            event_time=from_epoch_us(int(h.event_time_us[row])),
        )

    def label(self, row: int) -> Label:
        """The label of ``row`` (its outcome must be known)."""
        h = self._history
        return Label(
            transaction_id=str(h.transaction_id[row]),
            customer_id=str(h.customer_id[row]),
            terminal_id=str(h.terminal_id[row]),
            event_time=from_epoch_us(int(h.event_time_us[row])),
            label_time=from_epoch_us(int(h.label_time_us[row])),
            is_fraud=bool(h.is_fraud[row]),
        )

    def payload(self, row: int, is_label: bool) -> bytes:
        """The encoded, validated event of ``row``.

        Raises :class:`InputDataError` naming the transaction, the row and the field when
        the history holds a value the contract rejects.
        """
        try:
            if is_label:
                return encode_label(self.label(row))
            return encode_transaction(self.transaction(row))
        except ContractError as exc:
            contract = "label.v1" if is_label else "transaction.v1"
            raise InputDataError(
                f"transaction {self._history.transaction_id[row]!r} (row {row}) cannot be "
                f"encoded as {contract}: {exc.field}: {exc.problem}; correct it in the history"
            ) from None


def _iso(epoch_us: int) -> str:
    return from_epoch_us(epoch_us).isoformat().replace("+00:00", "Z")
