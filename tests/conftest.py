"""Shared fixtures: private servers for integration tests and the handbook data folder.

Integration tests get their own redis-server and tansu broker on free 127.0.0.1 ports
(started once per session, stopped at the end, also when tests fail); nothing here touches
a server somebody else runs. Any test that uses them must be marked ``integration``.
An ``async def`` test runs on an event loop of its own (``asyncio.run``). Every test's
captured output and logs are searched for the secrets of :mod:`tests.secrets`; one found
fails the run, naming the test and where it was printed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from stream_app.local_cluster import RunningCluster, start_redis_cluster
from stream_app.local_services import RunningService, start_redis, start_tansu
from stream_app.topics import ensure_topics_sync
from tests.secrets import SECRETS

REPO_ROOT = Path(__file__).resolve().parent.parent
HANDBOOK_DIR = REPO_ROOT.parent / "shared" / "data" / "handbook"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
SERVICE_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "redis_client",
        "kafka_broker",
        "kafka_bootstrap",
        "new_topic",
        "redis_cluster",
        "cluster_client",
    }
)

NewTopicFactory = Callable[[int], str]
_leaks: dict[str, None] = {}  # ordered, without repeats (teardown reports repeat sections)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse unmarked integration tests; skip handbook tests when the data is absent."""
    unmarked = [
        item.nodeid
        for item in items
        if item.get_closest_marker("integration") is None
        and (
            INTEGRATION_DIR in item.path.parents
            or SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        )
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests live in tests/integration or use a server fixture "
            f"({', '.join(sorted(SERVICE_FIXTURES))}) but are not marked integration; add "
            "`pytestmark = pytest.mark.integration` to their module:\n  " + "\n  ".join(unmarked)
        )
    if not (HANDBOOK_DIR / "transactions.parquet").is_file():
        skip = pytest.mark.skip(
            reason=f"handbook data not found at {HANDBOOK_DIR}; put the shared/ folder "
            "beside the repository to run these tests"
        )
        for item in items:
            if item.get_closest_marker("handbook") is not None:
                item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note every captured output or log section that holds a secret."""
    for title, text in report.sections:
        if any(secret in text for secret in SECRETS):
            _leaks[f"{report.nodeid}: {title}"] = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a secret was printed or logged."""
    if _leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "a secret of tests/secrets.py was printed or logged", red=True)
            for where in _leaks:
                reporter.write_line(where, red=True)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test with ``asyncio.run`` (its fixtures are synchronous)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture(scope="session")
def handbook_dir() -> Path:
    """The handbook data folder (tests using it are marked ``handbook``)."""
    return HANDBOOK_DIR


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RunningService]:
    """A private redis-server (no persistence) for the whole session."""
    with start_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RunningService) -> str:
    """``redis://127.0.0.1:<port>/0`` of the private redis-server."""
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the private redis-server, emptied before the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RunningCluster]:
    """A private Redis Cluster, 3 masters with a replica each, for the whole session."""
    with start_redis_cluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def cluster_client(redis_cluster: RunningCluster) -> Iterator[RedisCluster]:
    """A cluster client of the private Redis Cluster, every master emptied before the test."""
    client = RedisCluster.from_url(redis_cluster.url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[RunningService]:
    """A private tansu Kafka broker (in-memory storage) for the whole session."""
    with start_tansu() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: RunningService) -> str:
    """``127.0.0.1:<port>`` of the private broker."""
    return kafka_broker.address


_topic_numbers = itertools.count()


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> NewTopicFactory:
    """Create a fresh, uniquely named topic: ``new_topic(partitions=4)`` returns its name."""

    def create(partitions: int = 4) -> str:
        name = f"test-{next(_topic_numbers)}-{uuid.uuid4().hex[:8]}"
        ensure_topics_sync(kafka_bootstrap, [name], partitions)
        return name

    return create
