"""``fraudstream demo``: the whole system on one machine, from nothing to a scored day.

1. Simulate a history (``DemoPlan``): warm-up days, then the demo day.
2. Use the model bundle cached in ``.run/demo/bundle`` when it was trained for this plan,
   else train one on the warm-up days with ``python -m training.demo_model`` (the product's
   training run with fewer epochs, in a child process: the serving package never imports
   torch).
3. Start a private tansu broker and redis-server on free loopback ports and a worker child
   process in the ``demo`` namespace (scores published, so the demo knows when it is done).
4. Start the operations console (``fraudstream console``, a child process) on a free
   loopback port for the analyst ``demo``, whose token it writes to
   ``.run/demo/console-tokens`` (mode 0600), and print its URL.
5. Replay the history at max speed, print the demo day's alerts as they arrive, and close
   with events, alerts, precision and recall against the simulated labels, events/s and
   the ingest-to-alert latency. With ``hold_console`` the console (and the worker, broker
   and Redis behind it) then stays up until Ctrl-C.

Everything started is stopped at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from stream_app.contracts.records import Alert, to_epoch_us
from stream_app.errors import BundleError, LocalServiceError
from stream_app.local_services import free_port, start_redis, start_tansu
from stream_app.scoring.bundle import load_bundle
from stream_app.settings import Settings
from stream_app.sources.history import TransactionHistory
from stream_app.sources.jsonl import write_jsonl
from stream_app.sources.simulator import simulate
from stream_app.time import MICROS_PER_DAY
from stream_app.tools.alerts_consumer import consume_alerts, format_alert
from stream_app.tools.console_process import console_process
from stream_app.tools.replay import replay, replay_order
from stream_app.tools.topic_reader import read_topic
from stream_app.tools.worker_process import WorkerProcess, log_tail, worker_process
from stream_app.topics import ensure_topics_sync, stream_topics

DEMO_NAMESPACE = "demo"
STALL_TIMEOUT_S = 120.0
ALERT_GRACE_S = 1.0
CONSOLE_ANALYST = "demo"
_EPOCH = dt.date(1970, 1, 1)

Out = Callable[[str], None]


@dataclass(frozen=True)
class DemoPlan:
    """What the demo simulates and trains on; the bundle cache is keyed by it."""

    customers: int = 1000
    terminals: int = 2000
    warmup_days: int = 40
    """Days before the demo day: the training data, and replayed to fill the windows."""
    seed: int = 11
    start_date: dt.date = dt.date(2018, 4, 1)
    feature_set: str = "default"
    label_delay_days: int = 7

    @property
    def demo_day(self) -> dt.date:
        """The day whose alerts the demo shows and evaluates."""
        return self.start_date + dt.timedelta(days=self.warmup_days)

    def history(self) -> TransactionHistory:
        """The simulated history: the warm-up days and the demo day."""
        return simulate(
            self.customers,
            self.terminals,
            self.warmup_days + 1,
            self.start_date,
            self.seed,
            label_delay_days=self.label_delay_days,
        )

    def key(self) -> str:
        """Canonical JSON of the plan (the bundle cache key)."""
        return json.dumps(asdict(self), default=str, sort_keys=True)


@dataclass(frozen=True)
class DemoSummary:
    """The figures the demo closes with."""

    transactions: int
    demo_day_transactions: int
    demo_day_frauds: int
    alerts: int
    true_alerts: int
    events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def precision(self) -> float:
        """Share of the demo day's alerts that were frauds."""
        return self.true_alerts / self.alerts if self.alerts else 0.0

    @property
    def recall(self) -> float:
        """Share of the demo day's frauds that raised an alert."""
        return self.true_alerts / self.demo_day_frauds if self.demo_day_frauds else 0.0

    def lines(self, day: dt.date) -> list[str]:
        """The closing summary, one figure a line."""
        return [
            f"events replayed        {self.transactions:,} transactions "
            f"({self.demo_day_transactions:,} on {day})",
            f"alerts on {day}    {self.alerts:,} ({self.true_alerts} frauds among them, "
            f"{self.demo_day_frauds} frauds that day)",
            f"precision / recall     {self.precision:.3f} / {self.recall:.3f}",
            f"throughput             {self.events_per_s:,.0f} events/s "
            "(first event sent to last event scored)",
            f"latency ingest->alert  p50 {self.latency_p50_ms:,.0f} ms, p99 "
            f"{self.latency_p99_ms:,.0f} ms (at max replay speed: includes the backlog)",
        ]


