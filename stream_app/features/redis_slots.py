"""The window store on a Redis Cluster: bucket-tagged keys, and its scripts run per slot.

Redis Cluster runs a script only on keys of one hash slot, so on a cluster
:class:`~stream_app.features.redis_store.RedisWindowStore` names its windows
``<prefix>v3:{<kind>:<bucket>}:<id>`` (key layout ``v3``; a single Redis keeps ``v2``),
``bucket`` being the CRC-32 of the id (of its pseudonym with a pseudonym key) modulo
:data:`BUCKETS`. The part in braces is the key's hash tag, the only part Redis hashes:
the windows of one bucket share a slot. 256 buckets per kind give at most 512 slots in
use: a batch of a few thousand windows costs at most 512 script calls, and the state can
be spread over up to ~500 masters, moved between them a 512th at a time.

:class:`SlotScripts` runs the store's read and compare-and-set scripts unchanged, once
per slot (the slot's first key as ``KEYS[1]``, for routing; the others stay in ``ARGV``),
the calls of one master pipelined on one connection, every master at once: about one round
trip per batch. A batch's writes go in two rounds, customer windows first, then terminal
windows, each round confirmed by ``WAIT`` (see :meth:`SlotScripts.write`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from zlib import crc32

import msgspec
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from stream_app.contracts.events import TransactionEvent
from stream_app.errors import DependencyUnavailable
from stream_app.features.incremental import CustomerWindow, IncrementalFeatures, TerminalWindow
from stream_app.features.store import FeatureBatch

KEY_LAYOUT = "v3"
BUCKETS = 256
"""Buckets per kind of window (customer, terminal): part of key layout ``v3``."""

_ENCODER = msgspec.msgpack.Encoder()
_READ_HEADER = msgspec.msgpack.Decoder(list[int])
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


Wr = TypeVar("Wr", bound=tuple[str, int, bytes, str])
"""A write: key, the version it expects, the new state, the id."""


@dataclass(frozen=True)
class ClusterOptions:
    """How a batch's writes count as stored on a cluster: each master they went to has
    ``wait_replicas`` replicas acknowledge them (``WAIT``, ``wait_timeout_ms`` a try)."""

    wait_replicas: int = 1
    wait_timeout_ms: int = 1000


def kind_prefix(prefix: str, kind: str) -> str:
    """How the keys of ``kind`` begin: ``<prefix>v3:{<kind>:``."""
    return f"{prefix}{KEY_LAYOUT}:{{{kind}:"


def bucket_key(start: str) -> Callable[[str], str]:
    """The key of an id: ``start`` (:func:`kind_prefix`), its bucket, ``}:``, the id."""

    def key(entity_id: str) -> str:
        return f"{start}{crc32(entity_id.encode()) % BUCKETS}}}:{entity_id}"

    return key


class SlotScripts:
    """The store's scripts on a cluster (a synchronous ``RedisCluster``, used from
    threads), one call per slot. ``first_round``: how the keys written first begin."""

    def __init__(
        self,
        client: RedisCluster,
        read_script: str,
        write_script: str,
        first_round: str,
        options: ClusterOptions,
    ) -> None:
        self._client = client
        self._scripts = (read_script, write_script)
        self._read_sha, self._write_sha = (_sha(script) for script in self._scripts)
        self._first_round = first_round
        self._options = options
        self._loaded: set[str] = set()  # nodes known to hold both scripts
        self._slots: dict[str, int] = {}  # slot by key up to its tag's end

    def read(self, keys: Sequence[str], held: Sequence[int]) -> list[tuple[int, bytes | None]]:
        """What the read script gives for ``keys`` (the last ``len(held)`` of them held
        at the versions ``held``), keys in order: one call per slot."""
        first_held = len(keys) - len(held)
        groups = self._groups(keys)
        calls = []
        for slot, indices in groups.items():
            group = [keys[i] for i in indices]
            args = [_ENCODER.encode(group)]
            if indices[-1] >= first_held:  # held keys come last, in a group too
                args.append(
                    _ENCODER.encode([held[i - first_held] for i in indices if i >= first_held])
                )
            calls.append((slot, ("EVALSHA", self._read_sha, 1, group[0], *args)))
        out: list[tuple[int, bytes | None]] = [(0, b"")] * len(keys)
        for indices, (header, *states) in zip(
            groups.values(), self._run(calls, False), strict=True
        ):
            for i, version, state in zip(indices, _READ_HEADER.decode(header), states, strict=True):
                out[i] = (version, state)
        return out

    def write(self, ttl_s: int, writes: Sequence[Wr]) -> tuple[list[Wr], list[Wr], list[Any]]:
        """Store ``writes`` per slot with the compare-and-set script: ``(stored, left,
        stale)``, ``stale`` the script's reply for ``left`` (1-based index into ``left``,
        version, state per stale key; empty when all are stored).

        The windows whose keys begin with ``first_round`` (customers) go first; the others
        (terminals) only once the first are stored and acknowledged by the replicas: a
        re-delivered transaction is recognised by its customer window, so a crash between
        the rounds leaves it in its customer's window only, and the store puts it in its
        terminal's window on re-delivery (never the other way round, which would be taken
        for a conflict). A stale slot stores none of its windows; the others are stored.
        """
        rounds = ([], [])  # type: tuple[list[int], list[int]]
        for index, write in enumerate(writes):
            rounds[not write[0].startswith(self._first_round)].append(index)
        stored: list[int] = []
        stale: dict[int, tuple[Any, Any]] = {}
        for members in rounds:
            if not members:
                continue
            groups = self._groups(writes[i][0] for i in members)
            calls = []
            for slot, indices in groups.items():
                keys, versions, states, _ = zip(*(writes[members[j]] for j in indices), strict=True)
                header = _ENCODER.encode((keys, versions, list(map(len, states))))
                args = (ttl_s, header, b"".join(states))
                calls.append((slot, ("EVALSHA", self._write_sha, 1, keys[0], *args)))
            for indices, reply in zip(groups.values(), self._run(calls, True), strict=True):
                if not reply:
                    stored += (members[j] for j in indices)
                for at in range(0, len(reply), 3):
                    stale[members[indices[int(reply[at]) - 1]]] = (reply[at + 1], reply[at + 2])
            if stale:
                break
        done = set(stored)
        left = [i for i in range(len(writes)) if i not in done]
        again: list[Any] = []
        for position, index in enumerate(left, 1):
            if index in stale:
                again += (position, *stale[index])
        return [writes[i] for i in stored], [writes[i] for i in left], again

    # -- per slot, per node ----------------------------------------------------------------

    def _groups(self, keys: Iterable[str]) -> dict[int, list[int]]:
        """The positions of ``keys`` by slot, in order."""
        slots = self._slots
        groups: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            tag = key.partition("}")[0]
            slot = slots.get(tag)
            if slot is None:
                slot = slots[tag] = key_slot(key.encode())
            groups.setdefault(slot, []).append(index)
        return groups

    def _run(self, calls: Sequence[tuple[int, tuple[Any, ...]]], wait: bool) -> list[Any]:
        """Each call (slot, command) on its slot's master, the replies in order. A node's
        calls go down one connection, after the scripts if the node may lack them and
        (``wait``) before ``SPUBLISH`` and ``WAIT``; all nodes are sent to, then read.

        A failed call (MOVED after a failover, a lost connection, NOSCRIPT, too few
        replicas) raises once every reply is read; the slot map is refreshed first when a
        node moved or went away. The calls are then retried whole by the caller: reads
        change nothing, and a write already stored comes back stale and is redone as a
        no-op (its events are in the window).
        """
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        try:
            for index, (slot, _) in enumerate(calls):
                node = self._client.nodes_manager.get_node_from_slot(slot)
                by_node.setdefault(node.name, (node, []))[1].append(index)
        except RedisClusterException as exc:  # a slot not covered: mid-failover
            raise DependencyUnavailable(
                f"the Redis Cluster's slot map is incomplete: {exc}"
            ) from exc
        replies: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []
        sent = []
        try:
            for name, (node, indices) in by_node.items():
                pool = self._client.get_redis_connection(node).connection_pool
                connection: Any = pool.get_connection()
                sent.append((name, pool, connection, indices))
                commands = [calls[i][1] for i in indices]
                if name not in self._loaded:
                    commands[:0] = [("SCRIPT", "LOAD", script) for script in self._scripts]
                if wait and self._options.wait_replicas:
                    channel = calls[indices[0]][1][3]  # a key of a slot of this node
                    commands += [("SPUBLISH", channel, ""), ("WAIT", *self._wait_args())]
                try:
                    connection.send_packed_command(connection.pack_commands(commands))
                except _LOST as exc:
                    errors.append(exc)
            for name, _, connection, indices in sent:
                self._read_node(name, connection, indices, replies, wait, errors)
        finally:
            for _, pool, connection, _ in sent:
                if errors:
                    connection.disconnect()  # replies may be left unread
                pool.release(connection)
        if errors:
            if any(isinstance(exc, (MovedError, *_LOST)) for exc in errors):
                self._refresh()
            raise errors[0]
        return replies

    def _read_node(
        self, name: str, connection: Any, indices: Sequence[int], replies: list[Any],
        wait: bool, errors: list[BaseException],
    ) -> None:  # fmt: skip
        """Read one node's replies into ``replies``; failures go to ``errors``."""
        try:
            if name not in self._loaded:
                for _ in self._scripts:
                    connection.read_response()
                self._loaded.add(name)
            for index in indices:
                try:
                    replies[index] = connection.read_response()
                except NoScriptError as exc:  # the node restarted, or a replica took over
                    self._loaded.discard(name)
                    errors.append(exc)
                except ResponseError as exc:
                    errors.append(exc)
            if wait and self._options.wait_replicas:
                connection.read_response()  # SPUBLISH: receivers, none
                acknowledged = int(connection.read_response())
                if acknowledged < self._options.wait_replicas:
                    errors.append(self._behind(name, acknowledged))
        except _LOST as exc:
            errors.append(exc)
        except RedisError as exc:
            errors.append(exc)

    def _wait_args(self) -> tuple[int, int]:
        return self._options.wait_replicas, self._options.wait_timeout_ms

    def _behind(self, name: str, acknowledged: int) -> DependencyUnavailable:
        replicas, timeout_ms = self._wait_args()
        return DependencyUnavailable(
            f"only {acknowledged} of {replicas} replicas of Redis Cluster master {name} "
            f"acknowledged the window writes within {timeout_ms} ms; retrying (a master needs "
            f"FRAUDSTREAM_REDIS_WAIT_REPLICAS={replicas} live replicas)"
        )

    def _refresh(self) -> None:
        """Ask the cluster for its slot map again (it may not answer yet: a failover)."""
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            self._client.nodes_manager.initialize()  # else the caller's retry asks again


def complete_terminals(
    features: IncrementalFeatures,
    transactions: Sequence[TransactionEvent],
    batch: FeatureBatch,
    terminals: Mapping[str, TerminalWindow],
) -> None:
    """Put the re-delivered transactions of ``batch`` that their terminal's window misses in
    it: a crash between a batch's two write rounds leaves them in their customer's window
    only. A terminal window's update does not depend on the customer's (an empty one here)."""
    for index in batch.duplicate.nonzero()[0].tolist():
        tx_id, _, terminal_id, t, amount = transactions[index]
        terminal = terminals[terminal_id]
        if tx_id in terminal.id_text and tx_id in terminal.transaction_ids:
            continue
        if not features.is_late(CustomerWindow(), terminal, t):
            features.apply_transaction(CustomerWindow(), terminal, tx_id, t, amount)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
