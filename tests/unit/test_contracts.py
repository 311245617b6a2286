"""Event contracts: records, codec errors, and agreement between msgspec and the JSON Schemas."""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from schemas import load_schema, schema_names, schema_path
from stream_app.contracts import (
    ALERT_NAMESPACE,
    DEFAULT_MAX_PAYLOAD_BYTES,
    Alert,
    Label,
    Reason,
    ShadowScore,
    Transaction,
    TransactionScore,
    alert_id,
    codec,
    decode_alert,
    decode_event,
    decode_label,
    decode_label_fields,
    decode_label_us,
    decode_score,
    decode_shadow,
    decode_transaction,
    decode_transaction_us,
    encode_alert,
    encode_label,
    encode_score,
    encode_transaction,
    fast,
    from_epoch_us,
    records,
    to_epoch_us,
)
from stream_app.errors import ContractError
from stream_app.settings import Settings

AGREEMENT_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

CONTRACTS = ("transaction.v1", "label.v1", "alert.v1", "score.v1", "shadow.v1")

TRANSACTION: dict[str, Any] = {
    "schema": "transaction.v1",
    "transaction_id": "1234567",
    "customer_id": "4961",
    "terminal_id": "3412",
    "amount": "57.16",
    "currency": "EUR",
    "event_time": "2018-04-01T00:00:31Z",
}
LABEL: dict[str, Any] = {
    "schema": "label.v1",
    "transaction_id": "1234567",
    "customer_id": "4961",
    "terminal_id": "3412",
    "event_time": "2018-04-01T00:00:31Z",
    "label_time": "2018-04-08T00:00:31Z",
    "is_fraud": True,
}
ALERT: dict[str, Any] = {
    "schema": "alert.v1",
    "alert_id": alert_id("1234567", "2026.11.1"),
    "transaction_id": "1234567",
    "customer_id": "4961",
    "terminal_id": "3412",
    "amount": "57.16",
    "currency": "EUR",
    "score": 0.93,
    "threshold": 0.5,
    "model_version": "2026.11.1",
    "policy": "bundle",
    "reasons": [{"feature": "customer_amount_mean_7d", "contribution": 0.25, "value": 412.0}],
    "reasons_baseline": 0.02,
    "features": {"customer_amount_mean_7d": 412.0, "terminal_risk_28d": 0.25},
    "event_time": "2018-04-01T00:00:31Z",
    "processed_at": "2018-04-01T00:00:31.012345Z",
}
SCORE: dict[str, Any] = {
    "schema": "score.v1",
    "transaction_id": "1234567",
    "customer_id": "4961",
    "score": 0.25,
    "threshold": 0.5,
    "is_alert": False,
    "model_version": "2026.11.1",
    "policy": "bundle",
    "event_time": "2018-04-01T00:00:31Z",
}
SHADOW: dict[str, Any] = {
    "schema": "shadow.v1",
    "transaction_id": "1234567",
    "customer_id": "4961",
    "model_version": "2026.12.1",
    "score": 0.75,
    "threshold": 0.6,
    "would_alert": True,
    "serving_model_version": "2026.11.1",
    "serving_score": 0.25,
    "serving_alert": False,
    "policy": "top-100",
    "event_time": "2018-04-01T00:00:31Z",
}
BASE = {
    "transaction.v1": TRANSACTION,
    "label.v1": LABEL,
    "alert.v1": ALERT,
    "score.v1": SCORE,
    "shadow.v1": SHADOW,
}
DECODERS: dict[str, Callable[[bytes], object]] = {
    "transaction.v1": decode_transaction,
    "label.v1": decode_label,
    "alert.v1": decode_alert,
    "score.v1": decode_score,
    "shadow.v1": decode_shadow,
}
RECORDS: dict[str, type[msgspec.Struct]] = {
    "transaction.v1": Transaction,
    "label.v1": Label,
    "alert.v1": Alert,
    "score.v1": TransactionScore,
    "shadow.v1": ShadowScore,
}
MISSING = object()
_R = TypeVar("_R")
HOUR = timedelta(hours=1)


def payload(contract: str, **changes: Any) -> bytes:
    """The valid example of ``contract`` with ``changes`` (``MISSING`` drops a field)."""
    document = dict(BASE[contract])
    for key, value in changes.items():
        if value is MISSING:
            document.pop(key)
        else:
            document[key] = value
    return json.dumps(document).encode()


# --- schema files -----------------------------------------------------------------------