def run_demo(
    run_dir: Path, plan: DemoPlan, out: Out = print, *, hold_console: bool = False
) -> DemoSummary:
    """Run the demo described in the module docstring; returns its summary."""
    demo_dir = run_dir / "demo"
    out(
        f"simulating {plan.warmup_days} warm-up days + {plan.demo_day} "
        f"({plan.customers} customers, {plan.terminals} terminals)"
    )
    history = plan.history()
    bundle = demo_bundle(demo_dir, plan, history, out)
    with start_tansu() as kafka, start_redis() as redis_server:
        out(f"tansu on {kafka.address}, redis-server on {redis_server.address}")
        settings = Settings.from_env(
            kafka_bootstrap=kafka.address,
            redis_url=redis_server.url,
            namespace=DEMO_NAMESPACE,
            model_dir=str(bundle),
            label_delay_days=plan.label_delay_days,
            publish_scores=True,
            web_port=free_port(),
        )
        topics = stream_topics(DEMO_NAMESPACE)
        ensure_topics_sync(
            kafka.address, topics.all, settings.topic_partitions, settings.topic_replication
        )
        tokens = _console_tokens(demo_dir / "console-tokens")
        console_settings = settings.replace(
            console_tokens=tokens,
            console_port=free_port(),
            console_audit_log=str(demo_dir / "console-audit.jsonl"),
        )
        with (
            worker_process(settings, demo_dir / "worker.log") as worker,
            console_process(console_settings, demo_dir / "console.log") as console_url,
        ):
            out(f"worker pid {worker.process.pid} healthy (log {worker.log_path})")
            out(
                f"console {console_url} (log in as {CONSOLE_ANALYST!r} with the token in "
                f"{demo_dir / 'console-tokens'})"
            )
            summary = asyncio.run(_stream(history, plan, worker, out))
            for line in summary.lines(plan.demo_day):
                out(line)
            if hold_console:
                _hold(console_url, worker, out)
    return summary


def _console_tokens(path: Path) -> str:
    """A fresh token for the analyst ``demo``, written to ``path`` (mode 0600); returns the
    tokens file's text."""
    text = f"{CONSOLE_ANALYST}:{secrets.token_urlsafe(24)}\n"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return text


def _hold(console_url: str, worker: WorkerProcess, out: Out) -> None:
    """Keep everything up for the console until Ctrl-C (or SIGTERM)."""
    out(f"the console stays up at {console_url}; Ctrl-C stops everything")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            worker.check_alive()
            time.sleep(1.0)


def demo_bundle(demo_dir: Path, plan: DemoPlan, history: TransactionHistory, out: Out) -> Path:
    """The cached bundle for ``plan``; trained first when there is none, or it was trained
    for another plan or with other feature code."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    bundle = demo_dir / "bundle"
    key_file = demo_dir / "bundle.plan.json"
    if key_file.is_file() and key_file.read_text() == plan.key() and _usable(bundle):
        out(f"using the cached model bundle {bundle}")
        return bundle
    train_file = demo_dir / "train.jsonl"
    demo_start_us = (plan.demo_day - _EPOCH).days * MICROS_PER_DAY
    cut = int(np.searchsorted(history.event_time_us, demo_start_us, side="left"))
    write_jsonl(history.slice(0, cut), train_file)
    out(f"training a model bundle on {cut:,} warm-up transactions (cached in {bundle})")
    command = train_command(train_file, bundle, plan)
    started = time.monotonic()
    result = subprocess.run(command, check=False)  # noqa: S603 - our own interpreter/module
    if result.returncode != 0 or not (bundle / "manifest.json").is_file():
        raise LocalServiceError(
            f"training the demo model failed (exit code {result.returncode}) running "
            f"{' '.join(command)}; fix the error printed above and run the demo again"
        )
    key_file.write_text(plan.key())
    out(f"trained in {time.monotonic() - started:.0f} s")
    return bundle


def _usable(bundle: Path) -> bool:
    """Whether ``bundle`` loads and was trained with the feature code running now."""
    try:
        load_bundle(bundle)
    except BundleError:
        return False
    return True


def train_command(train_file: Path, bundle: Path, plan: DemoPlan) -> list[str]:
    """The command line training the demo's small model (``training.demo_model``)."""
    return [
        sys.executable, "-m", "training.demo_model",
        "--data", str(train_file),
        "--out", str(bundle),
        "--feature-set", plan.feature_set,
        "--label-delay-days", str(plan.label_delay_days),
        "--seed", str(plan.seed),
    ]  # fmt: skip


