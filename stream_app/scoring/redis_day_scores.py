"""A daily budget's top scores in Redis: one sorted set per model and UTC day.

Key ``<prefix>budget:<model_version>:<day>``, members transaction ids, scores the model's
scores. ``ZADD`` of the same id and score is idempotent, so a redelivered batch records
nothing new; the set is trimmed to the top *k* and expires with the windows' TTL. Each
call is one round trip (one key, one slot: also on Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream_app.time import SECONDS_PER_DAY


class RedisDayScores:
    """:class:`~stream_app.scoring.policy.DayScores` of one model in Redis."""

    def __init__(self, client: Any, key_prefix: str, model_version: str, ttl_days: int) -> None:
        """``client``: an asyncio Redis or Redis Cluster client."""
        self._client = client
        self._prefix = f"{key_prefix}budget:{model_version}:"
        self._ttl_s = ttl_days * SECONDS_PER_DAY

    def key(self, day: int) -> str:
        """The sorted set of ``day``."""
        return f"{self._prefix}{day}"

    async def kth_highest(self, day: int, k: int) -> float | None:
        found = await self._client.zrevrange(self.key(day), k - 1, k - 1, withscores=True)
        return float(found[0][1]) if found else None

    async def record(
        self, day: int, ids: Sequence[str], scores: Sequence[float], k: int
    ) -> float | None:
        key = self.key(day)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(key, dict(zip(ids, scores, strict=True)))
        pipe.zremrangebyrank(key, 0, -(k + 1))
        pipe.expire(key, self._ttl_s)
        pipe.zrevrange(key, k - 1, k - 1, withscores=True)
        *_, found = await pipe.execute()
        return float(found[0][1]) if found else None
