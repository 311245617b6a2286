"""Topic names, consumer groups and key prefixes per namespace; namespace validation."""

from __future__ import annotations

import pytest

from stream_app.errors import ConfigError
from stream_app.topics import stream_topics, validate_namespace


def test_live_namespace_uses_bare_topic_names() -> None:
    topics = stream_topics()
    assert topics.namespace == "live"
    assert topics.all == (
        "transactions", "labels", "fraud-alerts", "transaction-scores", "transactions-dlq",
        "shadow-scores",
    )
    assert topics.consumer_group == "fraudstream-live"
    assert topics.redis_key_prefix == "fraudstream:live:"


def test_other_namespace_prefixes_every_name() -> None:
    topics = stream_topics("replay-x")
    assert topics.transactions == "replay-x.transactions"
    assert topics.labels == "replay-x.labels"
    assert topics.alerts == "replay-x.fraud-alerts"
    assert topics.scores == "replay-x.transaction-scores"
    assert topics.dlq == "replay-x.transactions-dlq"
    assert topics.shadow == "replay-x.shadow-scores"
    assert topics.consumer_group == "fraudstream-replay-x"
    assert topics.redis_key_prefix == "fraudstream:replay-x:"


def test_namespaces_share_nothing() -> None:
    live, replay = stream_topics("live"), stream_topics("replay-1")
    assert not set(live.all) & set(replay.all)
    assert live.consumer_group != replay.consumer_group
    assert not replay.redis_key_prefix.startswith(live.redis_key_prefix)


@pytest.mark.parametrize(
    "bad", ["", "Replay", "replay_x", "replay.x", "-x", "x-", "a b", "x" * 41, "é"]
)
def test_bad_namespace_is_a_config_error_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError, match="namespace") as info:
        stream_topics(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("good", ["live", "a", "replay-2018-09", "0", "x" * 40])
def test_good_namespaces_pass(good: str) -> None:
    assert validate_namespace(good) == good
