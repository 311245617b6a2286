"""A whole transaction history held as columns, the input of batch features and replays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream_app.errors import InputDataError

NO_LABEL_US = np.iinfo(np.int64).max
"""``label_time_us`` of a transaction whose outcome is not (yet) known."""


@dataclass(frozen=True, eq=False)
class TransactionHistory:
    """Columnar history in processing order (event time, ties in file order).

    Ids are strings (object arrays); times are int64 microseconds since the epoch, UTC.
    ``is_fraud`` is 1/0 where a label exists, and ``label_time_us`` is when that label
    became known (``NO_LABEL_US`` when it never did). ``fraud_scenario`` is the
    simulator's/handbook's scenario code (0 genuine) when known, else -1.
    """

    transaction_id: npt.NDArray[np.object_]
    customer_id: npt.NDArray[np.object_]
    terminal_id: npt.NDArray[np.object_]
    event_time_us: npt.NDArray[np.int64]
    amount: npt.NDArray[np.float64]
    currency: str
    is_fraud: npt.NDArray[np.int8]
    label_time_us: npt.NDArray[np.int64]
    fraud_scenario: npt.NDArray[np.int8]

    def __post_init__(self) -> None:
        n = len(self.transaction_id)
        for name in ("customer_id", "terminal_id", "event_time_us", "amount", "is_fraud",
                     "label_time_us", "fraud_scenario"):
            if len(getattr(self, name)) != n:
                raise InputDataError(
                    f"history column {name!r} has {len(getattr(self, name))} rows, "
                    f"transaction_id has {n}; every column needs one value per transaction"
                )
        if n and bool(np.any(np.diff(self.event_time_us) < 0)):
            raise InputDataError(
                "history is not sorted by event time; sort it by event time (stable) first"
            )

    def __len__(self) -> int:
        return len(self.transaction_id)

    def slice(self, start: int, stop: int) -> TransactionHistory:
        """Rows ``start:stop`` as a new history (views, no copies)."""
        return TransactionHistory(
            transaction_id=self.transaction_id[start:stop],
            customer_id=self.customer_id[start:stop],
            terminal_id=self.terminal_id[start:stop],
            event_time_us=self.event_time_us[start:stop],
            amount=self.amount[start:stop],
            currency=self.currency,
            is_fraud=self.is_fraud[start:stop],
            label_time_us=self.label_time_us[start:stop],
            fraud_scenario=self.fraud_scenario[start:stop],
        )
