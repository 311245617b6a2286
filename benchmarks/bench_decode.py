"""Decode throughput of the event contracts (the hot path of every consumed event).

Prints events/s and µs/event (CPU time, the best of ``--repeats`` runs) for: the worker's
path from bytes to the validated record and the window store's event, as
the decode stage (:class:`~stream_app.worker.decode.Decoder`) takes it (transactions and labels);
decoding valid transaction.v1 and label.v1 payloads alone; encoding transactions; and
decoding bad payloads into ContractError (the DLQ path).

    .venv/bin/python benchmarks/bench_decode.py [--events 200000] [--bad-events 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from stream_app.contracts import decode_label, decode_transaction, encode_transaction
from stream_app.contracts.decode import decode_label_event, decode_transaction_event
from stream_app.errors import ContractError

START = datetime(2018, 4, 1, tzinfo=UTC)
_T = TypeVar("_T")


def transactions(n: int) -> list[bytes]:
    """``n`` distinct valid transaction.v1 payloads, like the handbook's."""
    return [
        json.dumps(
            {
                "schema": "transaction.v1",
                "transaction_id": str(i),
                "customer_id": str(i % 5000),
                "terminal_id": str(i % 10000),
                "amount": f"{(i * 7919) % 100000 / 100:.2f}",
                "currency": "EUR",
                "event_time": (START + timedelta(seconds=i * 1.7)).isoformat(),
            }
        ).encode()
        for i in range(n)
    ]


def labels(n: int) -> list[bytes]:
    """``n`` distinct valid label.v1 payloads."""
    return [
        json.dumps(
            {
                "schema": "label.v1",
                "transaction_id": str(i),
                "customer_id": str(i % 5000),
                "terminal_id": str(i % 10000),
                "event_time": (START + timedelta(seconds=i)).isoformat(),
                "label_time": (START + timedelta(days=7, seconds=i)).isoformat(),
                "is_fraud": i % 100 == 0,
            }
        ).encode()
        for i in range(n)
    ]


def bad_transactions(n: int) -> list[bytes]:
    """``n`` invalid payloads cycling through the usual producer mistakes."""
    good = json.loads(transactions(1)[0])
    mistakes: list[bytes] = [
        json.dumps({**good, "amount": "-5.00"}).encode(),
        json.dumps({**good, "amount": 57.16}).encode(),
        json.dumps({**good, "event_time": "2018-04-01T00:00:31"}).encode(),
        json.dumps({**good, "schema": "transaction.v2"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "currency"}).encode(),
        json.dumps({**good, "channel": "web"}).encode(),
        b'{"schema": "transaction.v1", "amount": "\xff"}',
        b"not json at all",
    ]
    return [mistakes[i % len(mistakes)] for i in range(n)]


def measure(label: str, items: Sequence[_T], step: Callable[[_T], object], repeats: int) -> None:
    """Run ``step`` over ``items`` ``repeats`` times and print the best rate (CPU time)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            step(item)
        best = min(best, time.process_time() - start)
    n = len(items)
    rate = f"{n / best:>12,.0f} events/s  {best / n * 1e6:7.2f} µs/event"
    print(f"{label:<44} {n:>8} events  {rate}")


def reject(raw: bytes) -> str:
    try:
        decode_transaction(raw)
    except ContractError as error:
        return error.field
    raise AssertionError(f"payload was accepted: {raw!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="valid payloads per run")
    parser.add_argument("--bad-events", type=int, default=20_000, help="invalid payloads")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the best one counts")
    args = parser.parse_args()

    valid = transactions(args.events)
    valid_labels = labels(args.events)
    records = [decode_transaction(raw) for raw in valid]  # warm-up and encode input
    print(f"payload size: {sum(map(len, valid)) / len(valid):.0f} bytes on average")
    r = args.repeats
    measure("transaction -> record + TransactionEvent", valid, decode_transaction_event, r)
    measure("label -> LabelEvent", valid_labels, decode_label_event, r)
    measure("decode_transaction (valid)", valid, decode_transaction, r)
    measure("decode_label (valid)", valid_labels, decode_label, r)
    measure("encode_transaction (encode + validate)", records, encode_transaction, r)
    bad = bad_transactions(args.bad_events)
    measure("decode_transaction (bad -> ContractError)", bad, reject, r)


if __name__ == "__main__":
    main()
