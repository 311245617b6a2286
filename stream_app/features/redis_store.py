"""RedisWindowStore: the window states of :mod:`stream_app.features.incremental` in Redis.

A :class:`~stream_app.features.store.WindowStore`; :meth:`RedisStoreConfig.open` builds one
on its own clients. The maths is :func:`stream_app.features.store.apply_batch`, the same
function :class:`~stream_app.features.store.InMemoryWindowStore` runs; this module only
decides where the states live and when they are written:

- one Redis hash per window, ``{v: version, s: state}``, the state being the window in
  its one encoding (:func:`stream_app.features.incremental.encode_window`), named
  ``<prefix>v2:cust:<customer_id>`` / ``<prefix>v2:term:<terminal_id>``
  (``fraudstream:<namespace>:``, ``v2`` = this key and state layout), with a TTL renewed
  on write; with a pseudonym key the id is replaced by its HMAC
  (:meth:`stream_app.pseudonyms.Pseudonymizer.pseudonym`), computed once per id and kept
  as long as the id's window is cached;
- windows are cached in the process with the version they were read at. A batch is
  computed on the cache (:meth:`RedisWindowStore.compute`; keys not cached yet are read
  first, with one Lua call, ``redis_windows_read.lua``) and written later with one Lua call
  (``redis_windows.lua``, :meth:`RedisWindowStore.write_all`) that stores the changed states
  only if no version moved since they were read. In steady state a batch costs one round
  trip. Neither call passes arguments per key (the asyncio client packs each argument in
  Python): a write sends a msgpack header and the states concatenated, a read its keys
  as one msgpack array. Customer windows belong to the worker owning
  the customer's partition; terminal windows are shared, and a moved version (another
  worker, or a worker that lost its partitions) makes the write re-apply the batch's
  events to the fresh states: updates of one window depend only on that window, and
  re-applied events are recognised by id. With terminals shared by workers, a batch's
  terminal changes are stored before its rows are computed, and the rows wait for every
  partition's progress (:meth:`RedisWindowStore._compute_shared`; docs/design.md, "Exact
  with N workers"); its reads then carry the versions of the cached terminals, and Redis
  sends back the states of those that moved.
- Events are idempotent: a re-delivered transaction or label leaves every state
  byte-identical, so nothing is written and no version changes.
- On a Redis Cluster (``cluster``) the keys carry a bucket hash tag and each call runs once
  per slot, the customers' writes before the terminals' (:mod:`.redis_slots`); a write
  is then atomic per slot only, and each window's compare-and-set and the redo keep every
  event in each of its windows once.
- A transaction older than a window horizon relative to its customer's or terminal's newest
  event (30 / 37 days by default) is *late*: it is scored against the windows as they are,
  not applied (its id could no longer be recognised on re-delivery), and marked in
  :attr:`FeatureBatch.late <stream_app.features.store.FeatureBatch>`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from itertools import chain
from operator import attrgetter
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from stream_app.connections import RedisConnection, redis_connection
from stream_app.contracts.events import LabelEvent, TransactionEvent
from stream_app.errors import Superseded
from stream_app.features.incremental import (
    CustomerWindow,
    IncrementalFeatures,
    TerminalWindow,
    decode_customer,
    decode_terminal,
    encode_window,
)
from stream_app.features.redis_slots import (
    ClusterOptions,
    SlotScripts,
    bucket_key,
    complete_terminals,
    kind_prefix,
)
from stream_app.features.spec import FeatureSet
from stream_app.features.store import FeatureBatch, Progress, apply_batch, insert_terminals
from stream_app.pseudonyms import CUSTOMER, TERMINAL, Pseudonymizer
from stream_app.time import MICROS_PER_DAY, SECONDS_PER_DAY

KEY_LAYOUT = "v2"
WRITE_SCRIPT = files("stream_app.features").joinpath("redis_windows.lua").read_text()
READ_SCRIPT = files("stream_app.features").joinpath("redis_windows_read.lua").read_text()
DEFAULT_MAX_CACHED_WINDOWS = 2_000_000
PROGRESS_POLL_S = (0.001, 0.008)
"""A batch waiting for the other workers' progress asks Redis again after the first delay,
doubled after each answer that is not yet enough, up to the second."""

W = TypeVar("W", CustomerWindow, TerminalWindow)
# Keys, versions and sizes go to and from the scripts as msgpack (Redis's Lua has cmsgpack
# built in); states as plain bytes: Redis's cmsgpack knows no binary type.
_ENCODER = msgspec.msgpack.Encoder()
_READ_HEADER = msgspec.msgpack.Decoder(list[int])


@dataclass(slots=True)
class _Cached(Generic[W]):
    """A window as this process knows it: state, its bytes and the version they will have,
    and the version Redis was last seen to hold (below ``version`` while writes of this
    process are pending; kept up to date only while terminals are shared)."""

    window: W
    state: bytes
    version: int
    stored: int


class _Write(NamedTuple):
    """One changed window: its key, the version it was computed from, its new state, and
    the id it belongs to."""

    key: str
    expected_version: int
    after: bytes
    entity_id: str


class _PseudonymKeys(dict[str, str]):
    """The Redis keys of one kind of window by id, ``key(<pseudonym>)``: each HMAC is
    computed on the first lookup of its id and kept until cleared."""

    __slots__ = ("_key", "_kind", "_pseudonymizer")

    def __init__(self, key: Callable[[str], str], kind: str, pseudonymizer: Pseudonymizer) -> None:
        super().__init__()
        self._key, self._kind, self._pseudonymizer = key, kind, pseudonymizer

    def __missing__(self, entity_id: str) -> str:
        key = self[entity_id] = self._key(self._pseudonymizer.pseudonym(self._kind, entity_id))
        return key


@dataclass(frozen=True, eq=False)
class ComputedBatch:
    """Rows of a batch computed on cached windows, and the writes that make them durable."""

    features: FeatureBatch
    transactions: tuple[TransactionEvent, ...]
    labels: tuple[LabelEvent, ...]
    writes: tuple[_Write, ...]
    progress: Progress | None = None  # computed on terminals shared with other workers

    @property
    def changed(self) -> bool:
        """Whether there is something to write: a changed window, or the progress of a
        batch computed on shared terminals."""
        return bool(self.writes) or self.progress is not None


class RedisWindowStore:
    """A :class:`~stream_app.features.store.WindowStore` of customer and terminal windows in
    Redis (``redis.asyncio`` client), cached in process.

    ``customer_key(id)`` / ``terminal_key(id)`` give the Redis key of a window.
    """

    def __init__(
        self,
        client: Any,
        fs: FeatureSet,
        *,
        key_prefix: str,
        ttl_days: int,
        max_cached_windows: int = DEFAULT_MAX_CACHED_WINDOWS,
        writer: Any = None,
        owns_clients: bool = False,
        pseudonym_key: bytes = b"",
        cluster: ClusterOptions | None = None,
    ) -> None:
        """``client`` is a ``redis.asyncio`` client. ``writer``, a synchronous client of the
        same server, makes :meth:`write_all` send its script from a thread: the reply is
        then taken as it arrives, not when the event loop is next free of CPU work (a
        batch's window maths runs for tens of ms without a pause). ``owns_clients``:
        :meth:`close` closes both clients. ``pseudonym_key``: name windows by the HMAC of
        their ids (:mod:`stream_app.pseudonyms`) instead of the ids. ``cluster``: ``writer`` is
        a synchronous ``RedisCluster`` that runs every read and write per slot (``v3``
        keys, :mod:`.redis_slots`); ``client`` is then only closed."""
        self._client = client
        self._writer = writer
        self._owns_clients = owns_clients
        self._features = IncrementalFeatures(fs)
        self._width = len(fs.columns)
        self._prefix = f"{key_prefix}{KEY_LAYOUT}:"
        self._customer_prefix = f"{self._prefix}{CUSTOMER}:"
        self._terminal_prefix = f"{self._prefix}{TERMINAL}:"
        self.customer_key: Callable[[str], str] = self._customer_prefix.__add__
        self.terminal_key: Callable[[str], str] = self._terminal_prefix.__add__
        self._slots: SlotScripts | None = None
        if cluster is not None:
            self._customer_prefix = kind_prefix(key_prefix, CUSTOMER)
            self._terminal_prefix = kind_prefix(key_prefix, TERMINAL)
            self.customer_key = bucket_key(self._customer_prefix)
            self.terminal_key = bucket_key(self._terminal_prefix)
            self._slots = SlotScripts(
                writer, READ_SCRIPT, WRITE_SCRIPT, self._customer_prefix, cluster
            )
        pseudonymizer = Pseudonymizer.from_key(pseudonym_key)
        self._pseudonym_keys: tuple[_PseudonymKeys, ...] = ()
        if pseudonymizer is not None:
            customer_keys = _PseudonymKeys(self.customer_key, CUSTOMER, pseudonymizer)
            terminal_keys = _PseudonymKeys(self.terminal_key, TERMINAL, pseudonymizer)
            self.customer_key, self.terminal_key = (
                customer_keys.__getitem__,
                terminal_keys.__getitem__,
            )
            self._pseudonym_keys = (customer_keys, terminal_keys)
        self._ttl_s = ttl_days * SECONDS_PER_DAY
        self._max_cached = max_cached_windows
        self._customers: dict[str, _Cached[CustomerWindow]] = {}
        self._terminals: dict[str, _Cached[TerminalWindow]] = {}
        self._shared_terminals = False
        self._progress_key = f"{key_prefix}progress"
        self._superseded_before = 0
        self._claimed_us = self._stored_claim_us = -math.inf
        self._seen_claims: deque[tuple[float, float]] = deque()
        self._terminal_horizon_us = fs.terminal_horizon_days * MICROS_PER_DAY
        if self._slots is None:
            self._write_script = client.register_script(WRITE_SCRIPT)
            self._threaded_write = None if writer is None else writer.register_script(WRITE_SCRIPT)
            self._read_script = client.register_script(READ_SCRIPT)

    @property
    def feature_set(self) -> FeatureSet:
        """The feature set whose columns the batches hold."""
        return self._features.feature_set

    @property
    def computes_in_order(self) -> bool:
        """False: a compute awaiting its read would let a later one apply first."""
        return False

    def reset_cache(self, *, shared_terminals: bool) -> None:
        """Drop every cached window (after a rebalance: other workers may have written).

        ``shared_terminals``: other workers own some partitions, so they write terminal
        windows too; computes given a :class:`~stream_app.features.store.Progress` then
        store their terminal changes first and wait for the others' progress
        (:meth:`_compute_shared`).
        """
        self._shared_terminals = shared_terminals
        self._claimed_us = self._stored_claim_us = -math.inf
        self._seen_claims.clear()
        self._forget()

    def _forget(self) -> None:
        self._customers.clear()
        self._terminals.clear()
        for keys in self._pseudonym_keys:
            keys.clear()

    async def close(self) -> None:
        """Close the clients if the store owns them (else their owner closes them)."""
        if self._owns_clients:
            await self._client.aclose()
            if self._writer is not None:
                self._writer.close()

    def supersede(self, generation: int) -> None:
        """Computes of generations before ``generation`` stop waiting for progress."""
        self._superseded_before = max(self._superseded_before, generation)

    async def compute(
        self,
        transactions: Sequence[TransactionEvent],
        labels: Sequence[LabelEvent],
        progress: Progress | None = None,
    ) -> ComputedBatch:
        """Apply ``labels`` then ``transactions`` to the cached windows (reading missing ones).

        Nothing is written to Redis: pass the result to :meth:`write_all` once the batch's
        outputs are safe. A write redone while the read is in flight drops the windows it
        found stale from the cache, so the read is repeated until none is missing.

        With ``progress`` while terminals are shared, the batch's terminal changes are
        stored first and its rows wait for the other workers (:meth:`_compute_shared`).
        """
        if progress is not None and self._shared_terminals:
            return await self._compute_shared(tuple(transactions), tuple(labels), progress)
        await self._load(transactions, labels)
        return self._compute(tuple(transactions), tuple(labels))

    async def write_all(self, batches: Sequence[ComputedBatch]) -> None:
        """Store each batch's changed windows atomically (one script call a batch), in the
        order they were computed: each write expects the versions the previous one left.

        With a ``writer`` client they are sent one after the other from one thread call,
        so a group costs one pass of the event loop, not one per batch. A stale reply
        stops the group there: that batch is redone on the fresh states (the batch's
        events applied to the windows that moved), then the rest are sent (and redone if
        they too moved).
        """
        if self._slots is not None:
            await self._write_per_slot(batches)
        else:
            await self._write_in_order(batches)
        stored = [computed.progress for computed in batches if computed.progress is not None]
        if stored and stored[-1].through_us > self._stored_claim_us:
            self._stored_claim_us = stored[-1].through_us
            await self._write_claims("d", stored[-1].partitions, self._stored_claim_us)

    async def _write_in_order(self, batches: Sequence[ComputedBatch]) -> None:
        """:meth:`write_all` on a single Redis: one script call a batch."""
        pending = [(computed, computed.writes) for computed in batches if computed.writes]
        while pending:
            arg_lists = [self._args(writes) for _, writes in pending]
            if self._threaded_write is None:
                written, reply = await _until_stale_async(self._write_script, arg_lists)
            else:
                written, reply = await asyncio.to_thread(
                    _until_stale, self._threaded_write, arg_lists
                )
            del pending[:written]
            if reply:
                computed, writes = pending[0]
                redone = self._redo(computed, writes, reply)
                if redone:
                    pending[0] = (computed, redone)
                else:
                    del pending[0]

    async def _write_per_slot(self, batches: Sequence[ComputedBatch]) -> None:
        """:meth:`write_all` on a cluster: each batch's writes per slot (:meth:`SlotScripts.write
        <stream_app.features.redis_slots.SlotScripts.write>`), its stale windows redone until
        every one is stored, then the next batch."""
        assert self._slots is not None
        for computed in batches:
            writes = computed.writes
            while writes:
                _, left, stale = await asyncio.to_thread(
                    self._slots.write, self._ttl_s, writes
                )
                writes = self._redo(computed, tuple(left), stale) if stale else ()

    # -- shared terminals ------------------------------------------------------------------

    async def _compute_shared(
        self,
        transactions: tuple[TransactionEvent, ...],
        labels: tuple[LabelEvent, ...],
        progress: Progress,
    ) -> ComputedBatch:
        """Store the batch's terminal changes, claim ``progress``, wait until every
        partition's claim reached the batch's newest transaction, then compute the rows
        on the terminals as they are then (changing only customer windows).

        Claims live in one hash, ``<prefix>progress``: ``c:<p>``, terminal changes of
        partition p stored up to that event time; ``d:<p>``, its rows' windows stored up
        to it (no row computed from then on, re-deliveries aside, is older, so terminal
        windows drop what is a horizon older than the smallest).
        """
        self._check_current(progress)
        if not (transactions or labels):
            if progress.through_us == math.inf:
                await self._claim_idle(progress)
            return self._compute((), ())
        await self._insert(transactions, labels, progress)
        if progress.through_us > self._claimed_us:
            self._claimed_us = progress.through_us
            await self._write_claims("c", progress.partitions, self._claimed_us)
        progress = dataclasses.replace(progress, through_us=self._claimed_us)
        if transactions:
            await self._await_progress(max(e.event_time_us for e in transactions), progress)
        cached = self._terminals
        await self._load(
            transactions, labels,
            [(t, cached[t].stored) for t in dict.fromkeys(map(_TERMINAL_ID, transactions))
             if t in cached],
        )  # fmt: skip
        return self._compute(transactions, labels, progress)

    async def _claim_idle(self, progress: Progress) -> None:
        """Claim for a caught-up, quiet worker (nothing in flight, every write stored): the
        largest claim of the other partitions seen at least ``idle_grace_s`` ago, as
        ``c`` and ``d`` both. Another worker's progress is a wake-up, as a record of a quiet
        partition is for the aligner: records of this worker's partitions of that time
        may still be in flight."""
        claims = await self._read_claims("c", progress.total_partitions)
        owned = set(progress.partitions)
        others = [claim for p, claim in enumerate(claims) if p not in owned]
        now = time.monotonic()
        seen = self._seen_claims
        seen.append((now, max(others, default=-math.inf)))
        while len(seen) > 1 and now - seen[1][0] >= progress.idle_grace_s:
            seen.popleft()
        claim = seen[0][1] if now - seen[0][0] >= progress.idle_grace_s else -math.inf
        if claim > self._claimed_us:
            self._claimed_us = self._stored_claim_us = claim
            await self._write_claims("cd", progress.partitions, claim)

    def _check_current(self, progress: Progress) -> None:
        if progress.generation < self._superseded_before:
            raise Superseded(
                f"a batch of generation {progress.generation} was computed after a rebalance "
                f"(generation {self._superseded_before}); it is redelivered"
            )

    async def _insert(
        self,
        transactions: tuple[TransactionEvent, ...],
        labels: tuple[LabelEvent, ...],
        progress: Progress,
    ) -> None:
        """Add the batch to its terminals' windows in Redis (compare-and-set; read again
        and redone when another worker moved one)."""
        done = await self._read_claims("d", progress.total_partitions)
        cutoff = min(done) - self._terminal_horizon_us
        ids = list(dict.fromkeys(chain(map(_TERMINAL_ID, labels), map(_TERMINAL_ID, transactions))))
        cached = self._terminals
        while True:
            held = [(t, cached[t].stored) for t in ids if t in cached]
            missing = [t for t in ids if t not in cached]
            replies = await self._read([], missing, held)
            self._install([], [*missing, *(t for t, _ in held)], replies)
            windows = {t: cached[t].window for t in ids}
            touched = insert_terminals(self._features, windows, transactions, labels, cutoff)
            writes = _changes({t: cached[t] for t in touched}, self.terminal_key)
            stale = {write.entity_id for write in writes}
            for write in await self._write_now(writes) if writes else ():
                stale.discard(write.entity_id)
                entry = cached[write.entity_id]
                entry.stored = entry.version
            if not stale:
                return
            for t in stale:  # another worker moved it: start again from the stored state
                cached.pop(t, None)

    async def _read_claims(self, kind: str, partitions: int) -> list[float]:
        """The claims ``<kind>:<p>`` of every partition (-inf where there is none yet)."""
        values = await self._client.hmget(
            self._progress_key, [f"{kind}:{p}" for p in range(partitions)]
        )
        return [-math.inf if value is None else float(value) for value in values]

    async def _write_claims(self, kinds: str, partitions: Sequence[int], claim: float) -> None:
        """Set the claims of each of ``kinds`` (``c``, ``d``) of ``partitions`` to ``claim``."""
        await self._client.hset(
            self._progress_key,
            mapping={f"{kind}:{p}": repr(claim) for p in partitions for kind in kinds},
        )

    async def _write_now(self, writes: Sequence[_Write]) -> list[_Write]:
        """Store ``writes`` with compare-and-set at once: those stored (on a single Redis
        all or, when one is stale, none; on a cluster per slot)."""
        if self._slots is not None:
            stored, _, _ = await asyncio.to_thread(self._slots.write, self._ttl_s, writes)
            return stored
        return [] if await self._write_script(args=self._args(writes)) else list(writes)

    async def _await_progress(self, t: int, progress: Progress) -> None:
        """Return once every partition's claim ``c:<p>`` is at or after ``t``."""
        delay, longest = PROGRESS_POLL_S
        while True:
            if min(await self._read_claims("c", progress.total_partitions)) >= t:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
            self._check_current(progress)

    # -- reading ---------------------------------------------------------------------------

    async def _load(
        self, transactions: Sequence[TransactionEvent], labels: Sequence[LabelEvent],
        held: Sequence[tuple[str, int]] = (),
    ) -> None:  # fmt: skip
        """Cache the batch's windows not cached yet, and the ``held`` terminals (id, version
        cached) that moved; again while a redone write drops some meanwhile."""
        customers, terminals = self._missing(transactions, labels)
        while customers or terminals or held:
            replies = await self._read(customers, terminals, held)
            self._install(customers, [*terminals, *(t for t, _ in held)], replies)
            held = ()
            customers, terminals = self._missing(transactions, labels)

    def _missing(
        self, transactions: Sequence[TransactionEvent], labels: Sequence[LabelEvent]
    ) -> tuple[list[str], list[str]]:
        cached_customers, cached_terminals = self._customers, self._terminals
        customers = [
            key
            for key in dict.fromkeys(
                chain(map(_CUSTOMER_ID, labels), map(_CUSTOMER_ID, transactions))
            )
            if key not in cached_customers
        ]
        terminals = [
            key
            for key in dict.fromkeys(
                chain(map(_TERMINAL_ID, labels), map(_TERMINAL_ID, transactions))
            )
            if key not in cached_terminals
        ]
        wanted = len(customers) + len(terminals)
        cached = len(self._customers) + len(self._terminals)
        if wanted and cached and cached + wanted > self._max_cached:
            self._forget()  # bounded memory: start over, no recency bookkeeping
            return self._missing(transactions, labels)
        return customers, terminals

    async def _read(
        self, customers: Sequence[str], terminals: Sequence[str],
        held: Sequence[tuple[str, int]] = (),
    ) -> list[tuple[int, bytes | None]]:  # fmt: skip
        """``(version, state)`` per key, customers, terminals, then the ``held`` terminals
        (``(0, b"")`` for a missing key; state None for a held one that did not move)."""
        terminal_key = self.terminal_key
        keys = list(map(self.customer_key, customers))
        keys += map(terminal_key, terminals)
        if self._slots is not None:
            keys += [terminal_key(t) for t, _ in held]
            versions = [version for _, version in held]
            return await asyncio.to_thread(self._slots.read, keys, versions)
        args = [_ENCODER.encode(keys)]
        if held:
            keys += [terminal_key(t) for t, _ in held]
            args = [_ENCODER.encode(keys), _ENCODER.encode([version for _, version in held])]
        header, *states = await self._read_script(args=args)
        return list(zip(_READ_HEADER.decode(header), states, strict=True))

    def _install(
        self,
        customers: Sequence[str],
        terminals: Sequence[str],
        replies: Sequence[tuple[int, bytes | None]],
    ) -> None:
        """Cache the windows read (a held terminal that did not move, state None, stays)."""
        for customer_id, (version, state) in zip(customers, replies, strict=False):
            self._customers[customer_id] = _customer(version, state, self._width)
        for terminal_id, (version, state) in zip(terminals, replies[len(customers) :], strict=True):
            if state is not None:
                self._terminals[terminal_id] = _terminal(version, state)

    # -- computing -------------------------------------------------------------------------

    def _compute(
        self,
        transactions: tuple[TransactionEvent, ...],
        labels: tuple[LabelEvent, ...],
        progress: Progress | None = None,
    ) -> ComputedBatch:
        """The batch on the cached windows; with ``progress``, the terminals took it
        already (:meth:`_insert`) and are only read."""
        inserted = progress is not None
        cached_customers, cached_terminals = self._customers, self._terminals
        customers: dict[str, _Cached[CustomerWindow]] = {}
        terminals: dict[str, _Cached[TerminalWindow]] = {}
        changing = []
        for label in labels:  # genuine labels that withdraw nothing change no window
            customer = cached_customers[label.customer_id]
            tx_id = label.transaction_id
            if inserted:
                if label.is_fraud or _labelled(customer.window, tx_id):
                    changing.append(label)
                    customers[label.customer_id] = customer
                continue
            terminal = cached_terminals[label.terminal_id]
            if (
                label.is_fraud
                or _labelled(customer.window, tx_id)
                or _labelled(terminal.window, tx_id)
            ):
                changing.append(label)
                customers[label.customer_id] = customer
                terminals[label.terminal_id] = terminal
        for customer_id in dict.fromkeys(map(_CUSTOMER_ID, transactions)):
            customers[customer_id] = cached_customers[customer_id]
        for terminal_id in dict.fromkeys(map(_TERMINAL_ID, transactions)):
            terminals[terminal_id] = cached_terminals[terminal_id]
        customer_windows = {key: entry.window for key, entry in customers.items()}
        terminal_windows = {key: entry.window for key, entry in terminals.items()}
        features = apply_batch(
            self._features, customer_windows, terminal_windows, transactions, changing,
            terminals_inserted=inserted,
        )  # fmt: skip
        if self._slots is not None and not inserted and features.duplicate.any():
            complete_terminals(self._features, transactions, features, terminal_windows)
        writes = _changes(customers, self.customer_key)
        if not inserted:
            writes += _changes(terminals, self.terminal_key)
        return ComputedBatch(features, transactions, tuple(changing), tuple(writes), progress)

    # -- writing ---------------------------------------------------------------------------

    def _args(self, writes: Sequence[_Write]) -> list[Any]:
        keys, versions, states, _ = zip(*writes, strict=True)
        sizes = list(map(len, states))
        return [self._ttl_s, _ENCODER.encode((keys, versions, sizes)), b"".join(states)]

    def _redo(
        self, computed: ComputedBatch, writes: tuple[_Write, ...], reply: Sequence[Any]
    ) -> tuple[_Write, ...]:
        """The writes again, stale ones recomputed: the batch's events on their fresh states.

        The script wrote nothing, so the writes that were not stale are kept as they were.
        """
        stale: dict[int, tuple[Any, Any]] = {
            int(reply[at]) - 1: (reply[at + 1], reply[at + 2]) for at in range(0, len(reply), 3)
        }
        customer_prefix = self._customer_prefix
        customers: dict[str, _Cached[CustomerWindow]] = {}
        terminals: dict[str, _Cached[TerminalWindow]] = {}
        for index, (version, state) in stale.items():
            key, _, _, entity_id = writes[index]
            if key.startswith(customer_prefix):
                customers[entity_id] = _customer(version, state, self._width)
                self._customers.pop(entity_id, None)  # later batches read it again
            else:
                terminals[entity_id] = _terminal(version, state)
                self._terminals.pop(entity_id, None)
        customer_windows = {key: entry.window for key, entry in customers.items()}
        terminal_windows = {key: entry.window for key, entry in terminals.items()}
        inserted = computed.progress is not None
        if inserted:  # rows of the terminals as cached (only re-delivered rows differ)
            terminal_windows = {
                t: entry.window
                for t in map(_TERMINAL_ID, computed.transactions)
                if (entry := self._terminals.get(t)) is not None
            }
        apply_batch(
            self._features, customer_windows, terminal_windows, computed.transactions,
            computed.labels, terminals_inserted=inserted,
        )  # fmt: skip
        kept = [write for index, write in enumerate(writes) if index not in stale]
        return (
            *kept,
            *_changes(customers, self.customer_key),
            *_changes(terminals, self.terminal_key),
        )


@dataclass(frozen=True)
class RedisStoreConfig:
    """What a :class:`RedisWindowStore` needs, in the worker or in its window process."""

    connection: RedisConnection | str  # or a bare URL (no login, no TLS files)
    feature_set: FeatureSet
    key_prefix: str
    ttl_days: int
    redis_timeout_s: float
    pseudonym_key: bytes = field(default=b"", repr=False)  # secret: see stream_app.pseudonyms
    cluster: ClusterOptions = field(default_factory=ClusterOptions)  # if it is a cluster

    def open(self) -> RedisWindowStore:
        """A store on its own clients (an asyncio one, and a synchronous one for the writes
        from a thread, and every call on a cluster); :meth:`RedisWindowStore.close` closes
        them."""
        timeout = self.redis_timeout_s
        connection = redis_connection(self.connection)
        client = connection.async_client(socket_timeout=timeout, socket_connect_timeout=timeout)
        writer = connection.client(socket_timeout=timeout, socket_connect_timeout=timeout)
        return RedisWindowStore(
            client,
            self.feature_set,
            key_prefix=self.key_prefix,
            ttl_days=self.ttl_days,
            writer=writer,
            owns_clients=True,
            pseudonym_key=self.pseudonym_key,
            cluster=self.cluster if connection.cluster else None,
        )


_CUSTOMER_ID = attrgetter("customer_id")
_TERMINAL_ID = attrgetter("terminal_id")


def _until_stale(script: Any, arg_lists: Sequence[list[Any]]) -> tuple[int, Any]:
    """Run the write script (synchronous client) on each argument list in order until a
    write is stale: (how many were stored, the stale reply or None)."""
    for index, args in enumerate(arg_lists):
        reply = script(args=args)
        if reply:
            return index, reply
    return len(arg_lists), None


async def _until_stale_async(script: Any, arg_lists: Sequence[list[Any]]) -> tuple[int, Any]:
    """:func:`_until_stale` on the asyncio client."""
    for index, args in enumerate(arg_lists):
        reply = await script(args=args)
        if reply:
            return index, reply
    return len(arg_lists), None


def _labelled(window: CustomerWindow | TerminalWindow, transaction_id: str) -> bool:
    """Whether ``window`` holds a fraud label of ``transaction_id``."""
    labels = window.fraud_labels
    if labels:
        for known, _, _ in labels:
            if known == transaction_id:
                return True
    return False


def _customer(version: Any, state: Any, width: int) -> _Cached[CustomerWindow]:
    if not state:
        empty = CustomerWindow()
        return _Cached(empty, encode_window(empty), 0, 0)
    raw = bytes(state)
    return _Cached(decode_customer(raw, width), raw, int(version), int(version))


def _terminal(version: Any, state: Any) -> _Cached[TerminalWindow]:
    if not state:
        empty = TerminalWindow()
        return _Cached(empty, encode_window(empty), 0, 0)
    raw = bytes(state)
    return _Cached(decode_terminal(raw), raw, int(version), int(version))


def _changes(entries: dict[str, _Cached[W]], key: Callable[[str], str]) -> list[_Write]:
    """Writes for the entries whose window changed; each entry moves to its new version."""
    writes = []
    for entity_id, entry in entries.items():
        after = encode_window(entry.window)
        if after != entry.state:
            writes.append(_Write(key(entity_id), entry.version, after, entity_id))
            entry.state = after
            entry.version += 1
    return writes
