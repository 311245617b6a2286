"""Typed, frozen records of the event contracts (``schemas/*.v1.json``).

Field constraints are ``msgspec.Meta`` annotations that mirror the JSON Schema files
(tests/unit/test_contracts.py proves they accept the same payloads). The ``schema`` field
of each contract is the struct tag: it is written first on encode and checked on decode.

``amount`` stays the exact decimal string of the wire format (alerts copy it verbatim);
``amount_float`` is the correctly rounded float that feature code uses. Times are
tz-aware :class:`datetime`; ``*_us`` properties give int64 microseconds since the epoch, UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

import msgspec
from msgspec import Meta

# Anchored with (?![\s\S]) rather than $: Python's $ also matches before a final newline.
AMOUNT_PATTERN = r"^(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,4})?(?![\s\S])"
CURRENCY_PATTERN = r"^[A-Z]{3}(?![\s\S])"
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})(?![\s\S])"
)
ALERT_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}(?![\s\S])"
#: Ids hold no C0 or C1 control character and no DEL (U+0000-U+001F, U+007F-U+009F); their
#: length is ``Meta(min_length, max_length)``.
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*(?![\s\S])"

#: Namespace of :func:`alert_id`: uuid5(NAMESPACE_URL, "urn:fraudstream:alert.v1").
#: Fixed forever: changing it changes every alert id.
ALERT_NAMESPACE = uuid.UUID("0bad7baf-845c-53a9-9254-773f32b412d8")

Id = Annotated[str, Meta(min_length=1, max_length=64, pattern=ID_PATTERN)]
#: An id whose control characters the codec checks after decoding, at once for all feature
#: names of an alert (ID_PATTERN costs about 0.25 µs a name; an alert has 15 to 25).
FeatureName = Annotated[str, Meta(min_length=1, max_length=64)]
Amount = Annotated[str, Meta(pattern=AMOUNT_PATTERN)]
Currency = Annotated[str, Meta(pattern=CURRENCY_PATTERN)]
Timestamp = Annotated[datetime, Meta(tz=True)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
AlertId = Annotated[str, Meta(pattern=ALERT_ID_PATTERN)]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_epoch_us(moment: datetime) -> int:
    """``moment`` (tz-aware) as int64 microseconds since the Unix epoch, UTC (exact)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_epoch_us(epoch_us: int) -> datetime:
    """The UTC datetime of ``epoch_us`` microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=epoch_us)


def alert_id(transaction_id: str, model_version: str) -> str:
    """The deterministic alert id: uuid5 over the JSON array ``[transaction_id, model_version]``."""
    key = msgspec.json.encode([transaction_id, model_version]).decode()
    return str(uuid.uuid5(ALERT_NAMESPACE, key))


class Transaction(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="schema",
    tag="transaction.v1",
):
    """One card payment (``transaction.v1``)."""

    transaction_id: Id
    customer_id: Id
    terminal_id: Id
    amount: Amount
    currency: Currency
    event_time: Timestamp

    @property
    def amount_float(self) -> float:
        """``amount`` as the nearest float (for features)."""
        return float(self.amount)

    @property
    def amount_decimal(self) -> Decimal:
        """``amount`` as an exact :class:`Decimal`."""
        return Decimal(self.amount)

    @property
    def event_time_us(self) -> int:
        """``event_time`` in microseconds since the epoch, UTC."""
        return to_epoch_us(self.event_time)


class Label(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="schema", tag="label.v1"
):
    """The known outcome of an earlier transaction (``label.v1``)."""

    transaction_id: Id
    customer_id: Id
    terminal_id: Id
    event_time: Timestamp
    label_time: Timestamp
    is_fraud: bool

    @property
    def event_time_us(self) -> int:
        """``event_time`` of the labelled transaction in microseconds since the epoch, UTC."""
        return to_epoch_us(self.event_time)

    @property
    def label_time_us(self) -> int:
        """``label_time`` in microseconds since the epoch, UTC."""
        return to_epoch_us(self.label_time)


class Reason(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One explanation of an alert: a stacker input (a feature, ``autoencoder_error`` or
    ``sequence_probability``), its share of ``score - reasons_baseline`` and its raw value."""

    feature: FeatureName
    contribution: float
    value: float


class Alert(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="schema",
    tag="alert.v1",
):
    """A transaction scored at or above the model threshold (``alert.v1``).

    Build it with :meth:`for_transaction` so ``alert_id`` and the copied fields are right.
    ``late`` is written only when true (the schema's default is false).
    """

    alert_id: AlertId
    transaction_id: Id
    customer_id: Id
    terminal_id: Id
    amount: Amount
    currency: Currency
    score: Probability
    threshold: Probability
    model_version: Id
    policy: Id
    reasons: tuple[Reason, ...]
    reasons_baseline: Probability
    features: dict[FeatureName, float]
    event_time: Timestamp
    processed_at: Timestamp
    late: bool = False

    @classmethod
    def for_transaction(
        cls,
        transaction: Transaction,
        *,
        score: float,
        threshold: float,
        model_version: str,
        policy: str,
        reasons: tuple[Reason, ...],
        reasons_baseline: float,
        features: dict[str, float],
        processed_at: datetime,
        late: bool = False,
    ) -> Alert:
        """The alert for ``transaction``, with its deterministic ``alert_id``."""
        return cls(
            alert_id=alert_id(transaction.transaction_id, model_version),
            transaction_id=transaction.transaction_id,
            customer_id=transaction.customer_id,
            terminal_id=transaction.terminal_id,
            amount=transaction.amount,
            currency=transaction.currency,
            score=score,
            threshold=threshold,
            model_version=model_version,
            policy=policy,
            reasons=reasons,
            reasons_baseline=reasons_baseline,
            features=features,
            event_time=transaction.event_time,
            processed_at=processed_at,
            late=late,
        )


class TransactionScore(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="schema",
    tag="score.v1",
):
    """One scored transaction (``score.v1``), published to the scores topic when the
    worker's ``publish_scores`` is on: every transaction's score, alert or not. ``late``
    is written only when true."""

    transaction_id: Id
    customer_id: Id
    score: Probability
    threshold: Probability
    is_alert: bool
    model_version: Id
    policy: Id
    event_time: Timestamp
    late: bool = False


class ShadowScore(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="schema",
    tag="shadow.v1",
):
    """A challenger's score of one transaction (``shadow.v1``), beside the serving model's,
    published to the shadow topic; never an alert."""

    transaction_id: Id
    customer_id: Id
    model_version: Id
    score: Probability
    threshold: Probability
    would_alert: bool
    serving_model_version: Id
    serving_score: Probability
    serving_alert: bool
    policy: Id
    event_time: Timestamp
    late: bool = False