def _properties(schema: dict[str, Any], where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in schema.get("properties", {}).items():
        yield f"{where}.{name}", spec
        yield from _properties(spec, f"{where}.{name}")
        if "items" in spec:
            yield from _properties(spec["items"], f"{where}.{name}[]")


@pytest.mark.parametrize("contract", CONTRACTS)
def test_schema_file_is_valid_draft_2020_12(contract: str) -> None:
    schema = load_schema(contract)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == contract
    assert schema["additionalProperties"] is False
    optional = {name for name, spec in schema["properties"].items() if "default" in spec}
    assert set(schema["required"]) == set(schema["properties"]) - optional


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_schema_property_has_a_description(contract: str) -> None:
    undocumented = [
        path
        for path, spec in _properties(load_schema(contract))
        if not spec.get("description", "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("contract", CONTRACTS)
def test_schema_properties_are_the_record_fields(contract: str) -> None:
    record = RECORDS[contract]
    config = record.__struct_config__
    assert (config.tag_field, config.tag) == ("schema", contract)
    assert config.forbid_unknown_fields
    fields = {f.encode_name for f in msgspec.structs.fields(record)}
    assert {"schema"} | fields == set(load_schema(contract)["properties"])


@pytest.mark.parametrize("contract", CONTRACTS)
def test_schema_defaults_are_the_record_defaults(contract: str) -> None:
    defaults = {
        f.encode_name: f.default
        for f in msgspec.structs.fields(RECORDS[contract])
        if f.default is not msgspec.NODEFAULT
    }
    properties = load_schema(contract)["properties"]
    assert defaults == {name: s["default"] for name, s in properties.items() if "default" in s}
    assert defaults == (
        {"late": False} if contract in ("alert.v1", "score.v1", "shadow.v1") else {}
    )


ID_FIELDS = {
    "transaction.v1": ["transaction_id", "customer_id", "terminal_id"],
    "label.v1": ["transaction_id", "customer_id", "terminal_id"],
    "alert.v1": ["transaction_id", "customer_id", "terminal_id", "model_version", "policy"],
    "score.v1": ["transaction_id", "customer_id", "model_version", "policy"],
    "shadow.v1": [
        "transaction_id", "customer_id", "model_version", "serving_model_version", "policy"
    ],
}


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_schema_id_has_the_records_id_pattern(contract: str) -> None:
    schema = load_schema(contract)
    ids = [path for path, spec in _properties(schema) if spec.get("maxLength") == 64]
    expected = [f"$.{name}" for name in ID_FIELDS[contract]]
    assert ids == expected + (["$.reasons[].feature"] if contract == "alert.v1" else [])
    for path, spec in _properties(schema):
        if path in ids:
            assert (spec["minLength"], spec["pattern"]) == (1, records.ID_PATTERN), path
    if contract == "alert.v1":
        names = schema["properties"]["features"]["propertyNames"]
        assert names == {"minLength": 1, "maxLength": 64, "pattern": records.ID_PATTERN}
    assert get_args(records.Id)[1].pattern == records.ID_PATTERN


def test_schema_path_and_names() -> None:
    assert set(CONTRACTS) <= set(schema_names())
    assert schema_path("label.v1.json").name == "label.v1.json"
    assert load_schema("transaction.v1")["properties"]["schema"]["const"] == "transaction.v1"
    with pytest.raises(ContractError, match=r"no schema named 'transaction\.v9'"):
        schema_path("transaction.v9")


@pytest.mark.parametrize(
    ("contract", "field", "pattern"),
    [
        ("transaction.v1", "amount", records.AMOUNT_PATTERN),
        ("transaction.v1", "currency", records.CURRENCY_PATTERN),
        ("transaction.v1", "event_time", records.TIMESTAMP_PATTERN),
        ("label.v1", "event_time", records.TIMESTAMP_PATTERN),
        ("label.v1", "label_time", records.TIMESTAMP_PATTERN),
        ("alert.v1", "alert_id", records.ALERT_ID_PATTERN),
        ("alert.v1", "amount", records.AMOUNT_PATTERN),
        ("alert.v1", "currency", records.CURRENCY_PATTERN),
        ("alert.v1", "event_time", records.TIMESTAMP_PATTERN),
        ("alert.v1", "processed_at", records.TIMESTAMP_PATTERN),
        ("score.v1", "event_time", records.TIMESTAMP_PATTERN),
        ("shadow.v1", "event_time", records.TIMESTAMP_PATTERN),
    ],
)
def test_record_patterns_are_the_schema_patterns(contract: str, field: str, pattern: str) -> None:
    assert load_schema(contract)["properties"][field]["pattern"] == pattern


# --- round trips and conversions ---------------------------------------------------------


def test_transaction_round_trip() -> None:
    record = decode_transaction(payload("transaction.v1"))
    assert record == Transaction(
        transaction_id="1234567",
        customer_id="4961",
        terminal_id="3412",
        amount="57.16",
        currency="EUR",
        event_time=datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC),
    )
    raw = encode_transaction(record)
    assert json.loads(raw) == TRANSACTION
    assert decode_transaction(raw) == record


def test_label_round_trip() -> None:
    record = decode_label(payload("label.v1"))
    assert record.is_fraud is True
    assert record.label_time_us - record.event_time_us == 7 * 86_400 * 1_000_000
    raw = encode_label(record)
    assert json.loads(raw) == LABEL
    assert decode_label(raw) == record


def test_alert_round_trip_and_for_transaction() -> None:
    record = decode_alert(payload("alert.v1"))
    raw = encode_alert(record)
    assert json.loads(raw) == ALERT
    assert decode_alert(raw) == record
    built = Alert.for_transaction(
        decode_transaction(payload("transaction.v1")),
        score=0.93,
        threshold=0.5,
        model_version="2026.11.1",
        policy="bundle",
        reasons=(Reason("customer_amount_mean_7d", 0.25, 412.0),),
        reasons_baseline=0.02,
        features={"customer_amount_mean_7d": 412.0, "terminal_risk_28d": 0.25},
        processed_at=datetime(2018, 4, 1, 0, 0, 31, 12345, tzinfo=UTC),
    )
    assert built == record


def test_score_round_trip() -> None:
    record = decode_score(payload("score.v1"))
    assert record == TransactionScore(
        transaction_id="1234567",
        customer_id="4961",
        score=0.25,
        threshold=0.5,
        is_alert=False,
        model_version="2026.11.1",
        policy="bundle",
        event_time=datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC),
    )
    raw = encode_score(record)
    assert json.loads(raw) == SCORE
    assert decode_score(raw) == record
    assert raw == msgspec.json.encode(record)  # what the worker publishes, unvalidated


def test_shadow_round_trip() -> None:
    record = decode_shadow(payload("shadow.v1"))
    assert record == ShadowScore(
        transaction_id="1234567",
        customer_id="4961",
        model_version="2026.12.1",
        score=0.75,
        threshold=0.6,
        would_alert=True,
        serving_model_version="2026.11.1",
        serving_score=0.25,
        serving_alert=False,
        policy="top-100",
        event_time=datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC),
    )
    raw = msgspec.json.encode(record)  # what the worker publishes
    assert json.loads(raw) == SHADOW
    assert decode_shadow(raw) == record


