"""What goes out: alert and score records of a scored batch, and dead letters.

Alerts (``alert.v1``) and scores (``score.v1``) are keyed by customer and stamped with the
transaction's event time. A dead letter is an invalid input record, kept byte for byte
with why and where it failed: the value is the raw payload, the key the raw key; headers
say what was wrong
(``fraudstream.reason``, ``fraudstream.field``) and where the record came from
(``fraudstream.source.topic`` / ``.partition`` / ``.offset``), so it can be fixed and
replayed. A dead letter goes to the DLQ partition with the number of its source partition
(modulo the DLQ's count), keeping each source partition's dead letters in order.

A transaction whose id the windows hold with other content is a dead letter too (a
conflict). A late transaction's alert and score say ``late``. :func:`is_warmup` tells a
replay's warm-up transaction (header ``fraudstream.warmup``), which the score stage does
not score outside the ``live`` namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from aiokafka.structs import ConsumerRecord

from stream_app.contracts import (
    Alert,
    Reason,
    ShadowScore,
    Transaction,
    TransactionScore,
    encode_alert,
)
from stream_app.errors import ContractError
from stream_app.scoring.scorer import ScoreBatch
from stream_app.time import MICROS_PER_MS
from stream_app.topics import WARMUP, StreamTopics
from stream_app.worker.batches import Source
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.publisher import OutRecord

REASON = "fraudstream.reason"
FIELD = "fraudstream.field"
SOURCE_TOPIC = "fraudstream.source.topic"
SOURCE_PARTITION = "fraudstream.source.partition"
SOURCE_OFFSET = "fraudstream.source.offset"
CONFLICT = (
    "transaction id {!r} was seen before with other content (event time, amount, customer "
    "or terminal); re-using an id is refused: give every transaction its own id"
)


def dead_letter(
    dlq_topic: str, dlq_partitions: int, record: ConsumerRecord[Any, Any], error: ContractError
) -> OutRecord:
    """The DLQ record of a consumed ``record`` that failed with ``error``."""
    return OutRecord(
        topic=dlq_topic,
        key=record.key,
        value=b"" if record.value is None else record.value,
        timestamp_ms=record.timestamp,
        headers=(
            (REASON, error.problem.encode()),
            (FIELD, error.field.encode()),
            (SOURCE_TOPIC, record.topic.encode()),
            (SOURCE_PARTITION, str(record.partition).encode()),
            (SOURCE_OFFSET, str(record.offset).encode()),
        ),
        partition=record.partition % dlq_partitions,
    )


@dataclass(frozen=True, eq=False)
class Decision:
    """One model's scores of a batch's scored transactions under the alert policy:
    ``thresholds[i]`` is what ``scores.score[i]`` was held to, ``alerts`` the outcome."""

    model_version: str
    policy: str
    columns: tuple[str, ...]
    scores: ScoreBatch
    """With the policy's alerts (``is_alert``), explained for the serving model."""
    thresholds: npt.NDArray[np.float64]

    @property
    def alerts(self) -> npt.NDArray[np.bool_]:
        return self.scores.is_alert


