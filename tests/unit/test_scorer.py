"""Scorer: one ONNX run per model per batch, score semantics, reasons, shapes, threads."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from stream_app.errors import BundleError, ConfigError, InputDataError
from stream_app.scoring import ModelBundle, Scorer, load_bundle
from stream_app.scoring.manifest import model_version
from stream_app.settings import Settings
from tests.unit.model_bundles import random_rows, tiny_bundle

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return load_bundle(tiny_bundle().path)


@pytest.fixture(scope="module")
def scorer(bundle: ModelBundle) -> Scorer:
    return Scorer(bundle)


class _CountingSession:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.calls: list[int] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.calls.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)


def test_scores_are_probabilities_and_alerts_follow_the_threshold(scorer: Scorer) -> None:
    rows = random_rows(tiny_bundle().feature_set, 300, seed=11)
    result = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    assert len(result) == 300
    for array in (result.score, result.autoencoder_error, result.sequence_probability):
        assert array.shape == (300,)
        assert np.all(np.isfinite(array))
    assert np.all((result.score >= 0) & (result.score <= 1))
    assert np.all((result.sequence_probability >= 0) & (result.sequence_probability <= 1))
    assert np.all(result.autoencoder_error >= 0)
    np.testing.assert_array_equal(
        result.is_alert, result.score.astype(np.float64) >= tiny_bundle().threshold
    )
    assert 0 < int(result.is_alert.sum()) < 300, "random weights should put rows on both sides"


def test_score_is_the_combined_model_of_the_other_two_outputs(
    scorer: Scorer, bundle: ModelBundle
) -> None:
    rows = random_rows(tiny_bundle().feature_set, 50, seed=12)
    result = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    combined = ort.InferenceSession(bundle.onnx_models["combined"])
    (expected,) = combined.run(None, {
        "features": rows.values,
        "reconstruction_error": result.autoencoder_error,
        "sequence_probability": result.sequence_probability,
    })
    np.testing.assert_array_equal(result.score, expected)


def test_reasons_are_the_alerts_three_largest_positive_contributions_with_raw_values(
    scorer: Scorer, bundle: ModelBundle
) -> None:
    rows = random_rows(tiny_bundle().feature_set, 40, seed=13)
    result = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    alerts = np.flatnonzero(result.is_alert)
    assert 0 < len(alerts) < 40
    np.testing.assert_array_equal(result.explained.rows, alerts)
    explainer = ort.InferenceSession(bundle.onnx_models["explainer"])
    (contributions,) = explainer.run(None, {
        "features": rows.values[alerts],
        "reconstruction_error": result.autoencoder_error[alerts],
        "sequence_probability": result.sequence_probability[alerts],
    })
    raw = np.column_stack([rows.values, result.autoencoder_error, result.sequence_probability])
    inputs = (*bundle.feature_columns, "autoencoder_error", "sequence_probability")
    assert scorer.inputs == inputs
    for i, reasons in zip(alerts, result.reasons_for(alerts), strict=True):
        row = contributions[list(alerts).index(i)]
        order = [j for j in np.argsort(-row, kind="stable")[:3] if row[j] > 0]
        assert 0 < len(reasons) == len(order)
        assert [r[0] for r in reasons] == [inputs[j] for j in order]
        for (_, contribution, value), j in zip(reasons, order, strict=True):
            assert contribution == pytest.approx(float(row[j]), abs=1e-7)
            assert value == pytest.approx(float(raw[i, j]), rel=1e-6)
    with pytest.raises(ValueError, match="not explained"):
        result.reasons_for(np.flatnonzero(~result.is_alert)[:1])


def test_contributions_sum_to_the_score_minus_the_baseline(scorer: Scorer) -> None:
    rows = random_rows(tiny_bundle().feature_set, 200, seed=18)
    result = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    contributions = scorer.contributions(
        rows.values, result.autoencoder_error, result.sequence_probability
    )
    assert contributions.shape == (200, len(scorer.inputs))
    gap = contributions.astype(np.float64).sum(axis=1) - (result.score - scorer.baseline_score)
    assert float(np.abs(gap).max()) <= 1e-4
    assert result.baseline_score == scorer.baseline_score == (
        bundle_explanation := load_bundle(tiny_bundle().path).manifest.explanation
    ).baseline_score
    assert bundle_explanation.method == "deeplift-rescale"


def test_each_model_runs_once_per_batch(bundle: ModelBundle) -> None:
    scorer = Scorer(bundle)
    counting = {role: _CountingSession(s) for role, s in scorer._sessions.items()}
    scorer._sessions = counting
    rows = random_rows(tiny_bundle().feature_set, 512, seed=14)
    scored = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    alerts = int(scored.is_alert.sum())
    assert 0 < alerts < 512
    assert {role: c.calls for role, c in counting.items()} == {
        "autoencoder": [512], "sequence": [512], "combined": [512],
        "explainer": [alerts],  # the alerts only
    }
    calm = np.flatnonzero(~scored.is_alert)
    scorer.score_batch(rows.values[calm], rows.sequences[calm], rows.mask[calm])
    assert counting["explainer"].calls == [alerts], "no alert, no explainer run"


def test_a_row_scores_the_same_alone_and_in_a_batch(scorer: Scorer) -> None:
    rows = random_rows(tiny_bundle().feature_set, 64, seed=15)
    together = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    for i in (0, 31, 63):
        alone = scorer.score_batch(rows.values[i : i + 1], rows.sequences[i : i + 1],
                                   rows.mask[i : i + 1])
        assert alone.score[0] == pytest.approx(together.score[i], abs=1e-6)
        if together.is_alert[i] and alone.is_alert[0]:
            mine = alone.reasons_for(np.array([0]))[0]
            theirs = together.reasons_for(np.array([i]))[0]
            assert [r[0] for r in mine] == [r[0] for r in theirs]
            np.testing.assert_allclose([r[1] for r in mine], [r[1] for r in theirs], atol=1e-6)
    again = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    np.testing.assert_array_equal(again.score, together.score)


def test_empty_batch_scores_nothing(scorer: Scorer) -> None:
    rows = random_rows(tiny_bundle().feature_set, 0, seed=16)
    result = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    assert len(result) == 0
    assert result.reasons_for(np.empty(0, dtype=np.intp)) == []
    assert result.explained.inputs.shape == (0, 3)


def test_wrong_shapes_name_what_the_bundle_needs(scorer: Scorer) -> None:
    rows = random_rows(tiny_bundle().feature_set, 4, seed=17)
    f, k = rows.values.shape[1], rows.mask.shape[1]
    with pytest.raises(InputDataError, match=rf"needs \[n, {f}\], \[n, {k}, {f}\] and \[n, {k}\]"):
        scorer.score_batch(rows.values[:, :-1], rows.sequences, rows.mask)
    with pytest.raises(InputDataError, match="mask"):
        scorer.score_batch(rows.values, rows.sequences, rows.mask[:3])


def test_session_threading_comes_from_settings(bundle: ModelBundle) -> None:
    scorer = Scorer.from_settings(bundle, Settings(onnx_intra_op_threads=2))
    options = scorer._sessions["sequence"].get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = Scorer(bundle)._sessions["autoencoder"].get_session_options()
    assert default.intra_op_num_threads == Settings().onnx_intra_op_threads == 1


def test_zero_threads_is_refused(bundle: ModelBundle) -> None:
    with pytest.raises(ConfigError, match="threads = 0; set FRAUDSTREAM_ONNX_INTRA_OP_THREADS"):
        Scorer(bundle, intra_op_threads=0)


def _bundle_with(tmp_path: Path, file: str, data: bytes) -> ModelBundle:
    """A copy of the test bundle whose ``file`` holds ``data``, manifest re-signed."""
    path = Path(shutil.copytree(tiny_bundle().path, tmp_path / "bundle"))
    (path / file).write_bytes(data)
    document = json.loads((path / "manifest.json").read_text())
    document["files"][file] = hashlib.sha256(data).hexdigest()
    document["model_version"] = model_version(document)
    (path / "manifest.json").write_text(json.dumps(document))
    return load_bundle(path)


def test_a_graph_with_other_names_than_the_contract_is_refused(tmp_path: Path) -> None:
    autoencoder = (tiny_bundle().path / "autoencoder.onnx").read_bytes()
    bundle = _bundle_with(tmp_path, "combined.onnx", autoencoder)
    with pytest.raises(BundleError, match=r"combined\.onnx .* takes \('features',\) and returns "
                       r"\('reconstruction_error', 'feature_errors'\); the ONNX contract needs"):
        Scorer(bundle)


def test_a_graph_onnx_runtime_cannot_load_is_refused(tmp_path: Path) -> None:
    bundle = _bundle_with(tmp_path, "sequence.onnx", b"not an onnx model")
    with pytest.raises(BundleError, match=r"ONNX Runtime cannot load sequence\.onnx"):
        Scorer(bundle)


def test_explain_runs_the_explainer_once_on_the_chosen_rows_only(bundle: ModelBundle) -> None:
    scorer = Scorer(bundle)
    rows = random_rows(tiny_bundle().feature_set, 30, seed=19)
    scored = scorer.score_batch(rows.values, rows.sequences, rows.mask)
    counting = _CountingSession(scorer._sessions["explainer"])
    scorer._sessions = {**scorer._sessions, "explainer": counting}
    chosen = np.array([2, 5, 17])
    explained = scorer.explain(chosen, rows.values, scored.autoencoder_error,
                               scored.sequence_probability)
    assert counting.calls == [3]
    np.testing.assert_array_equal(explained.rows, chosen)
    alone = scorer.explain(np.array([5]), rows.values, scored.autoencoder_error,
                           scored.sequence_probability)
    np.testing.assert_allclose(alone.contributions[0], explained.contributions[1], atol=1e-7)
    assert scorer.explain(np.empty(0, dtype=np.intp), rows.values, scored.autoencoder_error,
                          scored.sequence_probability).rows.shape == (0,)
    assert counting.calls == [3, 1], "no rows, no explainer run"
