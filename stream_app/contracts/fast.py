"""The fast path of decoding transactions and labels: one msgspec pass, then cheap checks.

msgspec decodes into a "wire" struct whose amount, currency and times are plain strings
(its pattern checks call Python's ``re`` and cost more than the rest of the decoding) and
whose ``schema`` is a required field (a missing tag would be accepted), then:

- ``currency`` is looked up in the set of codes already matched against its pattern;
- ``amount`` is matched against its pattern;
- a time must split into a head (``2018-04-01T00:00``) and a tail (``:31``, ``:31.5+02:00``)
  that are both in bounded caches of heads and tails already checked: a head by its
  pattern and a parse by :meth:`datetime.fromisoformat` (digits, month, day of month, leap
  years, hours, minutes), a tail by :data:`_TAIL` (seconds up to 59, at most 6 fractional
  digits, ``Z`` or an offset up to ``±23:59``). The caches also hold each part's share of
  the time in µs since the epoch (the head's wall-clock minute as if UTC; the tail's
  seconds and fraction less the offset), so the sum is the instant without datetime
  arithmetic. :meth:`datetime.fromisoformat` still makes the ``datetime``. Whole-second
  times share few tails; times with arbitrary microseconds mostly miss the tail cache and
  are checked and converted in full (about the cost of the strict decoding);
- the payload holds exactly :data:`TRANSACTION_QUOTES` (:data:`LABEL_QUOTES`) quote
  characters: two per key and per string value, so no key is repeated (msgspec would keep
  the last) and no string holds an escaped quote;
- each id is :meth:`str.isprintable`, so it holds no control character (C0 ones arrive
  escaped, DEL and C1 ones also raw); ids with other unprintable characters (spaces other
  than U+0020, format characters) are left to the strict decoding.

Each function returns ``None`` where any check fails; the caller then runs the strict
decoding, which decides and words the error. So these checks may refuse valid events
(that only costs time) but must never accept one the strict decoding refuses
(tests/unit/test_contracts.py compares both on generated look-alikes).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from stream_app.contracts.records import AMOUNT_PATTERN, CURRENCY_PATTERN, Label, Transaction

#: Quote characters in a transaction.v1 without repeated keys or escaped quotes: its 7 keys
#: and 7 string values.
TRANSACTION_QUOTES: Final = 2 * (7 + 7)
#: The same for label.v1: 7 keys and 6 string values (``is_fraud`` is a boolean).
LABEL_QUOTES: Final = 2 * (7 + 6)

# An id's length only: Id's control-character pattern costs a call to re per id.
_Id = Annotated[str, Meta(min_length=1, max_length=64)]


class _TransactionWire(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    gc=False,
):
    schema: Literal["transaction.v1"]
    transaction_id: _Id
    customer_id: _Id
    terminal_id: _Id
    amount: str
    currency: str
    event_time: str


class _LabelWire(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    gc=False,
):
    schema: Literal["label.v1"]
    transaction_id: _Id
    customer_id: _Id
    terminal_id: _Id
    event_time: str
    label_time: str
    is_fraud: bool


_TRANSACTION: Final = msgspec.json.Decoder(_TransactionWire)
_LABEL: Final = msgspec.json.Decoder(_LabelWire)
_FAILURES: Final = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
_QUOTE: Final = b'"'

_AMOUNT: Final = re.compile(AMOUNT_PATTERN)
_CURRENCY: Final = re.compile(CURRENCY_PATTERN)
_HEAD: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")
_TAIL: Final = re.compile(r":[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_CACHE_SIZE: Final = 1 << 16
_currencies: set[str] = set()  # at most 26**3 codes
_heads: dict[str, int] = {}
_tails: dict[str, int] = {}
_parse = datetime.fromisoformat
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def transaction(raw: bytes) -> tuple[Transaction, int] | None:
    """The record and its ``event_time`` in µs since the epoch; ``None`` if unsure."""
    try:
        wire = _TRANSACTION.decode(raw)
    except _FAILURES:
        return None
    transaction_id, customer_id, terminal_id = (
        wire.transaction_id,
        wire.customer_id,
        wire.terminal_id,
    )
    if not (
        raw.count(_QUOTE) == TRANSACTION_QUOTES
        and transaction_id.isprintable()
        and customer_id.isprintable()
        and terminal_id.isprintable()
    ):
        return None
    currency = wire.currency
    if currency not in _currencies:
        if not _CURRENCY.search(currency):
            return None
        _currencies.add(currency)
    amount = wire.amount
    timed = _time(wire.event_time)
    if timed is None or not _AMOUNT.search(amount):
        return None
    moment, at = timed
    record = Transaction(transaction_id, customer_id, terminal_id, amount, currency, moment)
    return record, at


def label(raw: bytes) -> tuple[Label, int, int] | None:
    """The record, its ``event_time`` and ``label_time`` in µs; ``None`` if unsure or
    ``label_time`` is before ``event_time``."""
    checked = _label_wire(raw)
    if checked is None:
        return None
    wire, event, known = checked
    record = Label(
        wire.transaction_id, wire.customer_id, wire.terminal_id, _parse(wire.event_time),
        _parse(wire.label_time), wire.is_fraud,
    )  # fmt: skip
    return record, event, known


def label_fields(raw: bytes) -> tuple[str, str, str, int, int, bool] | None:
    """Transaction, customer and terminal ids, ``event_time`` and ``label_time`` in µs and
    ``is_fraud`` (what the window store takes; no datetimes built); ``None`` as
    :func:`label`."""
    checked = _label_wire(raw)
    if checked is None:
        return None
    wire, event, known = checked
    return wire.transaction_id, wire.customer_id, wire.terminal_id, event, known, wire.is_fraud


def _label_wire(raw: bytes) -> tuple[_LabelWire, int, int] | None:
    """The checked label and its two times in µs; ``None`` if unsure or out of order."""
    try:
        wire = _LABEL.decode(raw)
    except _FAILURES:
        return None
    if not (
        raw.count(_QUOTE) == LABEL_QUOTES
        and wire.transaction_id.isprintable()
        and wire.customer_id.isprintable()
        and wire.terminal_id.isprintable()
    ):
        return None
    event = _instant(wire.event_time)
    known = _instant(wire.label_time)
    if event is None or known is None or known < event:
        return None
    return wire, event, known


def _time(text: str) -> tuple[datetime, int] | None:
    """``text`` as a datetime and µs since the epoch, or ``None`` if it is not a valid time."""
    at = _instant(text)
    return None if at is None else (_parse(text), at)


def _instant(text: str) -> int | None:
    """``text`` in µs since the epoch from the caches (a valid head and a valid tail make a
    valid time), learning it on a miss; ``None`` if it is not a valid time."""
    head = _heads.get(text[:16])
    tail = _tails.get(text[16:])
    if head is None or tail is None:
        learned = _learn(text)
        return None if learned is None else learned[1]
    return head + tail


def _learn(text: str) -> tuple[datetime, int] | None:
    head = text[:16]
    tail = text[16:]
    if not (_HEAD.fullmatch(head) and _TAIL.fullmatch(tail)):
        return None
    try:
        moment = _parse(text)
    except ValueError:
        return None
    at = (moment - _EPOCH) // _MICROSECOND
    head_at = (moment.replace(second=0, microsecond=0, tzinfo=UTC) - _EPOCH) // _MICROSECOND
    _remember(_heads, head, head_at)
    _remember(_tails, tail, at - head_at)
    return moment, at


def _remember(cache: dict[str, int], key: str, value: int) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[key] = value
