"""Decode and encode contract events (the hot path: every consumed event passes here).

The strict decoding is two msgspec passes over the same bytes, both with decoders built
once, and a count:

1. the record decoder checks types, lengths, patterns, ranges, unknown fields, the
   ``schema`` tag and real calendar dates with a tz offset (``Meta(tz=True)``); ids
   (``Id``) may hold no control character (U+0000-U+001F, U+007F-U+009F);
2. a small "spelling" decoder checks that ``schema`` is present and that every time field
   is spelled as the JSON Schema demands (RFC 3339, upper-case ``T``/``Z``, ``+hh:mm``
   offsets, at most 6 fractional digits). msgspec's own datetime parser is more lenient
   (``t``, a space, ``+0100``, nanoseconds) and would otherwise accept what the schema rejects;
3. no object repeats a key, at any depth (msgspec keeps the last value): the payload has
   two quote characters per key and string value of the record. More means a repeated key
   or an escaped quote, and only then is it parsed again with :func:`json.loads`, which
   sees every key.

An alert's feature names (``FeatureName``) are checked for control characters after
decoding, and only when the payload has a byte a control character needs.

Transactions and labels first take a fast path: one msgspec pass into a "wire" struct
whose amount, currency and times are plain strings, then cheaper checks of those strings
(:mod:`stream_app.contracts.fast`). The fast path accepts a subset of what the strict
decoding accepts; whatever it does not accept is decided, and its error worded, by the
strict decoding, so both give the same verdicts and messages.

Every failure raises :class:`~stream_app.errors.ContractError` with the JSON path of the
bad field and a sentence naming the bad value and what is expected instead. Encoders
validate what they produce the same way (but for repeated keys: they write each key once),
so nothing invalid is ever published.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta

from stream_app.contracts import fast
from stream_app.contracts.records import (
    TIMESTAMP_PATTERN,
    Alert,
    Label,
    ShadowScore,
    Transaction,
    TransactionScore,
    to_epoch_us,
)
from stream_app.errors import ContractError

#: Payload size limit used when the caller passes none (the default of
#: ``Settings.max_payload_bytes``).
DEFAULT_MAX_PAYLOAD_BYTES: Final = 16_384

_Spelled = Annotated[str, Meta(pattern=TIMESTAMP_PATTERN)]


class _TransactionSpelling(msgspec.Struct, frozen=True):
    schema: Literal["transaction.v1"]
    event_time: _Spelled


class _LabelSpelling(msgspec.Struct, frozen=True):
    schema: Literal["label.v1"]
    event_time: _Spelled
    label_time: _Spelled


class _AlertSpelling(msgspec.Struct, frozen=True):
    schema: Literal["alert.v1"]
    event_time: _Spelled
    processed_at: _Spelled


class _ScoreSpelling(msgspec.Struct, frozen=True):
    schema: Literal["score.v1"]
    event_time: _Spelled


class _ShadowSpelling(msgspec.Struct, frozen=True):
    schema: Literal["shadow.v1"]
    event_time: _Spelled


_TRANSACTION: Final = msgspec.json.Decoder(Transaction)
_LABEL: Final = msgspec.json.Decoder(Label)
_ALERT: Final = msgspec.json.Decoder(Alert)
_SCORE: Final = msgspec.json.Decoder(TransactionScore)
_SHADOW: Final = msgspec.json.Decoder(ShadowScore)
_EVENT: Final[msgspec.json.Decoder[Transaction | Label]] = msgspec.json.Decoder(Transaction | Label)
_TRANSACTION_SPELLING: Final = msgspec.json.Decoder(_TransactionSpelling)
_LABEL_SPELLING: Final = msgspec.json.Decoder(_LabelSpelling)
_ALERT_SPELLING: Final = msgspec.json.Decoder(_AlertSpelling)
_SCORE_SPELLING: Final = msgspec.json.Decoder(_ScoreSpelling)
_SHADOW_SPELLING: Final = msgspec.json.Decoder(_ShadowSpelling)
_ENCODER: Final = msgspec.json.Encoder()
_FAILURES: Final = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
_Record = TypeVar("_Record", Alert, TransactionScore, ShadowScore)


def decode_transaction(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Transaction:
    """Decode and validate one ``transaction.v1`` payload."""
    return decode_transaction_us(raw, max_bytes)[0]


def decode_transaction_us(
    raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[Transaction, int]:
    """:func:`decode_transaction` and the record's ``event_time_us``, computed once."""
    _check_size(raw, max_bytes)
    decoded = fast.transaction(raw)
    if decoded is not None:
        return decoded
    record = _strict_transaction(raw)
    return record, to_epoch_us(record.event_time)