def test_decode_event_picks_the_record_type_from_schema() -> None:
    assert isinstance(decode_event(payload("transaction.v1")), Transaction)
    assert isinstance(decode_event(payload("label.v1")), Label)
    with pytest.raises(ContractError) as caught:
        decode_event(payload("transaction.v1", schema="alert.v1"))
    assert caught.value.field == "$.schema"
    assert "transaction.v1, label.v1" in caught.value.problem
    with pytest.raises(ContractError, match="label_time"):
        decode_event(payload("label.v1", label_time="2018-03-31T00:00:00Z"))


def test_event_time_us_is_exact_utc_microseconds_for_any_offset() -> None:
    record = decode_transaction(
        payload("transaction.v1", event_time="2018-04-01T02:00:31.000007+02:00")
    )
    expected = int(datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC).timestamp()) * 1_000_000 + 7
    assert record.event_time_us == expected
    assert from_epoch_us(expected) == record.event_time
    assert to_epoch_us(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    far = datetime(9999, 12, 31, 18, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    assert from_epoch_us(to_epoch_us(far)) == far


@pytest.mark.parametrize(
    "event_time",
    [
        "2018-04-01T00:00:31Z",
        "2018-04-01T02:00:31.5+02:00",
        "1969-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T18:59:59.000001-05:00",
    ],
)
def test_decode_us_gives_the_records_times_in_microseconds(event_time: str) -> None:
    for _ in range(2):  # the second time from the fast path's caches
        tx, tx_us = decode_transaction_us(payload("transaction.v1", event_time=event_time))
        assert tx == decode_transaction(payload("transaction.v1", event_time=event_time))
        assert tx_us == tx.event_time_us
        raw = payload("label.v1", event_time=event_time, label_time=event_time)
        label, event_us, label_us = decode_label_us(raw)
        assert (event_us, label_us) == (label.event_time_us, label.label_time_us) == (tx_us,) * 2
        assert decode_label_fields(raw) == (
            label.transaction_id, label.customer_id, label.terminal_id, tx_us, tx_us,
            label.is_fraud,
        )  # fmt: skip


@AGREEMENT_SETTINGS
@given(
    text=st.one_of(
        st.from_regex(records.TIMESTAMP_PATTERN, fullmatch=True), st.deferred(lambda: _timestamps())
    )
)
def test_fast_time_check_accepts_what_the_strict_decoding_accepts(text: str) -> None:
    try:
        strict: datetime | None = msgspec.json.decode(
            msgspec.json.encode(text), type=records.Timestamp
        )
    except msgspec.ValidationError:
        strict = None
    spelled = re.search(records.TIMESTAMP_PATTERN, text) is not None
    for _ in range(2):  # learning, then from the caches
        timed = fast._time(text)
        assert (timed is not None) == (spelled and strict is not None)
        assert fast._instant(text) == (None if timed is None else timed[1])
        if timed is not None and strict is not None:
            moment, at = timed
            assert (moment, moment.utcoffset()) == (strict, strict.utcoffset())
            assert at == to_epoch_us(strict)


def test_amount_is_kept_exact_with_float_and_decimal_views() -> None:
    record = decode_transaction(payload("transaction.v1", amount="123456789012.9999"))
    assert record.amount == "123456789012.9999"
    assert record.amount_decimal == Decimal("123456789012.9999")
    assert record.amount_float == 123456789012.9999
    assert encode_transaction(record).count(b'"amount":"123456789012.9999"') == 1


def test_alert_id_is_deterministic_uuid5_and_depends_on_model_version() -> None:
    first = alert_id("1234567", "2026.11.1")
    assert first == alert_id("1234567", "2026.11.1")
    assert first != alert_id("1234567", "2026.11.2")
    assert first != alert_id("1234568", "2026.11.1")
    assert alert_id("ab", "c") != alert_id("a", "bc")
    parsed = uuid.UUID(first)
    assert parsed.version == 5
    assert parsed == uuid.uuid5(ALERT_NAMESPACE, '["1234567","2026.11.1"]')
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:fraudstream:alert.v1") == ALERT_NAMESPACE


def test_default_payload_limit_is_the_settings_default() -> None:
    assert Settings().max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "mentions"),
    [
        ({"amount": MISSING}, "$.amount", "'amount' is missing"),
        ({"transaction_id": 1234567}, "$.transaction_id", "got 1234567"),
        ({"amount": 57.16}, "$.amount", "got 57.16"),
        ({"amount": "-57.16"}, "$.amount", 'got "-57.16"'),
        ({"amount": "57,16"}, "$.amount", 'got "57,16"'),
        ({"amount": "57.16789"}, "$.amount", 'got "57.16789"'),
        ({"amount": "057.16"}, "$.amount", 'got "057.16"'),
        ({"amount": "5.7e1"}, "$.amount", 'got "5.7e1"'),
        ({"amount": "57.16\n"}, "$.amount", 'got "57.16\\n"'),
        ({"currency": "eur"}, "$.currency", 'got "eur"'),
        ({"customer_id": ""}, "$.customer_id", 'got ""'),
        ({"terminal_id": "x" * 65}, "$.terminal_id", "1 to 64 characters"),
        ({"event_time": "2018-04-01T00:00:31"}, "$.event_time", 'got "2018-04-01T00:00:31"'),
        ({"event_time": "2018-04-01 00:00:31Z"}, "$.event_time", "2018-04-01 00:00:31Z"),
        ({"event_time": "2018-04-01t00:00:31z"}, "$.event_time", "RFC 3339"),
        ({"event_time": "2018-04-01T00:00:31+0200"}, "$.event_time", "+0200"),
        ({"event_time": "2018-02-30T00:00:31Z"}, "$.event_time", "2018-02-30"),
        ({"event_time": "2018-04-01T00:00:31.1234567Z"}, "$.event_time", "6 fractional"),
        ({"event_time": 1522540831}, "$.event_time", "got 1522540831"),
        ({"schema": "transaction.v2"}, "$.schema", "supported: transaction.v1"),
        ({"schema": MISSING}, "$.schema", "'schema' is missing"),
        ({"channel": "web"}, "$.channel", "unknown field 'channel'"),
    ],
)
def test_bad_transaction_names_the_field_and_value(
    changes: dict[str, Any], field: str, mentions: str
) -> None:
    with pytest.raises(ContractError) as caught:
        decode_transaction(payload("transaction.v1", **changes))
    assert caught.value.field == field
    assert mentions in caught.value.problem
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("raw", "mentions"),
    [
        (b"hello", "not JSON"),
        (b"", "not JSON"),
        (payload("transaction.v1")[:-1], "not JSON"),
        (b"[1, 2]", "got [1,2]; expected a JSON object of transaction.v1"),
        (b'{"amount": "\xff"}', "not valid UTF-8 (byte 0xff at offset 12)"),
        (b'{"\xfe": 1}', "not valid UTF-8 (byte 0xfe at offset 2)"),
    ],
)
def test_unreadable_payload_is_a_contract_error_on_the_whole_payload(
    raw: bytes, mentions: str
) -> None:
    with pytest.raises(ContractError) as caught:
        decode_transaction(raw)
    assert caught.value.field == "$"
    assert mentions in caught.value.problem


