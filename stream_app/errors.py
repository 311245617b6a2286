"""The one exception tree of fraudstream.

Every error a user can cause is a :class:`FraudstreamError` whose message names the bad
value and the fix. ``retriable`` says whether trying the same thing again can help.
"""

from __future__ import annotations


class FraudstreamError(Exception):
    """Root of every error fraudstream raises on purpose."""

    retriable: bool = False


class ConfigError(FraudstreamError):
    """A setting (environment variable or CLI flag) has a bad value."""


REASON_CLASSES = (
    "malformed_json",  # not UTF-8, not JSON, or nested too deeply to read
    "schema",  # a field missing, unknown or of the wrong type or value
    "too_large",  # over FRAUDSTREAM_MAX_PAYLOAD_BYTES
    "far_future",  # an event or label time too far ahead of the reference clock
    "conflict",  # a transaction id seen before with other content
    "tombstone",  # a record without a value
    "control_character",  # a control character in an id
    "duplicate_key",  # a JSON key repeated in one object
    "label_order",  # a label's label_time before its event_time
)
"""The classes of :attr:`ContractError.reason`: a bounded set (a metrics label)."""


class ContractError(FraudstreamError):
    """An event does not match its contract (``schemas/*.json``).

    ``field`` is the JSON path of the offending field (``"$"`` for the whole payload),
    ``problem`` says what is wrong with it, and ``reason`` is its class, one of
    :data:`REASON_CLASSES`.
    """

    def __init__(self, field: str, problem: str, reason: str = "schema") -> None:
        self.field = field
        self.problem = problem
        self.reason = reason
        super().__init__(f"{field}: {problem}")


class InputDataError(FraudstreamError):
    """A history file (Parquet, CSV, JSONL) cannot be read or has the wrong shape."""


class BundleError(FraudstreamError):
    """A model bundle is missing, tampered with, or does not match the running code."""


class DependencyUnavailable(FraudstreamError):  # noqa: N818 - public name others import
    """Redis or the Kafka broker cannot be reached; retrying later can help."""

    retriable = True


class LocalServiceError(FraudstreamError):
    """A local redis-server or tansu broker (tests, demo, benchmarks) cannot be started."""


class AuthenticationFailed(FraudstreamError):  # noqa: N818 - reads as what happened
    """Redis or the Kafka broker refused the credentials, or a TLS certificate was not
    trusted; retrying with the same settings cannot help."""


class Superseded(FraudstreamError):  # noqa: N818 - reads as what happened
    """A batch of an older generation (fetched before a rebalance) stopped waiting for the
    other workers' progress: it is dropped and redelivered to its partitions' new owner."""