def _strict_transaction(raw: bytes) -> Transaction:
    """``raw`` decoded without the fast path (its size already checked)."""
    try:
        record = _TRANSACTION.decode(raw)
        _TRANSACTION_SPELLING.decode(raw)
    except _FAILURES as exc:
        raise _contract_error(exc, raw, ("transaction.v1",)) from None
    _check_keys_once(raw, record)
    return record


def decode_label(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Label:
    """Decode and validate one ``label.v1`` payload (``label_time`` >= ``event_time``)."""
    return decode_label_us(raw, max_bytes)[0]


def decode_label_us(
    raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[Label, int, int]:
    """:func:`decode_label` and the record's ``event_time_us`` and ``label_time_us``."""
    _check_size(raw, max_bytes)
    decoded = fast.label(raw)
    if decoded is not None:
        return decoded
    record = _strict_label(raw)
    return record, to_epoch_us(record.event_time), to_epoch_us(record.label_time)


def _strict_label(raw: bytes) -> Label:
    """``raw`` decoded without the fast path (its size already checked)."""
    try:
        record = _LABEL.decode(raw)
        _LABEL_SPELLING.decode(raw)
    except _FAILURES as exc:
        raise _contract_error(exc, raw, ("label.v1",)) from None
    _check_keys_once(raw, record)
    _check_label_order(record)
    return record


def decode_label_fields(
    raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[str, str, str, int, int, bool]:
    """A ``label.v1`` payload validated as by :func:`decode_label`, as its transaction,
    customer and terminal ids, ``event_time`` and ``label_time`` in µs and ``is_fraud``."""
    _check_size(raw, max_bytes)
    fields = fast.label_fields(raw)
    if fields is not None:
        return fields
    label = _strict_label(raw)  # fast.label would fail the same checks again
    return (
        label.transaction_id, label.customer_id, label.terminal_id,
        to_epoch_us(label.event_time), to_epoch_us(label.label_time), label.is_fraud,
    )  # fmt: skip


def decode_event(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Transaction | Label:
    """Decode a ``transaction.v1`` or ``label.v1`` payload, chosen by its ``schema`` field."""
    _check_size(raw, max_bytes)
    try:
        record = _EVENT.decode(raw)
        if isinstance(record, Transaction):
            _TRANSACTION_SPELLING.decode(raw)
        else:
            _LABEL_SPELLING.decode(raw)
    except _FAILURES as exc:
        raise _contract_error(exc, raw, ("transaction.v1", "label.v1")) from None
    _check_keys_once(raw, record)
    if isinstance(record, Label):
        _check_label_order(record)
    return record


def decode_alert(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Alert:
    """Decode and validate one ``alert.v1`` payload."""
    record = _decode_output(raw, max_bytes, _ALERT, _ALERT_SPELLING, "alert.v1")
    _check_feature_names(record, raw)
    _check_keys_once(raw, record)
    return record


def decode_score(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> TransactionScore:
    """Decode and validate one ``score.v1`` payload."""
    record = _decode_output(raw, max_bytes, _SCORE, _SCORE_SPELLING, "score.v1")
    _check_keys_once(raw, record)
    return record


def decode_shadow(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ShadowScore:
    """Decode and validate one ``shadow.v1`` payload (a challenger's score)."""
    return _decode_output(raw, max_bytes, _SHADOW, _SHADOW_SPELLING, "shadow.v1")


def _decode_output(
    raw: bytes,
    max_bytes: int,
    decoder: msgspec.json.Decoder[_Record],
    spelling: msgspec.json.Decoder[Any],
    contract: str,
) -> _Record:
    """A record the worker publishes, decoded and validated: its type and spelling (the
    callers add the checks they need: an alert's feature names; a repeated key when
    decoding, as the encoders write each key once)."""
    _check_size(raw, max_bytes)
    try:
        record = decoder.decode(raw)
        spelling.decode(raw)
    except _FAILURES as exc:
        raise _contract_error(exc, raw, (contract,)) from None
    return record


def encode_transaction(record: Transaction, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """``record`` as ``transaction.v1`` JSON; ContractError if it breaks the contract."""
    raw = _ENCODER.encode(record)
    decode_transaction(raw, max_bytes)
    return raw


def encode_label(record: Label, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """``record`` as ``label.v1`` JSON; ContractError if it breaks the contract."""
    raw = _ENCODER.encode(record)
    decode_label(raw, max_bytes)
    return raw


def encode_alert(record: Alert, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """``record`` as ``alert.v1`` JSON; ContractError if it breaks the contract."""
    raw = _ENCODER.encode(record)
    _check_feature_names(_decode_output(raw, max_bytes, _ALERT, _ALERT_SPELLING, "alert.v1"), raw)
    return raw


def encode_score(record: TransactionScore, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """``record`` as ``score.v1`` JSON; ContractError if it breaks the contract."""
    raw = _ENCODER.encode(record)
    _decode_output(raw, max_bytes, _SCORE, _SCORE_SPELLING, "score.v1")
    return raw


def _check_size(raw: bytes, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise ContractError(
            "$",
            f"payload of {len(raw)} bytes is over the {max_bytes}-byte limit; send smaller "
            "events or raise FRAUDSTREAM_MAX_PAYLOAD_BYTES",
            "too_large",
        )


def _check_keys_once(raw: bytes, record: Transaction | Label | Alert | TransactionScore) -> None:
    """ContractError if an object of ``raw`` repeats a key; cheap unless ``raw`` has more
    quote characters than ``record`` needs."""
    if raw.count(b'"') != _fewest_quotes(record):
        repeated = _repeated_key(raw)
        if repeated is not None:
            raise repeated


def _check_feature_names(alert: Alert, raw: bytes) -> None:
    """ContractError for a feature name (``FeatureName``) with a control character. None
    can be in a payload without a backslash (JSON escapes C0 controls), a DEL byte or a
    0xC2 byte (the first of a C1 control in UTF-8)."""
    if 0x5C not in raw and 0x7F not in raw and 0xC2 not in raw:
        return
    for at, reason in enumerate(alert.reasons):
        found = _CONTROL.search(reason.feature)
        if found:
            raise ContractError(
                f"$.reasons[{at}].feature",
                f"got {_show(reason.feature)}; {_control(found)}; {_ID_RULE}",
                "control_character",
            )
    for name in alert.features:
        found = _CONTROL.search(name)
        if found:
            raise ContractError(
                "$.features",
                f"key {_show(name)}: {_control(found)}; {_ID_RULE}",
                "control_character",
            )


def _fewest_quotes(record: Transaction | Label | Alert | TransactionScore) -> int:
    """Quote characters in a payload of ``record`` whose keys appear once (``late`` only if
    true) and whose strings escape no quote: two per key and per string value."""
    if isinstance(record, Transaction):
        return fast.TRANSACTION_QUOTES
    if isinstance(record, Label):
        return fast.LABEL_QUOTES
    late = 2 if record.late else 0
    if isinstance(record, TransactionScore):
        return 2 * (9 + 6) + late  # 9 keys; schema, 2 ids, model_version, policy, event_time
    # 16 keys and 11 strings; a reason's 3 keys and feature; a feature's name
    return 2 * (16 + 11 + 4 * len(record.reasons) + len(record.features)) + late


def _check_label_order(label: Label) -> None:
    if label.label_time < label.event_time:
        raise ContractError(
            "$.label_time",
            f"label_time {_format_time(label.label_time)} is before event_time "
            f"{_format_time(label.event_time)}; an outcome is known only at or after the "
            "transaction it labels",
            "label_order",
        )


def _format_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- turning msgspec errors into ContractError -------------------------------------------

_ID = "a string of 1 to 64 characters"
_ID_RULE = "send ids of 1 to 64 characters without control characters"
_TIME = (
    'an RFC 3339 date-time with a UTC offset, upper-case "T" and "Z" and at most 6 '
    'fractional digits, e.g. "2018-04-01T00:00:31Z" or "2018-04-01T02:00:31.5+02:00"'
)
_NUMBER = "a finite JSON number"
_EXPECTED: Final[dict[str, str]] = {
    "transaction_id": _ID,
    "customer_id": _ID,
    "terminal_id": _ID,
    "model_version": _ID,
    "feature": _ID,
    "amount": (
        "a non-negative decimal string without sign, exponent or leading zeros, with at most "
        '12 integer digits and 4 decimals, e.g. "57.16"'
    ),
    "currency": 'an ISO 4217 code of 3 upper-case letters, e.g. "EUR"',
    "event_time": _TIME,
    "label_time": _TIME,
    "processed_at": _TIME,
    "is_fraud": "true or false",
    "is_alert": "true or false",
    "late": "true or false",
    "score": "a number from 0 to 1",
    "threshold": "a number from 0 to 1",
    "reasons_baseline": "a number from 0 to 1",
    "contribution": _NUMBER,
    "value": _NUMBER,
    "alert_id": "a lower-case version-5 UUID made by stream_app.contracts.alert_id()",
    "reasons": "a list of {feature, contribution, value} objects",
    "features": "an object mapping feature names to numbers",
}
_NAMED = re.compile(r"Object (?P<kind>missing required|contains unknown) field `(?P<name>.*)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_UNREADABLE = object()
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ID_FIELDS: Final = frozenset(name for name, expected in _EXPECTED.items() if expected is _ID)
# msgspec writes DEL and C1 controls unescaped; messages show them as \u escapes
_VISIBLE: Final = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


class _Repeated(dict[str, Any]):
    """A JSON object that repeats ``key``; ``given`` are the values given for it, in order."""

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key
        self.given = [value for name, value in pairs if name == key]


def _repeated_key(raw: bytes) -> ContractError | None:
    """ContractError naming the first repeated key of ``raw`` (outer objects first), or
    None if there is none (also when ``raw`` is not UTF-8 JSON: the decoders word that)."""
    repeats = 0

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeats
        document = dict(pairs)
        if len(document) == len(pairs):
            return document
        repeats += 1
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        return _Repeated(pairs, key)

    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    found = _first_repeated(document) if repeats else None
    if found is None:
        return None
    where, repeated = found
    shown = ", ".join(_show(value, 40) for value in repeated.given)
    return ContractError(
        f"{where}.{repeated.key}",
        f"duplicate key {_show(repeated.key)} (values {shown}); send each field once",
        "duplicate_key",
    )


def _strings(document: Any) -> int:
    """How many keys and string values ``document`` holds (without recursion)."""
    count = 0
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += len(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            count += 1
    return count


def _first_repeated(document: Any) -> tuple[str, _Repeated] | None:
    """The path and object of the first :class:`_Repeated` in ``document``, depth first in
    document order (without recursion: documents may nest deeply)."""
    stack: list[tuple[str, Any]] = [("$", document)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, _Repeated):
            return where, node
        if isinstance(node, dict):
            stack.extend((f"{where}.{key}", value) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{where}[{at}]", node[at]) for at in reversed(range(len(node))))
    return None


def _contract_error(exc: Exception, raw: bytes, contracts: tuple[str, ...]) -> ContractError:
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as unreadable:
        return _unreadable(raw, unreadable)
    if raw.count(b'"') != 2 * _strings(document):  # a key repeated, or a quote escaped
        repeated = _repeated_key(raw)  # first: msgspec saw only one of its values
        if repeated is not None:
            return repeated
    message, _, at = str(exc).partition(" - at `")
    path = at.removesuffix("`") or "$"
    if path.startswith("key` in `"):  # a dict key: "- at `key` in `$.features`"
        path = path.removeprefix("key` in `")
        return _bad_key(path, _value_at(document, path), message)
    named = _NAMED.fullmatch(message)
    if named:
        name = named["name"]
        field = f"{path}.{name}"
        if named["kind"] == "contains unknown":
            shown = _show(_value_at(document, field))
            return ContractError(
                field,
                f"unknown field {name!r} (value {shown}) is not part of "
                f"{' or '.join(contracts)}; remove it",
            )
        expected = "the contract name" if name == "schema" else _EXPECTED.get(name, "a value")
        return ContractError(field, f"required field {name!r} is missing; add it as {expected}")
    value = _value_at(document, path)
    if path == "$.schema":
        return ContractError(
            path, f"unsupported schema version {_show(value)}; supported: {', '.join(contracts)}"
        )
    if path == "$":
        return ContractError(
            path, f"got {_show(value)}; expected a JSON object of {' or '.join(contracts)}"
        )
    names = [key for key, _ in _STEP.findall(path) if key]
    detail = message[0].lower() + message[1:]
    if path.endswith("[...]"):
        expected = _EXPECTED.get(names[-1], "valid entries") if names else "valid entries"
        return ContractError(path, f"an entry is invalid ({detail}); expected {expected}")
    is_id = names and names[-1] in _ID_FIELDS and isinstance(value, str)
    control = _CONTROL.search(value) if is_id else None
    if control:
        return ContractError(
            path, f"got {_show(value)}; {_control(control)}; {_ID_RULE}", "control_character"
        )
    if names and names[-1] in _EXPECTED:
        return ContractError(path, f"got {_show(value)}; expected {_EXPECTED[names[-1]]}")
    return ContractError(path, f"got {_show(value)}: {detail}")


def _bad_key(path: str, mapping: Any, message: str) -> ContractError:
    """The error of the first key of ``mapping`` (at ``path``) of the wrong length."""
    for key in mapping if isinstance(mapping, dict) else ():
        if not 1 <= len(key) <= 64:
            return ContractError(path, f"key {_show(key)} has {len(key)} characters; {_ID_RULE}")
    detail = message[0].lower() + message[1:]
    return ContractError(path, f"a key is invalid ({detail}); {_ID_RULE}")


def _control(found: re.Match[str]) -> str:
    return (
        f"control character U+{ord(found[0]):04X} at position {found.start()} is not allowed in ids"
    )


def _unreadable(raw: bytes, exc: Exception) -> ContractError:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return ContractError(
            "$",
            f"payload is not valid UTF-8 (byte 0x{raw[bad.start]:02x} at offset {bad.start}); "
            "producers must send UTF-8 encoded JSON",
            "malformed_json",
        )
    return ContractError(
        "$",
        f"payload is not JSON ({exc}): {bytes(raw[:40])!r}; send one JSON object per event",
        "malformed_json",
    )


def _value_at(document: Any, path: str) -> Any:
    node = document
    for key, index in _STEP.findall(path):
        if key and isinstance(node, dict) and key in node:
            node = node[key]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return _UNREADABLE
    return node


def _show(value: Any, limit: int = 80) -> str:
    if value is _UNREADABLE:
        return "a value"
    shown = msgspec.json.encode(value).decode().translate(_VISIBLE)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