def test_oversized_payload_is_rejected_before_parsing() -> None:
    raw = payload("transaction.v1", transaction_id="x" * 40)
    assert decode_transaction(raw, max_bytes=len(raw)).transaction_id == "x" * 40
    with pytest.raises(ContractError) as caught:
        decode_transaction(raw, max_bytes=len(raw) - 1)
    assert caught.value.field == "$"
    assert f"{len(raw)} bytes is over the {len(raw) - 1}-byte limit" in caught.value.problem
    with pytest.raises(ContractError, match="FRAUDSTREAM_MAX_PAYLOAD_BYTES"):
        decode_label(b" " * (DEFAULT_MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize("decode", [decode_label, decode_label_fields])
def test_label_time_before_event_time_is_rejected(decode: Callable[[bytes], object]) -> None:
    same = decode_label(payload("label.v1", label_time=LABEL["event_time"]))
    assert same.label_time == same.event_time
    assert decode_label_fields(payload("label.v1", label_time=LABEL["event_time"]))[3:5] == (
        same.event_time_us,
        same.event_time_us,
    )
    with pytest.raises(ContractError) as caught:
        decode(payload("label.v1", label_time="2018-04-01T01:00:30+01:00"))
    assert caught.value.field == "$.label_time"
    assert (
        "2018-04-01T01:00:30+01:00 is before event_time 2018-04-01T00:00:31Z"
        in caught.value.problem
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"is_fraud": 1}, "$.is_fraud"),
        ({"label_time": MISSING}, "$.label_time"),
        ({"schema": "label.v0"}, "$.schema"),
    ],
)
def test_bad_label_names_the_field(changes: dict[str, Any], field: str) -> None:
    for decode in (decode_label, decode_label_fields):
        with pytest.raises(ContractError) as caught:
            decode(payload("label.v1", **changes))
        assert caught.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"score": 1.5}, "$.score"),
        ({"threshold": -0.1}, "$.threshold"),
        ({"alert_id": str(uuid.uuid4())}, "$.alert_id"),
        (
            {"reasons": [{"feature": "x", "contribution": "high", "value": 1}]},
            "$.reasons[0].contribution",
        ),
        ({"reasons": [{"feature": "x", "contribution": 1}]}, "$.reasons[0].value"),
        ({"features": {"x": "1"}}, "$.features[...]"),
        ({"processed_at": "2018-04-01T00:00:31"}, "$.processed_at"),
    ],
)
def test_bad_alert_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode_alert(payload("alert.v1", **changes))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"score": 1.5}, "$.score"),
        ({"score": "0.25"}, "$.score"),
        ({"threshold": -0.1}, "$.threshold"),
        ({"is_alert": 0}, "$.is_alert"),
        ({"is_alert": MISSING}, "$.is_alert"),
        ({"model_version": ""}, "$.model_version"),
        ({"event_time": "2018-04-01T00:00:31"}, "$.event_time"),
        ({"schema": "alert.v1"}, "$.schema"),
        ({"amount": "57.16"}, "$.amount"),
    ],
)
def test_bad_score_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError) as caught:
        decode_score(payload("score.v1", **changes))
    assert caught.value.field == field


