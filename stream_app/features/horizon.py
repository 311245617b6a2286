"""How far back events shape the features at a moment: the warm-up a replay or a backtest
from a date needs so that its windows there hold what a run over the whole history holds.
"""

from __future__ import annotations

from stream_app.features.spec import FEATURE_SET_NAMES, FeatureSet, feature_set
from stream_app.time import MICROS_PER_DAY


def horizon_days(fs: FeatureSet) -> int:
    """The reach of ``fs``'s windows: its customer or its terminal horizon, whichever is
    longer."""
    return max(fs.customer_horizon_days, fs.terminal_horizon_days)


def warmup_us(label_delay_days: int) -> int:
    """The longest horizon of the feature sets with this label delay, in µs (37 days for
    the 1/7/30-day windows and a 7-day delay): the same for a replay, which knows no
    bundle, and for a backtest."""
    return MICROS_PER_DAY * max(
        horizon_days(feature_set(name, label_delay_days)) for name in FEATURE_SET_NAMES
    )
