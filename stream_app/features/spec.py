"""Feature set definitions: the column names, their windows and the feature hash.

Columns are named from their parameters. The ``handbook`` set is exactly the Fraud
Detection Handbook's 15 model inputs (``TX_AMOUNT`` and the 14 engineered features) in
the handbook's order; ``default`` adds a few cheap customer/terminal features aimed at the
three fraud scenarios (large amounts, compromised terminals, leaked credentials with
inflated amounts).

Definitions, for a transaction of customer c at terminal k at time t (int64 µs, UTC),
with label delay D days; windows hold the transactions applied so far (the current one
included, later ones with the same time not yet): customer windows are right-closed
``(t - N days, t]``, terminal windows ``(t - (D+N) days, t - D days]`` with the fraud labels
whose ``label_time <= t``:

- ``TX_AMOUNT``: the transaction amount.
- ``TX_DURING_WEEKEND`` / ``TX_DURING_NIGHT``: Saturday or Sunday / hour <= 6, in UTC.
- ``CUSTOMER_ID_NB_TX_{N}DAY_WINDOW`` / ``CUSTOMER_ID_AVG_AMOUNT_{N}DAY_WINDOW``: count and
  mean amount of c's transactions in the window.
- ``TERMINAL_ID_NB_TX_{N}DAY_WINDOW`` / ``TERMINAL_ID_RISK_{N}DAY_WINDOW``: count of k's
  transactions in the delayed window and the fraction of them labelled fraud (0 if none).
- ``customer_seconds_since_prev_tx_capped_{M}d``: seconds since c's previous transaction,
  M days (the longest customer window) when there is none within M days.
- ``amount_to_customer_mean_{N}d_ratio``: amount / c's mean amount over N days (1 if 0).
- ``customer_avg_amount_{N}d_to_{M}d_ratio``: c's mean over N days / mean over M days
  (1 if 0).
- ``customer_nb_fraud_known_{M}d``: c's transactions in ``(t - M days, t]`` with a fraud
  label whose ``label_time <= t``.
- ``terminal_nb_tx_{N}d_undelayed``: k's transactions in ``(t - N days, t)``, plus one for
  the current transaction. Other transactions at the same time are left out: they may
  belong to other partitions, where the order of same-time events is not defined.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import ConfigError

HANDBOOK = "handbook"
DEFAULT = "default"
FEATURE_SET_NAMES = (HANDBOOK, DEFAULT)
IMPLEMENTATION_MODULES = ("spec.py", "batch.py", "incremental.py")
NIGHT_LAST_HOUR = 6
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
SATURDAY = 5


def handbook_columns(
    customer_windows_days: tuple[int, ...], terminal_windows_days: tuple[int, ...]
) -> tuple[str, ...]:
    """The handbook's feature names for these windows, in the published order."""
    names = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
    for n in customer_windows_days:
        names += [f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"]
    for n in terminal_windows_days:
        names += [f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", f"TERMINAL_ID_RISK_{n}DAY_WINDOW"]
    return tuple(names)


def supported_columns(
    customer_windows_days: tuple[int, ...], terminal_windows_days: tuple[int, ...]
) -> tuple[str, ...]:
    """Every column the executions can compute for these windows, in canonical order."""
    longest = customer_windows_days[-1]
    return (
        *handbook_columns(customer_windows_days, terminal_windows_days),
        f"customer_seconds_since_prev_tx_capped_{longest}d",
        *(f"amount_to_customer_mean_{n}d_ratio" for n in customer_windows_days),
        *(f"customer_avg_amount_{n}d_to_{longest}d_ratio" for n in customer_windows_days[:-1]),
        f"customer_nb_fraud_known_{longest}d",
        *(f"terminal_nb_tx_{n}d_undelayed" for n in terminal_windows_days),
    )


@dataclass(frozen=True)
class FeatureSet:
    """A named, ordered list of feature columns and the windows they are computed over."""

    name: str
    columns: tuple[str, ...]
    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_days: int = 7
    sequence_length: int = 5

    def __post_init__(self) -> None:
        for field in ("customer_windows_days", "terminal_windows_days"):
            windows = getattr(self, field)
            if not windows or any(n <= 0 for n in windows) or list(windows) != sorted(
                set(windows)
            ):
                raise ConfigError(
                    f"feature set {self.name!r}: {field}={windows!r}; use distinct positive "
                    "day counts in ascending order, e.g. (1, 7, 30)"
                )
        if self.label_delay_days < 0:
            raise ConfigError(
                f"feature set {self.name!r}: label_delay_days={self.label_delay_days}; "
                "use 0 or more days"
            )
        if self.sequence_length < 1:
            raise ConfigError(
                f"feature set {self.name!r}: sequence_length={self.sequence_length}; use 1 or more"
            )
        supported = supported_columns(self.customer_windows_days, self.terminal_windows_days)
        unknown = [c for c in self.columns if c not in supported]
        if unknown or len(set(self.columns)) != len(self.columns) or not self.columns:
            raise ConfigError(
                f"feature set {self.name!r}: columns {unknown or list(self.columns)!r} are "
                f"unknown, repeated or empty; choose distinct names from {', '.join(supported)}"
            )

    @property
    def customer_horizon_days(self) -> int:
        """How far back the customer windows reach: the longest one."""
        return self.customer_windows_days[-1]

    @property
    def terminal_horizon_days(self) -> int:
        """How far back the terminal windows reach: the label delay plus the longest one
        (terminal windows are delayed)."""
        return self.label_delay_days + self.terminal_windows_days[-1]


def feature_set(name: str, label_delay_days: int = 7) -> FeatureSet:
    """The ``handbook`` (its 15 model inputs) or ``default`` (handbook + 7) feature set."""
    windows = (1, 7, 30)
    if name == HANDBOOK:
        columns = handbook_columns(windows, windows)
    elif name == DEFAULT:
        columns = (
            *handbook_columns(windows, windows),
            "customer_seconds_since_prev_tx_capped_30d",
            "amount_to_customer_mean_7d_ratio",
            "amount_to_customer_mean_30d_ratio",
            "customer_avg_amount_1d_to_30d_ratio",
            "customer_avg_amount_7d_to_30d_ratio",
            "customer_nb_fraud_known_30d",
            "terminal_nb_tx_1d_undelayed",
        )
    else:
        raise ConfigError(
            f"unknown feature set {name!r}; choose one of {', '.join(FEATURE_SET_NAMES)}"
        )
    return FeatureSet(name, columns, windows, windows, label_delay_days)


def feature_hash(fs: FeatureSet) -> str:
    """sha256 of the spec's canonical JSON and the source of the modules that compute it."""
    digest = hashlib.sha256()
    canonical = json.dumps(dataclasses.asdict(fs), sort_keys=True, separators=(",", ":"))
    digest.update(canonical.encode())
    here = Path(__file__).resolve().parent
    for module in IMPLEMENTATION_MODULES:
        digest.update(b"\x00" + module.encode() + b"\x00")
        digest.update((here / module).read_bytes())
    return digest.hexdigest()