def test_oversized_score_is_rejected() -> None:
    raw = payload("score.v1")
    assert decode_score(raw, max_bytes=len(raw)).transaction_id == "1234567"
    with pytest.raises(ContractError, match="byte limit"):
        decode_score(raw, max_bytes=len(raw) - 1)
    compact = encode_score(decode_score(raw))
    with pytest.raises(ContractError, match="byte limit"):
        encode_score(decode_score(raw), max_bytes=len(compact) - 1)


def test_encoders_refuse_records_that_break_the_contract() -> None:
    transaction = decode_transaction(payload("transaction.v1"))
    naive = msgspec.structs.replace(transaction, event_time=datetime(2018, 4, 1))
    with pytest.raises(ContractError, match=r"^\$\.event_time: "):
        encode_transaction(naive)
    with pytest.raises(ContractError, match=r"^\$\.amount: "):
        encode_transaction(msgspec.structs.replace(transaction, amount="1e3"))
    alert = decode_alert(payload("alert.v1"))
    with pytest.raises(ContractError, match=r"^\$\.score: "):
        encode_alert(msgspec.structs.replace(alert, score=math.nan))
    label = decode_label(payload("label.v1"))
    with pytest.raises(ContractError, match=r"^\$\.label_time: "):
        encode_label(msgspec.structs.replace(label, label_time=label.event_time - timedelta(1)))
    score = decode_score(payload("score.v1"))
    with pytest.raises(ContractError, match=r"^\$\.score: "):
        encode_score(msgspec.structs.replace(score, score=math.inf))
    with pytest.raises(ContractError, match=r"^\$\.event_time: "):
        encode_score(msgspec.structs.replace(score, event_time=datetime(2018, 4, 1)))


# --- agreement: the msgspec codec accepts exactly what the JSON Schemas accept -------------

