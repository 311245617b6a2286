"""Score batches of feature rows with the bundle's three ONNX graphs.

Score convention: ``score`` is the combined model's calibrated probability (0..1) that a
transaction is fraud; **higher means more suspicious**, and a transaction is an alert when
``score >= threshold`` (the bundle's). Each :meth:`Scorer.score_batch` call runs every
graph exactly once for the whole batch; everything else is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from stream_app.errors import BundleError, ConfigError, InputDataError
from stream_app.scoring.bundle import ModelBundle
from stream_app.scoring.contract import CONTRACTS, ROLES, ModelRole
from stream_app.settings import Settings

N_REASONS: Final = 3
FloatArray = npt.NDArray[np.float32]

Reason = tuple[str, float, float]
"""``(feature, contribution, value)``: a feature name, its autoencoder error, its raw value."""


@dataclass(frozen=True, eq=False)
class ScoreBatch:
    """Scores of ``n`` rows, in input order.

    ``reason_columns`` [n, 3] are column indices of each row's largest ``feature_errors``
    (largest first), with their contributions and raw values alongside.
    """

    score: FloatArray
    is_alert: npt.NDArray[np.bool_]
    autoencoder_error: FloatArray
    sequence_probability: FloatArray
    reason_columns: npt.NDArray[np.intp]
    reason_contributions: FloatArray
    reason_values: FloatArray
    columns: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.score)

    @cached_property
    def reason_features(self) -> npt.NDArray[np.object_]:
        """Feature names of ``reason_columns`` [n, 3]."""
        return self._names(self.reason_columns)

    def _names(self, columns: npt.NDArray[np.intp]) -> npt.NDArray[np.object_]:
        names: npt.NDArray[np.object_] = np.asarray(self.columns, dtype=object)[columns]
        return names

    @cached_property
    def reasons(self) -> list[tuple[Reason, ...]]:
        """Per row, its top-3 reasons, largest contribution first."""
        return self.reasons_for(np.arange(len(self)))

    def reasons_for(self, rows: npt.NDArray[np.integer[Any]]) -> list[tuple[Reason, ...]]:
        """The reasons of the given rows only (e.g. the alerts).

        All loops run in C: one ``zip`` makes every (feature, contribution, value) triple,
        a second groups each row's consecutive triples.
        """
        triples = list(zip(
            self._names(self.reason_columns[rows]).reshape(-1).tolist(),
            self.reason_contributions[rows].reshape(-1).tolist(),
            self.reason_values[rows].reshape(-1).tolist(),
            strict=True,
        ))
        k = self.reason_columns.shape[1]
        return list(zip(*(triples[j::k] for j in range(k)), strict=True))


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
    ) -> ScoreBatch:
        """Score ``values`` [n, F], ``sequences`` [n, K, F] and ``mask`` [n, K] (1 = real).

        One ONNX Runtime run per graph for the whole batch.
        """
        features = np.ascontiguousarray(values, dtype=np.float32)
        sequence = np.ascontiguousarray(sequences, dtype=np.float32)
        steps = np.ascontiguousarray(mask, dtype=np.float32)
        n = self._check_shapes(features, sequence, steps)
        if n == 0:
            return self._empty()
        error, feature_errors = self._sessions["autoencoder"].run(None, {"features": features})
        (probability,) = self._sessions["sequence"].run(None, {"sequence": sequence, "mask": steps})
        (score,) = self._sessions["combined"].run(
            None,
            {"features": features, "reconstruction_error": error,
             "sequence_probability": probability},
        )
        top = np.argsort(-feature_errors, axis=1, kind="stable")[:, :N_REASONS]
        row = np.arange(n)[:, None]
        return ScoreBatch(
            score=score,
            is_alert=score.astype(np.float64) >= self.threshold,
            autoencoder_error=error,
            sequence_probability=probability,
            reason_columns=top,
            reason_contributions=feature_errors[row, top],
            reason_values=features[row, top],
            columns=self.columns,
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

    def _empty(self) -> ScoreBatch:
        empty = np.empty(0, dtype=np.float32)
        return ScoreBatch(
            score=empty,
            is_alert=np.empty(0, dtype=np.bool_),
            autoencoder_error=empty,
            sequence_probability=empty,
            reason_columns=np.empty((0, N_REASONS), dtype=np.intp),
            reason_contributions=np.empty((0, N_REASONS), dtype=np.float32),
            reason_values=np.empty((0, N_REASONS), dtype=np.float32),
            columns=self.columns,
        )


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
