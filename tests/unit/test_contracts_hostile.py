"""Hostile input in the event contracts: repeated keys, control characters in ids,
tombstones; and the optional ``late`` flag of alerts and scores."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from stream_app.contracts import (
    Alert,
    Label,
    Reason,
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
    decode_transaction,
    decode_transaction_us,
    encode_alert,
    encode_score,
    encode_transaction,
    fast,
)
from stream_app.contracts.decode import TOMBSTONE, decode_label_event, decode_transaction_event
from stream_app.errors import ContractError
from tests.unit.test_contracts import BASE, encode_pairs, payload

Decode = Callable[[bytes], object]
TRANSACTION_DECODERS: list[Decode] = [
    decode_transaction, decode_transaction_us, decode_event, decode_transaction_event,
]  # fmt: skip
LABEL_DECODERS: list[Decode] = [
    decode_label, decode_label_us, decode_label_fields, decode_event, decode_label_event,
]  # fmt: skip
DECODERS: dict[str, list[Decode]] = {
    "transaction.v1": TRANSACTION_DECODERS,
    "label.v1": LABEL_DECODERS,
    "alert.v1": [decode_alert],
    "score.v1": [decode_score],
}
CONTROLS = ["\x00", "\n", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]
RULE = "send ids of 1 to 64 characters without control characters"


def with_pairs(contract: str, *extra: tuple[str, Any], style: str = "ascii") -> bytes:
    """The valid example of ``contract`` followed by the ``extra`` pairs (keys may repeat)."""
    return encode_pairs([*BASE[contract].items(), *extra], style)


def refusal(decode: Decode, raw: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        decode(raw)
    return caught.value


# --- repeated keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "raw", "message"),
    [
        (
            "transaction.v1",
            with_pairs("transaction.v1", ("amount", "1.00")),
            '$.amount: duplicate key "amount" (values "57.16", "1.00"); send each field once',
        ),
        (
            "transaction.v1",
            with_pairs("transaction.v1", ("currency", "EUR")),
            '$.currency: duplicate key "currency" (values "EUR", "EUR"); send each field once',
        ),
        (
            "transaction.v1",
            with_pairs("transaction.v1", ("schema", "transaction.v1")),
            '$.schema: duplicate key "schema" (values "transaction.v1", "transaction.v1"); '
            "send each field once",
        ),
        (
            "transaction.v1",  # a repeat written with an escape is the same key
            with_pairs("transaction.v1", ("customer_id", "4962"), style="escaped"),
            '$.customer_id: duplicate key "customer_id" (values "4961", "4962"); '
            "send each field once",
        ),
        (
            "transaction.v1",  # msgspec refuses the first value; the repeat is the problem
            encode_pairs([("amount", -5), *BASE["transaction.v1"].items()]),
            '$.amount: duplicate key "amount" (values -5, "57.16"); send each field once',
        ),
        (
            "transaction.v1",
            encode_pairs([("amount", "-5"), *BASE["transaction.v1"].items()]),
            '$.amount: duplicate key "amount" (values "-5", "57.16"); send each field once',
        ),
        (
            "transaction.v1",
            with_pairs("transaction.v1", ("channel", {"a": [{"b": 1}]})).replace(
                b'"b": 1', b'"b": 1, "b": 2'
            ),
            '$.channel.a[0].b: duplicate key "b" (values 1, 2); send each field once',
        ),
        (
            "label.v1",
            with_pairs("label.v1", ("is_fraud", False)),
            '$.is_fraud: duplicate key "is_fraud" (values true, false); send each field once',
        ),
        (
            "label.v1",
            with_pairs("label.v1", ("terminal_id", "3412"), style="utf8"),
            '$.terminal_id: duplicate key "terminal_id" (values "3412", "3412"); '
            "send each field once",
        ),
        (
            "alert.v1",
            with_pairs("alert.v1", ("score", 0.1)),
            '$.score: duplicate key "score" (values 0.93, 0.1); send each field once',
        ),
        (
            "alert.v1",
            payload("alert.v1", reasons=[]).replace(
                b'"reasons": []',
                b'"reasons": [{"feature": "a", "contribution": 1, "value": 2, "feature": "b"}]',
            ),
            '$.reasons[0].feature: duplicate key "feature" (values "a", "b"); send each field once',
        ),
        (
            "alert.v1",
            payload("alert.v1", features={}).replace(
                b'"features": {}', b'"features": {"x": 1.0, "x": 2.0}'
            ),
            '$.features.x: duplicate key "x" (values 1.0, 2.0); send each field once',
        ),
        (
            "score.v1",
            with_pairs("score.v1", ("late", True), ("late", False)),
            '$.late: duplicate key "late" (values true, false); send each field once',
        ),
    ],
)
def test_a_repeated_key_is_refused_with_its_values(contract: str, raw: bytes, message: str) -> None:
    for decode in DECODERS[contract]:
        assert str(refusal(decode, raw)) == message, decode.__name__


def test_keys_given_once_pass_whatever_the_quote_count() -> None:
    """More quote characters than the record needs only costs a second parse."""
    escaped_quote = payload("transaction.v1", customer_id='4"9')
    assert decode_transaction(escaped_quote).customer_id == '4"9'
    assert decode_label(payload("label.v1", terminal_id='"')).terminal_id == '"'
    assert decode_score(payload("score.v1", late=False)).late is False
    alert = decode_alert(payload("alert.v1", features={'"q"': 1.0}))
    assert alert.features == {'"q"': 1.0}
    assert decode_alert(encode_alert(alert)) == alert


# --- control characters in ids -------------------------------------------------------------


@pytest.mark.parametrize("style", ["ascii", "utf8"])  # DEL and C1 raw, or \u escaped
@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize(
    ("contract", "field"),
    [
        ("transaction.v1", "transaction_id"),
        ("transaction.v1", "customer_id"),
        ("transaction.v1", "terminal_id"),
        ("label.v1", "transaction_id"),
        ("label.v1", "customer_id"),
        ("label.v1", "terminal_id"),
        ("alert.v1", "terminal_id"),
        ("alert.v1", "model_version"),
        ("score.v1", "customer_id"),
        ("score.v1", "model_version"),
    ],
)
def test_a_control_character_in_an_id_is_refused_by_name_and_position(
    contract: str, field: str, control: str, style: str
) -> None:
    document = {**BASE[contract], field: f"c{control}x"}
    raw = encode_pairs(list(document.items()), style)
    assert (control.encode() in raw) == (style == "utf8" and control >= "\x7f")
    shown = json.dumps(f"c{control}x")
    for decode in DECODERS[contract]:
        error = refusal(decode, raw)
        assert error.field == f"$.{field}"
        assert error.problem == (
            f"got {shown}; control character U+{ord(control):04X} at position 1 is not "
            f"allowed in ids; {RULE}"
        )
    assert fast.transaction(raw) is None
    assert fast.label(raw) is None
    assert fast.label_fields(raw) is None


def test_control_characters_in_alert_features_are_refused() -> None:
    error = refusal(decode_alert, payload("alert.v1", features={"ok": 1.0, "a\x85": 2.0}))
    assert str(error) == (
        '$.features: key "a\\u0085": control character U+0085 at position 1 is not allowed '
        f"in ids; {RULE}"
    )
    reasons = [{"feature": "\x7f", "contribution": 1.0, "value": 2.0}]
    error = refusal(decode_alert, payload("alert.v1", reasons=reasons))
    assert str(error) == (
        '$.reasons[0].feature: got "\\u007f"; control character U+007F at position 0 is not '
        f"allowed in ids; {RULE}"
    )


@pytest.mark.parametrize(("key", "length"), [("", 0), ("f" * 65, 65)])
def test_a_feature_name_of_the_wrong_length_is_named(key: str, length: int) -> None:
    error = refusal(decode_alert, payload("alert.v1", features={"ok": 1.0, key: 2.0}))
    assert error.field == "$.features"
    assert error.problem == f"key {json.dumps(key)} has {length} characters; {RULE}"


@pytest.mark.parametrize("odd", ["\xa0", "\u200b", "a\u2028b", " x ", "é", "😀", "\\"])
@pytest.mark.parametrize("style", ["ascii", "utf8", "escaped"])
def test_ids_with_other_unusual_characters_are_accepted(odd: str, style: str) -> None:
    transaction = {**BASE["transaction.v1"], "customer_id": odd}
    record = decode_transaction(encode_pairs(list(transaction.items()), style))
    assert record.customer_id == odd
    label = {**BASE["label.v1"], "terminal_id": odd}
    assert decode_label_fields(encode_pairs(list(label.items()), style))[2] == odd
    score = decode_score(payload("score.v1", model_version=odd))
    assert decode_score(encode_score(score)).model_version == odd


def test_encoders_refuse_ids_with_control_characters() -> None:
    transaction = decode_transaction(payload("transaction.v1"))
    with pytest.raises(ContractError, match=r"^\$\.customer_id: .*U\+0000 at position 1"):
        encode_transaction(msgspec.structs.replace(transaction, customer_id="c\x00"))
    alert = decode_alert(payload("alert.v1"))
    with pytest.raises(ContractError, match=r"^\$\.features: key .*U\+009F at position 0"):
        encode_alert(msgspec.structs.replace(alert, features={"\x9f": 1.0}))


# --- the fast path ------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["ascii", "utf8", "escaped"])
@pytest.mark.parametrize("customer_id", ["4961", "é", "😀", "a b", 'q"'])
def test_the_fast_path_takes_printable_ids_in_any_spelling(style: str, customer_id: str) -> None:
    transaction = {**BASE["transaction.v1"], "customer_id": customer_id}
    raw = encode_pairs(list(transaction.items()), style)
    label = encode_pairs(list({**BASE["label.v1"], "customer_id": customer_id}.items()), style)
    if '"' in customer_id and style != "escaped":  # an escaped quote: one quote too many
        assert fast.transaction(raw) is None
        assert fast.label(label) is None
    else:
        assert fast.transaction(raw) == decode_transaction_us(raw)
        assert fast.label(label) == decode_label_us(label)
    assert decode_transaction(raw).customer_id == decode_label(label).customer_id == customer_id


@pytest.mark.parametrize(
    ("contract", "changes"),
    [
        ("transaction.v1", {}),
        ("label.v1", {}),
        ("alert.v1", {}),
        ("alert.v1", {"late": True, "reasons": [], "features": {}}),
        ("score.v1", {}),
        ("score.v1", {"late": True}),
    ],
)
def test_the_fewest_quotes_are_those_of_valid_events(
    contract: str, changes: dict[str, Any]
) -> None:
    """Events without escaped quotes take the cheap check for repeated keys."""
    raw = payload(contract, **changes)
    record = DECODERS[contract][0](raw)
    assert isinstance(record, Transaction | Label | Alert | TransactionScore)
    assert codec._fewest_quotes(record) == raw.count(b'"')
    assert payload("transaction.v1").count(b'"') == fast.TRANSACTION_QUOTES
    assert payload("label.v1").count(b'"') == fast.LABEL_QUOTES


# --- tombstones ---------------------------------------------------------------------------


@pytest.mark.parametrize("decode", [decode_transaction_event, decode_label_event])
def test_a_tombstone_is_refused_with_a_reason(decode: Callable[[None], object]) -> None:
    error = refusal(decode, None)  # type: ignore[arg-type]
    assert (error.field, error.problem) == ("$", TOMBSTONE)
    assert "tombstone" in error.problem


# --- late ---------------------------------------------------------------------------------


def test_late_defaults_to_false_and_is_written_only_when_true() -> None:
    transaction = decode_transaction(payload("transaction.v1"))
    built = {
        late: Alert.for_transaction(
            transaction,
            score=0.93,
            threshold=0.5,
            model_version="2026.11.1",
            policy="bundle",
            reasons=(Reason("customer_amount_mean_7d", 2.5, 412.0),),
            reasons_baseline=0.02,
            features={"customer_amount_mean_7d": 412.0},
            processed_at=datetime(2018, 4, 1, 0, 0, 32, tzinfo=UTC),
            late=late,
        )
        for late in (False, True)
    }
    assert built[False].late is False and built[True].late is True
    assert built[False].alert_id == built[True].alert_id == alert_id("1234567", "2026.11.1")
    assert "late" not in json.loads(encode_alert(built[False]))
    assert json.loads(encode_alert(built[True]))["late"] is True
    assert decode_alert(encode_alert(built[True])) == built[True]
    assert decode_alert(payload("alert.v1")).late is False
    assert decode_alert(payload("alert.v1", late=False)).late is False
    score = decode_score(payload("score.v1", late=True))
    assert score.late is True
    assert json.loads(encode_score(score))["late"] is True
    assert b"late" not in encode_score(msgspec.structs.replace(score, late=False))


@pytest.mark.parametrize("value", [1, "true", None])
@pytest.mark.parametrize("contract", ["alert.v1", "score.v1"])
def test_late_must_be_a_boolean(contract: str, value: object) -> None:
    error = refusal(DECODERS[contract][0], payload(contract, late=value))
    assert str(error) == f"$.late: got {json.dumps(value)}; expected true or false"
