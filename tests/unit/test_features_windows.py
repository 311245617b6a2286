"""Hand-computed window edges, checked on both executions (batch and incremental replay)."""

from __future__ import annotations

import pytest

from stream_app.errors import ConfigError
from stream_app.features.spec import (
    FeatureSet,
    feature_hash,
    feature_set,
    handbook_columns,
    supported_columns,
)
from stream_app.sources.history import NO_LABEL_US
from tests.unit.feature_histories import DAY, HOUR, T0, both_executions, column, history_of

HANDBOOK = feature_set("handbook")
DEFAULT = feature_set("default")
NEVER = NO_LABEL_US


def test_handbook_set_is_the_15_published_model_inputs_in_order() -> None:
    assert HANDBOOK.columns == (
        "TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT",
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_7DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
        "CUSTOMER_ID_NB_TX_30DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
        "TERMINAL_ID_NB_TX_1DAY_WINDOW", "TERMINAL_ID_RISK_1DAY_WINDOW",
        "TERMINAL_ID_NB_TX_7DAY_WINDOW", "TERMINAL_ID_RISK_7DAY_WINDOW",
        "TERMINAL_ID_NB_TX_30DAY_WINDOW", "TERMINAL_ID_RISK_30DAY_WINDOW",
    )  # fmt: skip
    assert (HANDBOOK.customer_windows_days, HANDBOOK.terminal_windows_days) == ((1, 7, 30),) * 2
    assert (HANDBOOK.label_delay_days, HANDBOOK.sequence_length) == (7, 5)


def test_default_set_extends_the_handbook_set_with_named_columns() -> None:
    assert DEFAULT.columns[:15] == HANDBOOK.columns
    assert 20 <= len(DEFAULT.columns) <= 26
    assert set(DEFAULT.columns) <= set(supported_columns((1, 7, 30), (1, 7, 30)))


def test_unknown_feature_set_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*handbook, default"):
        feature_set("nope")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"columns": ("TX_AMOUNT", "TX_AMOUNT")}, "repeated"),
        ({"columns": ("amount_in_dollars",)}, "amount_in_dollars"),
        ({"customer_windows_days": (7, 1)}, "ascending"),
        ({"terminal_windows_days": (0, 7)}, "positive"),
        ({"label_delay_days": -1}, "label_delay_days=-1"),
        ({"sequence_length": 0}, "sequence_length=0"),
    ],
)
def test_bad_feature_sets_are_refused(changes: dict[str, object], match: str) -> None:
    spec: dict[str, object] = {"name": "x", "columns": ("TX_AMOUNT",), **changes}
    with pytest.raises(ConfigError, match=match):
        FeatureSet(**spec)  # type: ignore[arg-type]


def test_feature_hash_is_stable_and_follows_the_spec() -> None:
    assert feature_hash(DEFAULT) == feature_hash(feature_set("default"))
    assert len(feature_hash(DEFAULT)) == 64
    assert feature_hash(DEFAULT) != feature_hash(HANDBOOK)
    assert feature_hash(DEFAULT) != feature_hash(feature_set("default", label_delay_days=3))


def test_handbook_columns_follow_the_windows() -> None:
    assert handbook_columns((2,), (3,)) == (
        "TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT",
        "CUSTOMER_ID_NB_TX_2DAY_WINDOW", "CUSTOMER_ID_AVG_AMOUNT_2DAY_WINDOW",
        "TERMINAL_ID_NB_TX_3DAY_WINDOW", "TERMINAL_ID_RISK_3DAY_WINDOW",
    )  # fmt: skip


def test_weekend_and_night_come_from_utc() -> None:
    times = [
        T0,  # Sunday 00:00
        T0 + DAY + 6 * HOUR + 3_599_999_999,  # Monday 06:59:59.999999
        T0 + DAY + 7 * HOUR,  # Monday 07:00
        T0 + 6 * DAY + 23 * HOUR,  # Saturday 23:00
        T0 + 7 * DAY,  # Sunday again
    ]
    table = both_executions(history_of([("c", "k", t, 1.0, 0, NEVER) for t in times]), HANDBOOK)
    assert column(table, "TX_DURING_WEEKEND") == [1, 0, 0, 1, 1]
    assert column(table, "TX_DURING_NIGHT") == [1, 1, 0, 0, 1]