class Emitter:
    """Builds the alert records (the serving model's alerts), with ``publish_scores`` a
    score record per scored transaction, and the challengers' shadow records."""

    def __init__(
        self,
        topics: StreamTopics,
        metrics: WorkerMetrics,
        *,
        publish_scores: bool,
        dlq_partitions: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``clock``: the alerts' ``processed_at``."""
        self._topics = topics
        self._dlq_partitions = dlq_partitions
        self._metrics = metrics
        self._publish_scores = publish_scores
        self._clock = clock

    def conflict(self, record: Source, transaction_id: str) -> OutRecord:
        """The dead letter of a transaction (its consumed ``record``) whose id was seen with
        other content."""
        self._metrics.dlq.labels("transaction").inc()
        self._metrics.dlq_reasons.labels("conflict").inc()
        error = ContractError("$.transaction_id", CONFLICT.format(transaction_id), "conflict")
        return dead_letter(self._topics.dlq, self._dlq_partitions, record, error)

    def records(
        self,
        transactions: Sequence[Transaction],
        times_us: Sequence[int],
        late: Sequence[bool],
        serving: Decision,
        values: npt.NDArray[np.float64],
    ) -> list[OutRecord]:
        """The records of scored ``transactions`` (``values``: their feature rows; ``late``:
        which were scored against windows they could not join)."""
        records = self._alerts(transactions, times_us, late, serving, values)
        if self._publish_scores:
            records.extend(self._scores(transactions, times_us, late, serving))
        return records

    def _alerts(
        self,
        transactions: Sequence[Transaction],
        times_us: Sequence[int],
        late: Sequence[bool],
        serving: Decision,
        values: npt.NDArray[np.float64],
    ) -> list[OutRecord]:
        alerts = np.flatnonzero(serving.alerts)
        if not len(alerts):
            return []
        processed_at = self._clock()
        scores = serving.scores
        records = []
        for row, row_reasons in zip(alerts.tolist(), scores.reasons_for(alerts), strict=True):
            tx = transactions[row]
            alert = Alert.for_transaction(
                tx,
                score=float(scores.score[row]),
                threshold=float(serving.thresholds[row]),
                model_version=serving.model_version,
                policy=serving.policy,
                reasons=tuple(Reason(f, c, v) for f, c, v in row_reasons),
                reasons_baseline=scores.baseline_score,
                features=dict(zip(serving.columns, values[row].tolist(), strict=True)),
                processed_at=processed_at,
                late=late[row],
            )
            records.append(
                OutRecord(
                    self._topics.alerts,
                    tx.customer_id.encode(),
                    encode_alert(alert),
                    times_us[row] // MICROS_PER_MS,
                )
            )
        self._metrics.alerts_out.inc(len(records))
        self._metrics.alert_rate.add(len(records))
        return records

    def _scores(
        self,
        transactions: Sequence[Transaction],
        times_us: Sequence[int],
        late: Sequence[bool],
        serving: Decision,
    ) -> list[OutRecord]:
        encode = msgspec.json.encode  # TransactionScore holds only validated values
        topic, model_version, policy = self._topics.scores, serving.model_version, serving.policy
        out = [
            OutRecord(
                topic,
                tx.customer_id.encode(),
                encode(
                    TransactionScore(
                        tx.transaction_id,
                        tx.customer_id,
                        score,
                        threshold,
                        alert,
                        model_version,
                        policy,
                        tx.event_time,
                        is_late,
                    )
                ),
                t // MICROS_PER_MS,
            )
            for tx, t, is_late, score, threshold, alert in zip(
                transactions,
                times_us,
                late,
                serving.scores.score.tolist(),
                serving.thresholds.tolist(),
                serving.alerts.tolist(),
                strict=True,
            )
        ]
        self._metrics.scores_out.inc(len(out))
        return out

    def shadow(
        self,
        transactions: Sequence[Transaction],
        times_us: Sequence[int],
        late: Sequence[bool],
        serving: Decision,
        challenger: Decision,
    ) -> list[OutRecord]:
        """A challenger's records for the shadow topic: its score and would-be alert beside
        the serving model's, for every scored transaction."""
        encode = msgspec.json.encode  # ShadowScore holds only validated values
        topic, version, policy = self._topics.shadow, challenger.model_version, challenger.policy
        serving_version = serving.model_version
        out = [
            OutRecord(
                topic,
                tx.customer_id.encode(),
                encode(
                    ShadowScore(
                        tx.transaction_id,
                        tx.customer_id,
                        version,
                        score,
                        threshold,
                        would_alert,
                        serving_version,
                        serving_score,
                        serving_alert,
                        policy,
                        tx.event_time,
                        is_late,
                    )
                ),
                t // MICROS_PER_MS,
            )
            for tx, t, is_late, score, threshold, would_alert, serving_score, serving_alert
            in zip(
                transactions,
                times_us,
                late,
                challenger.scores.score.tolist(),
                challenger.thresholds.tolist(),
                challenger.alerts.tolist(),
                serving.scores.score.tolist(),
                serving.alerts.tolist(),
                strict=True,
            )
        ]
        self._metrics.shadow_out.inc(len(out))
        return out


def is_warmup(record: Source) -> bool:
    """Whether ``record`` is a replay's warm-up transaction (its ``fraudstream.warmup``)."""
    headers = record.headers
    return bool(headers) and (WARMUP, b"1") in headers