VALIDATORS = {
    contract: Draft202012Validator(
        load_schema(contract), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for contract in CONTRACTS
}


def _reject_non_finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _reject_constant(text: str) -> float:
    raise ValueError(text)


def _reject_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        raise ValueError(f"repeated key in {pairs}")
    return document


def schema_accepts(contract: str, raw: bytes) -> bool:
    """JSON Schema verdict on I-JSON ``raw`` plus the rules the schema can only describe
    (I-JSON: finite numbers, no repeated keys)."""
    try:
        document = json.loads(
            raw.decode("utf-8"),
            parse_float=_reject_non_finite,
            parse_constant=_reject_constant,
            object_pairs_hook=_reject_repeated_keys,
        )
    except ValueError:
        return False
    if not VALIDATORS[contract].is_valid(document):
        return False
    if contract == "label.v1":
        event = datetime.fromisoformat(document["event_time"])
        return datetime.fromisoformat(document["label_time"]) >= event
    return True


def codec_accepts(contract: str, raw: bytes) -> bool:
    try:
        DECODERS[contract](raw)
    except ContractError:
        return False
    return True


def test_date_time_format_is_really_checked() -> None:
    assert "date-time" in Draft202012Validator.FORMAT_CHECKER.checkers  # needs rfc3339-validator
    assert not schema_accepts(
        "transaction.v1", payload("transaction.v1", event_time="2018-02-30T00:00:00Z")
    )


AGREEMENT_TABLE: list[tuple[str, dict[str, Any]]] = [
    ("transaction.v1", {}),
    ("transaction.v1", {"amount": "0"}),
    ("transaction.v1", {"amount": "0.0001"}),
    ("transaction.v1", {"amount": "999999999999.9999"}),
    ("transaction.v1", {"amount": "1000000000000"}),
    ("transaction.v1", {"amount": "00"}),
    ("transaction.v1", {"amount": ".5"}),
    ("transaction.v1", {"amount": "5."}),
    ("transaction.v1", {"amount": " 5"}),
    ("transaction.v1", {"amount": "+5"}),
    ("transaction.v1", {"amount": "\u0665"}),
    ("transaction.v1", {"currency": "EURO"}),
    ("transaction.v1", {"currency": "EU"}),
    ("transaction.v1", {"currency": "EUR\n"}),
    ("transaction.v1", {"currency": "ÉUR"}),
    ("transaction.v1", {"customer_id": "😀" * 64}),
    ("transaction.v1", {"customer_id": "😀" * 65}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00:31.5-00:00"}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00:31+23:59"}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00:31+24:00"}),
    ("transaction.v1", {"event_time": "2018-04-01T24:00:00Z"}),
    ("transaction.v1", {"event_time": "2018-12-31T23:59:60Z"}),
    ("transaction.v1", {"event_time": "2020-02-29T00:00:00Z"}),
    ("transaction.v1", {"event_time": "2019-02-29T00:00:00Z"}),
    ("transaction.v1", {"event_time": "0000-01-01T00:00:00Z"}),
    ("transaction.v1", {"event_time": "0001-01-01T00:00:00+01:00"}),
    ("transaction.v1", {"event_time": "9999-12-31T23:59:59.999999Z"}),
    ("transaction.v1", {"event_time": "9999-12-31T23:59:59.9999999Z"}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00:31Z\n"}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00Z"}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00:31.Z"}),
    ("transaction.v1", {"event_time": "20180401T000031Z"}),
    ("transaction.v1", {"event_time": "2018-04-01T00:00:31+02"}),
    ("transaction.v1", {"event_time": None}),
    ("transaction.v1", {"schema": "transaction.V1"}),
    ("transaction.v1", {"transaction_id": None}),
    ("label.v1", {}),
    ("label.v1", {"is_fraud": False}),
    ("label.v1", {"is_fraud": "true"}),
    ("label.v1", {"is_fraud": 0}),
    ("label.v1", {"label_time": "2018-04-01T00:00:31Z"}),
    ("label.v1", {"label_time": "2018-04-01T00:00:30.999999Z"}),
    ("label.v1", {"label_time": "2018-04-01T01:00:31+01:00"}),
    ("label.v1", {"label_time": "2018-04-01T01:00:30+01:00"}),
    ("alert.v1", {}),
    ("alert.v1", {"score": 0}),
    ("alert.v1", {"score": 1}),
    ("alert.v1", {"score": 1.0000001}),
    ("alert.v1", {"score": True}),
    ("alert.v1", {"threshold": "0.5"}),
    ("alert.v1", {"reasons": []}),
    ("alert.v1", {"reasons_baseline": 0}),
    ("alert.v1", {"reasons_baseline": 1.5}),
    ("alert.v1", {"reasons_baseline": -0.1}),
    ("alert.v1", {"reasons_baseline": "0.1"}),
    ("alert.v1", {"reasons": [{"feature": "", "contribution": 1, "value": 2}]}),
    ("alert.v1", {"reasons": [{"feature": "a", "contribution": 1, "value": 2, "x": 3}]}),
    ("alert.v1", {"reasons": {"feature": "a", "contribution": 1, "value": 2}}),
    ("alert.v1", {"features": {}}),
    ("alert.v1", {"features": {"": 1.0}}),
    ("alert.v1", {"features": {"a" * 65: 1.0}}),
    ("alert.v1", {"features": {"a": None}}),
    ("alert.v1", {"features": []}),
    ("alert.v1", {"alert_id": ALERT["alert_id"].upper()}),
    ("alert.v1", {"alert_id": ALERT["alert_id"].replace("-", "")}),
    ("alert.v1", {"model_version": ""}),
    ("score.v1", {}),
    ("score.v1", {"score": 0, "threshold": 1, "is_alert": True}),
    ("score.v1", {"score": 1.0000001}),
    ("score.v1", {"score": -0.0}),
    ("score.v1", {"threshold": True}),
    ("score.v1", {"is_alert": "false"}),
    ("score.v1", {"is_alert": None}),
    ("score.v1", {"customer_id": "😀" * 65}),
    ("score.v1", {"event_time": "2018-04-01T00:00:31.1234567Z"}),
    ("score.v1", {"reasons": []}),
]


@pytest.mark.parametrize(("contract", "changes"), AGREEMENT_TABLE)
def test_codec_and_schema_agree_on_table(contract: str, changes: dict[str, Any]) -> None:
    raw = payload(contract, **changes)
    assert codec_accepts(contract, raw) == schema_accepts(contract, raw)


@pytest.mark.parametrize(
    "raw",
    [b'{"schema": "alert.v1", "score": 1e400}', b'{"score": NaN}', b"\xff", b"{}", b"null"],
)
@pytest.mark.parametrize("contract", CONTRACTS)
def test_codec_and_schema_agree_on_odd_json(contract: str, raw: bytes) -> None:
    assert codec_accepts(contract, raw) is False
    assert schema_accepts(contract, raw) is False


def _timestamps() -> st.SearchStrategy[str]:
    """RFC 3339 look-alikes: mostly valid, often off in exactly the ways parsers differ."""
    parts = st.tuples(
        st.sampled_from(["0000", "0001", "1970", "2018", "2020", "9999", "12345", "999"]),
        st.sampled_from(["00", "01", "02", "12", "13", "1"]),
        st.sampled_from(["00", "01", "28", "29", "30", "31", "32"]),
        st.sampled_from(["T", "T", "T", "t", " ", "_"]),
        st.sampled_from(["00", "09", "23", "24"]),
        st.sampled_from(["00", "59", "60"]),
        st.sampled_from(["00", "31", "59", "60", "61"]),
        st.sampled_from(["", "", ".", ".5", ".123456", ".9999999", ".123456789"]),
        st.sampled_from(
            [
                "Z",
                "Z",
                "z",
                "+00:00",
                "-00:00",
                "+05:30",
                "+23:59",
                "+24:00",
                "+0530",
                "+05",
                "-12:60",
                "",
            ]
        ),
        st.sampled_from(["", "", "", "\n", " "]),
    )
    look_alikes = parts.map(
        lambda p: f"{p[0]}-{p[1]}-{p[2]}{p[3]}{p[4]}:{p[5]}:{p[6]}{p[7]}{p[8]}{p[9]}"
    )
    offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-HOUR * 8)])
    valid = st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
    ).map(datetime.isoformat)
    return st.one_of(valid, look_alikes)