def test_customer_windows_are_right_closed_at_exactly_n_days() -> None:
    rows = [
        ("c", "k1", T0, 10.0, 0, NEVER),
        ("c", "k2", T0 + DAY, 20.0, 0, NEVER),  # T0 is exactly 1 day back: out of 1d
        ("c", "k3", T0 + DAY + 1, 60.0, 0, NEVER),
        ("c", "k4", T0 + 7 * DAY, 30.0, 0, NEVER),  # T0 out of 7d, in 30d
        ("c", "k5", T0 + 30 * DAY, 5.0, 0, NEVER),  # T0 out of 30d
        ("other", "k1", T0 + 30 * DAY, 99.0, 0, NEVER),
    ]
    table = both_executions(history_of(rows), HANDBOOK)
    assert column(table, "CUSTOMER_ID_NB_TX_1DAY_WINDOW") == [1, 1, 2, 1, 1, 1]
    assert column(table, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == [10, 20, 40, 30, 5, 99]
    assert column(table, "CUSTOMER_ID_NB_TX_7DAY_WINDOW") == [1, 2, 3, 3, 1, 1]
    assert column(table, "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW")[3] == pytest.approx(110 / 3)
    assert column(table, "CUSTOMER_ID_NB_TX_30DAY_WINDOW") == [1, 2, 3, 4, 4, 1]
    assert column(table, "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW")[4] == pytest.approx(115 / 4)


def test_ties_count_only_the_rows_applied_so_far() -> None:
    rows = [("c", "k", T0, 10.0, 0, NEVER), ("c", "k", T0, 30.0, 0, NEVER),
            ("c", "k", T0, 50.0, 0, NEVER)]  # fmt: skip
    table = both_executions(history_of(rows), DEFAULT)
    assert column(table, "CUSTOMER_ID_NB_TX_1DAY_WINDOW") == [1, 2, 3]
    assert column(table, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == [10, 20, 30]
    assert column(table, "terminal_nb_tx_1d_undelayed") == [1, 1, 1]  # order-free
    assert column(table, "customer_seconds_since_prev_tx_capped_30d") == [30 * 86_400, 0, 0]


def test_terminal_window_ends_exactly_at_the_delay() -> None:
    rows = [
        ("a", "k", T0, 1.0, 1, T0 + 7 * DAY),  # fraud, known after 7 days
        ("b", "k", T0 + 7 * DAY - 1, 1.0, 0, NEVER),  # T0 not yet D days back
        ("c", "k", T0 + 7 * DAY, 1.0, 0, NEVER),  # T0 exactly D days back: in (t-8d, t-7d]
        ("d", "k", T0 + 8 * DAY, 1.0, 0, NEVER),  # T0 exactly D+1 days back: out of 1d
        ("e", "k", T0 + 37 * DAY, 1.0, 0, NEVER),  # exactly D+30 days back: out of 30d
    ]
    table = both_executions(history_of(rows), HANDBOOK)
    assert column(table, "TERMINAL_ID_NB_TX_1DAY_WINDOW") == [0, 0, 1, 0, 0]
    assert column(table, "TERMINAL_ID_RISK_1DAY_WINDOW") == [0, 0, 1, 0, 0]
    assert column(table, "TERMINAL_ID_NB_TX_7DAY_WINDOW") == [0, 0, 1, 1, 0]
    assert column(table, "TERMINAL_ID_RISK_7DAY_WINDOW") == [0, 0, 1, 1, 0]
    assert column(table, "TERMINAL_ID_NB_TX_30DAY_WINDOW") == [0, 0, 1, 1, 3]
    assert column(table, "TERMINAL_ID_RISK_30DAY_WINDOW") == [0, 0, 1, 1, 0]


def test_terminal_risk_waits_for_the_label_time() -> None:
    rows = [
        ("a", "k", T0, 1.0, 1, T0 + 10 * DAY),  # fraud label known late, after 10 days
        ("b", "k", T0 + 1, 1.0, 1, T0 + 2 * DAY),  # fraud label known early
        ("c", "k", T0 + 8 * DAY, 1.0, 0, NEVER),
        ("d", "k", T0 + 10 * DAY, 1.0, 0, NEVER),
    ]
    table = both_executions(history_of(rows), HANDBOOK)
    assert column(table, "TERMINAL_ID_NB_TX_7DAY_WINDOW") == [0, 0, 2, 2]
    assert column(table, "TERMINAL_ID_RISK_7DAY_WINDOW") == [0, 0, 0.5, 1]


def test_customer_frauds_count_once_their_label_is_known() -> None:
    rows = [
        ("c", "k", T0, 10.0, 1, T0 + 2 * DAY),
        ("c", "k", T0 + DAY, 10.0, 1, T0 + DAY),  # label known at once
        ("c", "k", T0 + 2 * DAY, 10.0, 0, NEVER),
        ("c", "k", T0 + 30 * DAY, 10.0, 0, NEVER),  # T0 exactly 30 days back: out
    ]
    table = both_executions(history_of(rows), DEFAULT)
    assert column(table, "customer_nb_fraud_known_30d") == [0, 1, 2, 1]


def test_ratios_are_one_when_the_mean_is_zero() -> None:
    rows = [("c", "k", T0, 0.0, 0, NEVER), ("c", "k", T0 + HOUR, 0.0, 0, NEVER),
            ("c", "k", T0 + 2 * DAY, 50.0, 0, NEVER)]  # fmt: skip
    table = both_executions(history_of(rows), DEFAULT)
    assert column(table, "amount_to_customer_mean_30d_ratio") == pytest.approx([1, 1, 3])
    assert column(table, "customer_avg_amount_1d_to_30d_ratio") == pytest.approx([1, 1, 3])
    assert column(table, "customer_seconds_since_prev_tx_capped_30d") == [
        30 * 86_400, 3_600, 2 * 86_400 - 3_600,
    ]  # fmt: skip


def test_sequences_are_the_customers_last_k_rows_oldest_first() -> None:
    rows = [(c, "k", T0 + i * HOUR, float(i), 0, NEVER) for i, c in enumerate("aabaaaaab")]
    table = both_executions(history_of(rows), HANDBOOK)
    assert table.sequence_index[0].tolist() == [-1, -1, -1, -1, 0]
    assert table.sequence_index[2].tolist() == [-1, -1, -1, -1, 2]
    assert table.sequence_index[7].tolist() == [3, 4, 5, 6, 7]
    assert table.sequence_index[8].tolist() == [-1, -1, -1, 2, 8]