@dataclass(eq=False)
class _Tracker:
    """Send times, scores and alerts seen during the demo stream."""

    row_of: dict[str, int]
    sent_at: npt.NDArray[np.float64]
    expected: int
    demo_start_us: int
    out: Out
    done: asyncio.Event = field(default_factory=asyncio.Event)
    scored: int = 0
    first_sent: float | None = None
    last_scored: float = 0.0
    alert_rows: list[int] = field(default_factory=list)
    alert_latency_s: list[float] = field(default_factory=list)

    def on_sent(self, rows: npt.NDArray[np.int64], at: float) -> None:
        self.sent_at[rows] = at
        if self.first_sent is None:
            self.first_sent = at

    def on_scores(self, _tp: TopicPartition, records: Sequence[Any]) -> None:
        self.scored += len(records)
        self.last_scored = time.time()
        if self.scored >= self.expected:
            self.done.set()

    def on_alert(self, alert: Alert) -> None:
        received = time.time()
        if to_epoch_us(alert.event_time) < self.demo_start_us:
            return
        row = self.row_of[alert.transaction_id]
        self.alert_rows.append(row)
        self.alert_latency_s.append(received - float(self.sent_at[row]))
        self.out(format_alert(alert))


async def _stream(
    history: TransactionHistory, plan: DemoPlan, worker: WorkerProcess, out: Out
) -> DemoSummary:
    settings = worker.settings
    topics = stream_topics(settings.namespace)
    demo_start_us = (plan.demo_day - _EPOCH).days * MICROS_PER_DAY
    order = replay_order(history, None, demo_start_us + MICROS_PER_DAY)
    tracker = _Tracker(
        row_of={str(t): i for i, t in enumerate(history.transaction_id)},
        sent_at=np.full(len(history), np.nan),
        expected=order.transactions,
        demo_start_us=demo_start_us,
        out=out,
    )
    stop = asyncio.Event()
    readers = [
        asyncio.create_task(
            consume_alerts(
                settings.kafka_bootstrap, topics.alerts, tracker.on_alert, follow=True, stop=stop
            )
        ),
        asyncio.create_task(
            read_topic(
                settings.kafka_bootstrap, topics.scores, tracker.on_scores, follow=True, stop=stop
            )
        ),
    ]
    try:
        out(
            f"replaying {order.transactions:,} transactions and {order.labels:,} labels "
            "at max speed; alerts of the demo day:"
        )
        await replay(
            history,
            order,
            settings.kafka_bootstrap,
            topics,
            None,
            progress=False,
            on_sent=tracker.on_sent,
        )
        await _wait_scored(tracker, worker)
        await asyncio.sleep(ALERT_GRACE_S)
    finally:
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)
    return _summary(history, tracker, demo_start_us)


async def _wait_scored(tracker: _Tracker, worker: WorkerProcess) -> None:
    last_progress, last_count = time.monotonic(), -1
    while not tracker.done.is_set():
        worker.check_alive()
        if tracker.scored != last_count:
            last_progress, last_count = time.monotonic(), tracker.scored
        elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
            raise LocalServiceError(
                f"the worker scored {tracker.scored:,} of {tracker.expected:,} transactions and "
                f"then nothing for {STALL_TIMEOUT_S:.0f} s; its log {worker.log_path} ends "
                f"with:\n{log_tail(worker.log_path)}"
            )
        await asyncio.sleep(0.2)


def _summary(history: TransactionHistory, tracker: _Tracker, demo_start_us: int) -> DemoSummary:
    day = (history.event_time_us >= demo_start_us) & (
        history.event_time_us < demo_start_us + MICROS_PER_DAY
    )
    alerted = np.unique(np.asarray(tracker.alert_rows, dtype=np.int64))
    latency_ms = np.asarray(tracker.alert_latency_s, dtype=np.float64) * 1000
    elapsed = tracker.last_scored - (tracker.first_sent or tracker.last_scored)
    return DemoSummary(
        transactions=tracker.expected,
        demo_day_transactions=int(day.sum()),
        demo_day_frauds=int(history.is_fraud[day].sum()),
        alerts=len(alerted),
        true_alerts=int(history.is_fraud[alerted].sum()),
        events_per_s=tracker.scored / elapsed if elapsed > 0 else 0.0,
        latency_p50_ms=float(np.percentile(latency_ms, 50)) if len(latency_ms) else 0.0,
        latency_p99_ms=float(np.percentile(latency_ms, 99)) if len(latency_ms) else 0.0,
    )
