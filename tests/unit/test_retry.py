"""Backoff: retries while a dependency fails; the outage gauge follows every call in flight."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import redis
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailed

from stream_app.errors import AuthenticationFailed, ConfigError, DependencyUnavailable
from stream_app.worker.metrics import WorkerMetrics
from stream_app.worker.retry import Backoff, retriable


class UnavailableError(Exception):
    """The dependency's failure in these tests."""


def _caused_by(cause: BaseException) -> redis.ConnectionError:
    """A Redis connection error raised from ``cause`` (as redis-py chains TLS failures)."""
    try:
        raise redis.ConnectionError("network") from cause
    except redis.ConnectionError as error:
        return error


def _value(metrics: WorkerMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"dependency": "kafka"})
    return 0.0 if value is None else value


def _backoff(metrics: WorkerMetrics) -> Backoff:
    return Backoff(
        "kafka",
        metrics,
        is_retriable=lambda exc: isinstance(exc, UnavailableError),
        first_s=0.001,
        max_s=0.004,
    )


def test_a_failing_call_is_retried_until_it_succeeds_and_the_outage_is_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = WorkerMetrics()
    outcomes: list[BaseException | str] = [*(UnavailableError(str(i)) for i in range(3)), "done"]
    up_while_failing: list[float] = []

    async def attempt() -> str:
        up_while_failing.append(_value(metrics, "fraudstream_dependency_up"))
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert asyncio.run(_backoff(metrics).call(attempt)) == "done"
    assert up_while_failing == [1.0, 0.0, 0.0, 0.0]
    assert _value(metrics, "fraudstream_dependency_retries_total") == 3
    assert _value(metrics, "fraudstream_dependency_up") == 1.0
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "kafka unavailable",
        "kafka available again after 0.0 s",
    ]


def test_a_concurrent_success_does_not_end_an_outage_another_call_still_retries() -> None:
    """The worker queues a batch (``send``, here after one failure) while an earlier
    batch's acknowledgement is still failing, both through the worker's one broker
    Backoff: the dependency stays down until the acknowledgement succeeds."""
    metrics = WorkerMetrics()
    retrying = queuing = _backoff(metrics)
    back = asyncio.Event()
    queue_failures = [UnavailableError("not connected")]
    seen: list[float] = []

    async def acknowledgement() -> None:
        if not back.is_set():
            raise UnavailableError("timed out")

    async def queue() -> None:
        if queue_failures:
            raise queue_failures.pop()

    async def scenario() -> None:
        acknowledged = asyncio.create_task(retrying.call(acknowledgement))
        await asyncio.sleep(0.02)
        await queuing.call(queue)
        seen.append(_value(metrics, "fraudstream_dependency_up"))
        back.set()
        await acknowledged
        seen.append(_value(metrics, "fraudstream_dependency_up"))

    asyncio.run(scenario())
    assert seen == [0.0, 1.0]


def test_a_cancelled_retry_leaves_the_dependency_down_until_a_call_succeeds() -> None:
    metrics = WorkerMetrics()
    backoff = _backoff(metrics)
    seen: list[float] = []

    async def failing() -> None:
        raise UnavailableError("refused")

    async def fine() -> None:
        pass

    async def scenario() -> None:
        task = asyncio.create_task(backoff.call(failing))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen.append(_value(metrics, "fraudstream_dependency_up"))
        await backoff.call(fine)
        seen.append(_value(metrics, "fraudstream_dependency_up"))

    asyncio.run(scenario())
    assert seen == [0.0, 1.0]


def test_other_errors_are_not_retried() -> None:
    metrics = WorkerMetrics()

    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(_backoff(metrics).call(broken))
    assert _value(metrics, "fraudstream_dependency_retries_total") == 0
    assert _value(metrics, "fraudstream_dependency_up") == 1.0


def test_failures_retried_in_another_process_count_as_one_failing_call() -> None:
    """The window process retries its Redis reads itself and reports each failed attempt:
    the outage lasts until it reports success and no call of this process still fails."""
    metrics = WorkerMetrics()
    backoff = _backoff(metrics)
    backoff.failed_elsewhere(UnavailableError("read timed out"))
    backoff.failed_elsewhere(UnavailableError("read timed out"))
    assert _value(metrics, "fraudstream_dependency_retries_total") == 2
    assert _value(metrics, "fraudstream_dependency_up") == 0.0
    failures = [UnavailableError("still down")]
    ended_while_local_call_failed: list[float] = []

    async def attempt() -> None:
        if failures:
            raise failures.pop()
        ended_while_local_call_failed.append(_value(metrics, "fraudstream_dependency_up"))

    async def scenario() -> None:
        local = asyncio.ensure_future(backoff.call(attempt))
        await asyncio.sleep(0)  # the local call has failed once and sleeps
        backoff.succeeded_elsewhere()
        ended_while_local_call_failed.append(_value(metrics, "fraudstream_dependency_up"))
        await local

    asyncio.run(scenario())
    assert ended_while_local_call_failed == [0.0, 0.0]
    assert _value(metrics, "fraudstream_dependency_up") == 1.0
    assert _value(metrics, "fraudstream_dependency_retries_total") == 3


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DependencyUnavailable("broker down"), True),
        (ConfigError("bad setting"), False),
        (KafkaConnectionError("refused"), True),
        (KafkaTimeoutError(), True),  # aiokafka's own flag says no; the broker may be back
        (redis.ConnectionError("refused"), True),
        (redis.AuthenticationError("invalid password"), False),
        (SaslAuthenticationFailed("wrong password"), False),
        (AuthenticationFailed("refused login"), False),
        (_caused_by(ssl.SSLCertVerificationError(1, "certificate verify failed")), False),
        (_caused_by(ConnectionResetError()), True),
        (ConnectionRefusedError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_retriable_is_decided_by_the_error_tree_and_the_dependency(
    error: BaseException, expected: bool
) -> None:
    assert retriable(error) is expected


def test_the_default_policy_gives_up_at_once_on_a_refused_login() -> None:
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        raise redis.AuthenticationError("invalid password")

    with pytest.raises(redis.AuthenticationError):
        asyncio.run(Backoff("redis", WorkerMetrics(), first_s=0.001).call(attempt))
    assert attempts == 1
