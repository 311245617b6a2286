"""Our JSONL event files: one ``transaction.v1`` or ``label.v1`` event per line.

Lines may come in any order (a label before its transaction is fine); blank lines are
skipped. A name ending in ``.gz`` is gzip-compressed. Files are read and written one line
at a time, so the file text is never held in memory.

:func:`write_jsonl` writes the events a replay publishes, in the same order
(:mod:`stream_app.sources.events`): transactions at their event time, each label at its
label time (before a transaction of the same instant). A history whose amounts have at
most 4 decimals (the contract's limit) reads back exactly; others are rounded to 4. The
contracts do not carry the simulator's ``fraud_scenario``; it reads back as -1.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from stream_app.contracts import Label, Transaction, decode_event, from_epoch_us, to_epoch_us
from stream_app.errors import ContractError, InputDataError
from stream_app.sources.events import RecordEncoder, replay_order
from stream_app.sources.history import NO_LABEL_US, TransactionHistory

_WRITE_BATCH = 10_000

_BinaryFile = BinaryIO | gzip.GzipFile


def read_jsonl(path: str | Path) -> TransactionHistory:
    """Read a JSONL event file into a history, labels joined to their transactions.

    Raises :class:`InputDataError` naming the file and line for an event that breaks its
    contract, a repeated transaction or label, a label without its transaction or that
    disagrees with it, mixed currencies, and a file without transactions.
    """
    path = Path(path)
    events = _Events(path)
    with _open(path, "rb") as handle:
        for number, line in _numbered_lines(handle):
            try:
                event = decode_event(line)
            except ContractError as exc:
                raise InputDataError(
                    f"{path} line {number}: {exc.field}: {exc.problem}"
                ) from None
            events.add(number, event)
    return events.history()


def write_jsonl(history: TransactionHistory, path: str | Path, include_labels: bool = True) -> None:
    """Write ``history`` as JSONL events (gzip when ``path`` ends in ``.gz``).

    Labels are written for labelled transactions (``label_time_us`` set) when
    ``include_labels``. Raises :class:`InputDataError` for a value the contracts reject.
    """
    path = Path(path)
    order = replay_order(history, labels=include_labels)
    encoder = RecordEncoder(history)
    rows, is_label = order.row.tolist(), order.is_label.tolist()
    with _open(path, "wb") as handle:
        for start in range(0, len(rows), _WRITE_BATCH):
            stop = start + _WRITE_BATCH
            handle.writelines(
                encoder.payload(row, label) + b"\n"
                for row, label in zip(rows[start:stop], is_label[start:stop], strict=True)
            )


@contextmanager
def _open(path: Path, mode: Literal["rb", "wb"]) -> Iterator[_BinaryFile]:
    """``path`` opened in binary ``mode`` (gunzipped/gzipped for ``.gz``); every I/O
    failure inside the block becomes an :class:`InputDataError` naming the file."""
    verb = "read" if mode == "rb" else "write"
    zipped = path.name.endswith(".gz")
    try:
        with gzip.open(path, mode, compresslevel=6) if zipped else path.open(mode) as handle:
            yield handle
    except FileNotFoundError:
        where = "it" if mode == "rb" else "its directory"
        raise InputDataError(
            f"cannot {verb} {path}: {where} does not exist; check the path"
        ) from None
    except (OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InputDataError(f"cannot {verb} {path}: {reason}") from None


def _numbered_lines(handle: _BinaryFile) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(handle, start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


@dataclass
class _Events:
    """Columns of the transactions and labels of one file, in file order."""

    path: Path
    currency: str = ""
    tx_id: list[str] = field(default_factory=list)
    tx_customer: list[str] = field(default_factory=list)
    tx_terminal: list[str] = field(default_factory=list)
    tx_time_us: list[int] = field(default_factory=list)
    tx_amount: list[float] = field(default_factory=list)
    tx_line: list[int] = field(default_factory=list)
    label_id: list[str] = field(default_factory=list)
    label_customer: list[str] = field(default_factory=list)
    label_terminal: list[str] = field(default_factory=list)
    label_event_time_us: list[int] = field(default_factory=list)
    label_time_us: list[int] = field(default_factory=list)
    label_fraud: list[bool] = field(default_factory=list)
    label_line: list[int] = field(default_factory=list)

    def add(self, number: int, event: Transaction | Label) -> None:
        if isinstance(event, Label):
            self.label_id.append(event.transaction_id)
            self.label_customer.append(event.customer_id)
            self.label_terminal.append(event.terminal_id)
            self.label_event_time_us.append(to_epoch_us(event.event_time))
            self.label_time_us.append(to_epoch_us(event.label_time))
            self.label_fraud.append(event.is_fraud)
            self.label_line.append(number)
            return
        if event.currency != self.currency:
            if self.currency:
                raise self._error(
                    number, f"currency {event.currency!r} differs from {self.currency!r} on "
                    f"line {self.tx_line[0]}; a history holds one currency, split the file by "
                    "currency"
                )
            self.currency = event.currency
        self.tx_id.append(event.transaction_id)
        self.tx_customer.append(event.customer_id)
        self.tx_terminal.append(event.terminal_id)
        self.tx_time_us.append(to_epoch_us(event.event_time))
        self.tx_amount.append(event.amount_float)
        self.tx_line.append(number)

    def history(self) -> TransactionHistory:
        """Join the labels to their transactions, sort by event time (ties in file order)."""
        n = len(self.tx_id)
        if not n:
            raise InputDataError(
                f"{self.path} holds no transaction.v1 events; a history needs at least one"
            )
        row_of = self._index(self.tx_id, self.tx_line, "transaction",
                             "keep one event per transaction id")
        self._index(self.label_id, self.label_line, "label for transaction",
                    "keep one label per transaction")
        rows = np.fromiter((row_of.get(tid, -1) for tid in self.label_id), dtype=np.int64,
                           count=len(self.label_id))
        self._check_labels(rows)
        event_time_us = np.array(self.tx_time_us, dtype=np.int64)
        is_fraud = np.zeros(n, dtype=np.int8)
        is_fraud[rows] = self.label_fraud
        label_time_us = np.full(n, NO_LABEL_US, dtype=np.int64)
        label_time_us[rows] = self.label_time_us
        order = np.argsort(event_time_us, kind="stable")
        return TransactionHistory(
            transaction_id=_objects(self.tx_id)[order],
            customer_id=_objects(self.tx_customer)[order],
            terminal_id=_objects(self.tx_terminal)[order],
            event_time_us=event_time_us[order],
            amount=np.array(self.tx_amount, dtype=np.float64)[order],
            currency=self.currency,
            is_fraud=is_fraud[order],
            label_time_us=label_time_us[order],
            fraud_scenario=np.full(n, -1, dtype=np.int8),
        )

    def _index(self, ids: list[str], lines: list[int], what: str, fix: str) -> dict[str, int]:
        """``id -> position``; an error naming both lines when an id repeats."""
        index = dict(zip(ids, range(len(ids)), strict=True))
        if len(index) < len(ids):
            seen: dict[str, int] = {}
            for position, tid in enumerate(ids):
                if tid in seen:
                    raise self._error(
                        lines[position],
                        f"{what} {tid!r} repeats line {lines[seen[tid]]}; {fix}",
                    )
                seen[tid] = position
        return index

    def _check_labels(self, rows: npt.NDArray[np.int64]) -> None:
        """Every label names a transaction of the file and repeats its ids and time."""
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            first = int(missing[0])
            raise self._error(
                self.label_line[first],
                f"label for transaction {self.label_id[first]!r}, which is not in the file; "
                "add its transaction.v1 event or remove the label",
            )
        for name, ours, theirs in (
            ("customer_id", _objects(self.tx_customer), _objects(self.label_customer)),
            ("terminal_id", _objects(self.tx_terminal), _objects(self.label_terminal)),
            ("event_time", np.array(self.tx_time_us), np.array(self.label_event_time_us)),
        ):
            differs = np.flatnonzero(ours[rows] != theirs)
            if len(differs):
                label = int(differs[0])
                row = int(rows[label])
                want, have = ours[row], theirs[label]
                if name == "event_time":
                    want, have = _rfc3339(want), _rfc3339(have)
                raise self._error(
                    self.label_line[label],
                    f"the label's {name} {have!r} differs from {want!r} of transaction "
                    f"{self.label_id[label]!r} on line {self.tx_line[row]}; a label repeats "
                    f"its transaction's {name}",
                )

    def _error(self, number: int, problem: str) -> InputDataError:
        return InputDataError(f"{self.path} line {number}: {problem}")


def _rfc3339(epoch_us: int) -> str:
    return from_epoch_us(int(epoch_us)).isoformat().replace("+00:00", "Z")


def _objects(values: list[str]) -> npt.NDArray[np.object_]:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
