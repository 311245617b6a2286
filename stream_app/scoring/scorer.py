"""Score batches of feature rows with the bundle's ONNX graphs, and explain the alerts.

Score convention: ``score`` is the combined model's calibrated probability (0..1) that a
transaction is fraud; **higher means more suspicious**, and a transaction is an alert when
``score >= threshold`` (the bundle's). Each :meth:`Scorer.score_batch` call runs the three
scoring graphs exactly once for the whole batch and the explainer once for its alerts only;
everything else is vectorised numpy.

An alert's reasons are the (up to) three stacker inputs that raise its score most: the
explainer graph splits ``score - baseline_score`` among the F features, the autoencoder
error and the sequence probability (DeepLIFT's rescale rule, exact in sum; manifest
``explanation``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from stream_app.errors import BundleError, ConfigError, InputDataError
from stream_app.scoring.bundle import ModelBundle
from stream_app.scoring.contract import CONTRACTS, EXPLAINED_INPUTS, ROLES, ModelRole
from stream_app.settings import Settings

N_REASONS: Final = 3
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]

Reason = tuple[str, float, float]
"""``(input, contribution, value)``: a feature column, ``autoencoder_error`` or
``sequence_probability``; its share of ``score - baseline_score`` (probability units); its
raw value (the feature value, the reconstruction error, the sequence probability)."""


@dataclass(frozen=True, eq=False)
class Explanation:
    """The top reasons of some rows of a batch (the explained ones, ascending).

    ``inputs`` [m, 3] index :attr:`Scorer.inputs` by decreasing contribution, ``-1`` where a
    row has fewer than three inputs that raise its score; ``contributions`` and ``values``
    [m, 3] alongside.
    """

    rows: IntArray
    inputs: IntArray
    contributions: FloatArray
    values: FloatArray

    def __len__(self) -> int:
        return len(self.rows)

    def shifted(self, offset: int) -> Explanation:
        """The same reasons for rows ``offset`` further on (batches joined end to end)."""
        return Explanation(self.rows + offset, self.inputs, self.contributions, self.values)


def no_reasons() -> Explanation:
    """The explanation of no rows."""
    return Explanation(
        rows=np.empty(0, dtype=np.intp),
        inputs=np.empty((0, N_REASONS), dtype=np.intp),
        contributions=np.empty((0, N_REASONS), dtype=np.float32),
        values=np.empty((0, N_REASONS), dtype=np.float32),
    )


@dataclass(frozen=True, eq=False)
class ScoreBatch:
    """Scores of ``n`` rows, in input order, and the reasons of its alerts (``explained``).

    A reason's contribution is its input's share of ``score - baseline_score``: the stacker's
    score of the row minus that of the bundle's baseline input (manifest ``explanation``).
    """

    score: FloatArray
    is_alert: npt.NDArray[np.bool_]
    autoencoder_error: FloatArray
    sequence_probability: FloatArray
    explained: Explanation
    inputs: tuple[str, ...]
    """Names of the explained inputs: the feature columns, then ``EXPLAINED_INPUTS``."""
    baseline_score: float

    def __len__(self) -> int:
        return len(self.score)

    def reasons_for(self, rows: npt.NDArray[np.integer[Any]]) -> list[tuple[Reason, ...]]:
        """The reasons of the given rows, each an explained one (e.g. the alerts)."""
        explained = self.explained
        at = np.searchsorted(explained.rows, rows)
        if len(rows) and (
            at.max() >= len(explained) or not np.array_equal(explained.rows[at], rows)
        ):
            raise ValueError(
                "reasons_for got rows that were not explained; pass rows of "
                "ScoreBatch.explained.rows (the alerts)"
            )
        # index -1 (fewer than three inputs raised the score) picks the trailing "": dropped
        names = np.asarray((*self.inputs, ""), dtype=object)[explained.inputs[at]]
        return [
            tuple((n, c, v) for n, c, v in zip(*row, strict=True) if n)
            for row in zip(names.tolist(), explained.contributions[at].tolist(),
                           explained.values[at].tolist(), strict=True)
        ]


class Scorer:
    """ONNX Runtime sessions of one bundle; :meth:`score_batch` scores feature batches.

    ``intra_op_threads`` / ``allow_spinning`` default to the ``Settings`` defaults
    (``onnx_intra_op_threads``, ``onnx_allow_spinning``); see :meth:`from_settings`.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        intra_op_threads: int = Settings.onnx_intra_op_threads,
        allow_spinning: bool = Settings.onnx_allow_spinning,
    ) -> None:
        if intra_op_threads < 1:
            raise ConfigError(
                f"ONNX Runtime intra-op threads = {intra_op_threads}; set "
                "FRAUDSTREAM_ONNX_INTRA_OP_THREADS to 1 or more"
            )
        self.bundle = bundle
        self.columns = bundle.feature_columns
        self.threshold = float(bundle.threshold)
        self.inputs = (*self.columns, *EXPLAINED_INPUTS)
        self.baseline_score = float(bundle.manifest.explanation.baseline_score)
        self._n_features = len(self.columns)
        self._k = bundle.sequence_length
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        self._sessions = {role: _session(bundle, role, options) for role in ROLES}

    @classmethod
    def from_settings(cls, bundle: ModelBundle, settings: Settings) -> Scorer:
        """A scorer with the ONNX Runtime threading of ``settings``."""
        return cls(bundle, settings.onnx_intra_op_threads, settings.onnx_allow_spinning)

    def score_batch(
        self,
        values: npt.NDArray[np.floating[Any]],
        sequences: npt.NDArray[np.floating[Any]],
        mask: npt.NDArray[Any],
        *,
        explain: bool = True,
    ) -> ScoreBatch:
        """Score ``values`` [n, F], ``sequences`` [n, K, F] and ``mask`` [n, K] (1 = real),
        and explain the alerts (at the bundle's threshold; none without ``explain``: see
        :meth:`with_alerts` for a policy's).

        One ONNX Runtime run per scoring graph for the whole batch, one explainer run for
        the alerts (none without alerts).
        """
        features = np.ascontiguousarray(values, dtype=np.float32)
        sequence = np.ascontiguousarray(sequences, dtype=np.float32)
        steps = np.ascontiguousarray(mask, dtype=np.float32)
        n = self._check_shapes(features, sequence, steps)
        if n == 0:
            empty = np.empty(0, dtype=np.float32)
            return self._batch(empty, np.empty(0, dtype=np.bool_), empty, empty, no_reasons())
        error, _ = self._sessions["autoencoder"].run(None, {"features": features})
        (probability,) = self._sessions["sequence"].run(None, {"sequence": sequence, "mask": steps})
        (score,) = self._sessions["combined"].run(
            None,
            {"features": features, "reconstruction_error": error,
             "sequence_probability": probability},
        )
        is_alert = score.astype(np.float64) >= self.threshold
        explained = (
            self.explain(np.flatnonzero(is_alert), features, error, probability)
            if explain else no_reasons()
        )
        return self._batch(score, is_alert, error, probability, explained)

    def with_alerts(
        self, batch: ScoreBatch, features: npt.NDArray[np.floating[Any]],
        alerts: npt.NDArray[np.bool_],
    ) -> ScoreBatch:
        """``batch`` with the alerts an alert policy chose, those explained (one explainer
        run unless they are the rows already explained); ``features``: the batch's feature
        rows."""
        rows = np.flatnonzero(alerts)
        explained = (
            batch.explained
            if np.array_equal(batch.explained.rows, rows)
            else self.explain(
                rows, np.ascontiguousarray(features, dtype=np.float32),
                batch.autoencoder_error, batch.sequence_probability,
            )
        )
        return replace(batch, is_alert=alerts, explained=explained)

    def explain(
        self, rows: IntArray, features: FloatArray, error: FloatArray, probability: FloatArray
    ) -> Explanation:
        """The top reasons of ``rows`` (ascending) of a scored batch: one explainer run on
        those rows of its combined graph's inputs."""
        if not len(rows):
            return no_reasons()
        contributions = self.contributions(features[rows], error[rows], probability[rows])
        top = np.argsort(-contributions, axis=1, kind="stable")[:, :N_REASONS]
        row = np.arange(len(rows))[:, None]
        chosen = contributions[row, top]
        raw = np.column_stack([features[rows], error[rows], probability[rows]])
        return Explanation(
            rows=np.asarray(rows, dtype=np.intp),
            inputs=np.where(chosen > 0, top, -1),
            contributions=chosen,
            values=raw[row, top],
        )

    def contributions(
        self, features: FloatArray, error: FloatArray, probability: FloatArray
    ) -> FloatArray:
        """Each input's share of ``score - baseline_score`` [m, F+2] (columns
        :attr:`inputs`) for rows of the combined graph's inputs: one explainer run."""
        (contributions,) = self._sessions["explainer"].run(
            None,
            {"features": features, "reconstruction_error": error,
             "sequence_probability": probability},
        )
        result: FloatArray = contributions
        return result

    def _batch(
        self, score: FloatArray, is_alert: npt.NDArray[np.bool_], error: FloatArray,
        probability: FloatArray, explained: Explanation,
    ) -> ScoreBatch:
        return ScoreBatch(
            score=score,
            is_alert=is_alert,
            autoencoder_error=error,
            sequence_probability=probability,
            explained=explained,
            inputs=self.inputs,
            baseline_score=self.baseline_score,
        )

    def _check_shapes(self, features: FloatArray, sequence: FloatArray, steps: FloatArray) -> int:
        n = features.shape[0] if features.ndim == 2 else -1
        f, k = self._n_features, self._k
        if features.shape != (n, f) or sequence.shape != (n, k, f) or steps.shape != (n, k):
            raise InputDataError(
                f"score_batch got values {features.shape}, sequences {sequence.shape}, mask "
                f"{steps.shape}; bundle {self.bundle.model_version} needs [n, {f}], "
                f"[n, {k}, {f}] and [n, {k}] (F = its feature columns, K = sequence_length)"
            )
        return n


def _session(bundle: ModelBundle, role: ModelRole, options: ort.SessionOptions) -> Any:
    contract = CONTRACTS[role]
    try:
        session = ort.InferenceSession(
            bundle.onnx_models[role], sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors on bad graphs
        raise BundleError(
            f"ONNX Runtime cannot load {contract.file} of bundle {str(bundle.path)!r}: {exc}; "
            "re-export the bundle with this onnxruntime's supported opset"
        ) from None
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if inputs != contract.input_names or outputs != contract.output_names:
        raise BundleError(
            f"{contract.file} of bundle {str(bundle.path)!r} takes {inputs} and returns "
            f"{outputs}; the ONNX contract needs {contract.input_names} -> "
            f"{contract.output_names}: re-export it with training/export.py"
        )
    return session