_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-2, 2),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
)
# controls (C0, DEL, C1) and their printable or unprintable neighbours (NBSP, ZWSP, LS)
_ODD_CHARACTERS = st.sampled_from('\x00\t\n\x1f \x7f\x80\x85\x9f\xa0\u200b\u2028é😀"\\')
_IDS = st.one_of(
    st.text(min_size=0, max_size=66),
    st.text(st.one_of(_ODD_CHARACTERS, st.sampled_from("ab1")), min_size=1, max_size=4),
    st.integers(0, 10**6),
)
_AMOUNTS = st.one_of(
    st.from_regex(r"[-+]?[0-9]{0,14}(\.[0-9]{0,6})?(e[0-9])?[\n ]?", fullmatch=True),
    st.decimals(min_value=0, max_value=10**13, places=4, allow_nan=False).map(str),
    st.floats(0, 1000),
)
_CURRENCIES = st.one_of(st.from_regex(r"[A-Za-zÉ]{2,4}\n?", fullmatch=True), st.integers())
_NUMBERS = st.one_of(st.floats(-0.5, 1.5), st.integers(-1, 2), st.booleans(), st.none())


def _escaped(value: Any) -> str:
    """``value`` as JSON with every character of every string as a \\u escape."""
    if isinstance(value, str):
        units = value.encode("utf-16-be", "surrogatepass")
        return (
            '"'
            + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
            + '"'
        )
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_escaped(k)}: {_escaped(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_escaped, value)) + "]"
    return json.dumps(value)


def encode_pairs(pairs: list[tuple[str, Any]], style: str = "ascii") -> bytes:
    """``pairs`` as one JSON object (keys may repeat), its strings written as by
    ``json.dumps`` ("ascii"), as raw UTF-8 ("utf8") or escaped (see :func:`_escaped`)."""
    if style == "escaped":
        dump: Callable[[Any], str] = _escaped
    else:
        dump = functools.partial(json.dumps, ensure_ascii=style == "ascii")
    return ("{" + ", ".join(f"{dump(k)}: {dump(v)}" for k, v in pairs) + "}").encode()


def _mutated(contract: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Payloads whose fields are drawn from ``fields`` (or kept), dropped, extra or repeated,
    their strings written in any style of :func:`encode_pairs`."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        document = dict(BASE[contract])
        for name, values in fields.items():
            choice = draw(st.sampled_from(["keep", "keep", "keep", "draw", "draw", "drop", "odd"]))
            if choice == "draw":
                document[name] = draw(values)
            elif choice == "drop" and draw(st.integers(0, 9)) == 0:
                document.pop(name, None)
            elif choice == "odd" and draw(st.integers(0, 4)) == 0:
                document[name] = draw(_ODD_VALUES)
        if draw(st.integers(0, 19)) == 0:
            document[draw(st.text(min_size=1, max_size=8))] = draw(_ODD_VALUES)
        pairs = list(document.items())
        if pairs and draw(st.integers(0, 7)) == 0:
            name, value = draw(st.sampled_from(pairs))
            again = draw(st.one_of(st.just(value), fields.get(name, _ODD_VALUES), _ODD_VALUES))
            pairs.insert(draw(st.integers(0, len(pairs))), (name, again))
        return encode_pairs(pairs, draw(st.sampled_from(["ascii", "ascii", "utf8", "escaped"])))

    return build()


_TRANSACTIONS = _mutated(
    "transaction.v1",
    {
        "schema": st.sampled_from(["transaction.v1", "transaction.v2", "label.v1"]),
        "transaction_id": _IDS,
        "customer_id": _IDS,
        "terminal_id": _IDS,
        "amount": _AMOUNTS,
        "currency": _CURRENCIES,
        "event_time": _timestamps(),
    },
)
_LABELS = _mutated(
    "label.v1",
    {
        "schema": st.sampled_from(["label.v1", "label.v2", "transaction.v1"]),
        "transaction_id": _IDS,
        "customer_id": _IDS,
        "terminal_id": _IDS,
        "event_time": _timestamps(),
        "label_time": _timestamps(),
        "is_fraud": st.one_of(st.booleans(), st.integers(0, 1)),
    },
)


@AGREEMENT_SETTINGS
@given(raw=_TRANSACTIONS)
def test_codec_and_schema_agree_on_generated_transactions(raw: bytes) -> None:
    assert codec_accepts("transaction.v1", raw) == schema_accepts("transaction.v1", raw)


@AGREEMENT_SETTINGS
@given(raw=_LABELS)
def test_codec_and_schema_agree_on_generated_labels(raw: bytes) -> None:
    assert codec_accepts("label.v1", raw) == schema_accepts("label.v1", raw)


def _strict(decode: Callable[[bytes], _R], raw: bytes) -> _R | None:
    try:
        return decode(raw)
    except ContractError:
        return None


@AGREEMENT_SETTINGS
@given(raw=_TRANSACTIONS)
def test_fast_path_accepts_only_what_the_strict_decoding_accepts_transactions(raw: bytes) -> None:
    record = _strict(codec._strict_transaction, raw)
    decoded = fast.transaction(raw)
    assert decoded is None or decoded == (record, getattr(record, "event_time_us", None))


@AGREEMENT_SETTINGS
@given(raw=_LABELS)
def test_fast_path_accepts_only_what_the_strict_decoding_accepts_labels(raw: bytes) -> None:
    record = _strict(codec._strict_label, raw)
    decoded = fast.label(raw)
    fields = fast.label_fields(raw)
    assert (decoded is None) == (fields is None)
    if record is None:
        assert decoded is None
    elif decoded is not None:
        assert decoded == (record, record.event_time_us, record.label_time_us)
        assert fields == (
            record.transaction_id, record.customer_id, record.terminal_id,
            record.event_time_us, record.label_time_us, record.is_fraud,
        )  # fmt: skip


_REASONS = st.lists(
    st.fixed_dictionaries(
        {"feature": _IDS, "contribution": _NUMBERS, "value": _NUMBERS},
        optional={"extra": st.integers()},
    ),
    max_size=3,
)


@AGREEMENT_SETTINGS
@given(
    raw=_mutated(
        "alert.v1",
        {
            "alert_id": st.one_of(
                st.builds(lambda u: str(u), st.uuids()),
                st.builds(alert_id, st.text(min_size=1, max_size=5), st.text(min_size=1)),
            ),
            "amount": _AMOUNTS,
            "score": _NUMBERS,
            "threshold": _NUMBERS,
            "model_version": _IDS,
            "reasons": _REASONS,
            "features": st.dictionaries(st.text(max_size=66), _NUMBERS, max_size=3),
            "event_time": _timestamps(),
            "processed_at": _timestamps(),
            "late": st.one_of(st.booleans(), st.integers(0, 1)),
        },
    )
)
def test_codec_and_schema_agree_on_generated_alerts(raw: bytes) -> None:
    assert codec_accepts("alert.v1", raw) == schema_accepts("alert.v1", raw)


@AGREEMENT_SETTINGS
@given(
    raw=_mutated(
        "score.v1",
        {
            "schema": st.sampled_from(["score.v1", "score.v2", "alert.v1"]),
            "transaction_id": _IDS,
            "customer_id": _IDS,
            "score": _NUMBERS,
            "threshold": _NUMBERS,
            "is_alert": st.one_of(st.booleans(), st.integers(0, 1)),
            "model_version": _IDS,
            "event_time": _timestamps(),
            "late": st.one_of(st.booleans(), st.integers(0, 1)),
        },
    )
)
def test_codec_and_schema_agree_on_generated_scores(raw: bytes) -> None:
    assert codec_accepts("score.v1", raw) == schema_accepts("score.v1", raw)


_VALID_IDS = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=64)
_UNIT = st.floats(0.0, 1.0)


@AGREEMENT_SETTINGS
@given(
    record=st.builds(
        TransactionScore,
        transaction_id=_VALID_IDS,
        customer_id=_VALID_IDS,
        score=_UNIT,
        threshold=_UNIT,
        is_alert=st.booleans(),
        model_version=_VALID_IDS,
        policy=_VALID_IDS,
        event_time=st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
        ),
        late=st.booleans(),
    )
)
def test_generated_scores_encode_to_what_the_schema_accepts(record: TransactionScore) -> None:
    raw = encode_score(record)
    assert raw == msgspec.json.encode(record)
    assert schema_accepts("score.v1", raw)
    assert decode_score(raw) == record
