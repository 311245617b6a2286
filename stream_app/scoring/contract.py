"""The ONNX contract between ``training/`` and the scorer (docs/design.md, "Models").

Four graphs, each with named float32 inputs and outputs and a dynamic first axis named
``batch``; ``F`` stands for the number of feature columns, ``K`` for the sequence length
and ``F+2`` for the stacker's inputs (the F features, the autoencoder error, the sequence
probability). Training exports against these names and serving checks bundles against them.
The ``explainer`` takes the ``combined`` graph's inputs and returns each input's
contribution to the score (:data:`EXPLAINED_INPUTS` names the columns after the features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

ModelRole = Literal["autoencoder", "sequence", "combined", "explainer"]
ROLES: Final[tuple[ModelRole, ...]] = ("autoencoder", "sequence", "combined", "explainer")
EXPLAINED_INPUTS: Final = ("autoencoder_error", "sequence_probability")
"""The explainer's last two contribution columns, after the F feature columns."""
BATCH_AXIS: Final = "batch"
DTYPE: Final = "float32"


@dataclass(frozen=True)
class TensorContract:
    """A named tensor; ``dims`` holds ``"batch"``, ``"F"``, ``"K"`` or ``"F+2"`` per axis."""

    name: str
    dims: tuple[str, ...]

    def shape(self, n_features: int, sequence_length: int) -> list[int | str]:
        """Concrete dimensions: ``"batch"`` stays symbolic, F, K and F+2 become sizes."""
        sizes: dict[str, int | str] = {
            "F": n_features, "K": sequence_length, "F+2": n_features + len(EXPLAINED_INPUTS)
        }
        return [sizes.get(dim, dim) for dim in self.dims]

    def spec(self, n_features: int, sequence_length: int) -> dict[str, Any]:
        """The tensor entry of manifest.v1 (name, dtype, shape)."""
        return {"name": self.name, "dtype": DTYPE, "shape": self.shape(n_features, sequence_length)}


@dataclass(frozen=True)
class ModelContract:
    """One graph of the bundle: its role, file name, inputs and outputs in order."""

    role: ModelRole
    file: str
    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def spec(self, n_features: int, sequence_length: int) -> dict[str, Any]:
        """The model entry of manifest.v1 (file, inputs, outputs)."""
        return {
            "file": self.file,
            "inputs": [t.spec(n_features, sequence_length) for t in self.inputs],
            "outputs": [t.spec(n_features, sequence_length) for t in self.outputs],
        }


CONTRACTS: Final[dict[ModelRole, ModelContract]] = {
    "autoencoder": ModelContract(
        "autoencoder",
        "autoencoder.onnx",
        inputs=(TensorContract("features", ("batch", "F")),),
        outputs=(
            TensorContract("reconstruction_error", ("batch",)),
            TensorContract("feature_errors", ("batch", "F")),
        ),
    ),
    "sequence": ModelContract(
        "sequence",
        "sequence.onnx",
        inputs=(
            TensorContract("sequence", ("batch", "K", "F")),
            TensorContract("mask", ("batch", "K")),
        ),
        outputs=(TensorContract("fraud_probability", ("batch",)),),
    ),
    "combined": ModelContract(
        "combined",
        "combined.onnx",
        inputs=(
            TensorContract("features", ("batch", "F")),
            TensorContract("reconstruction_error", ("batch",)),
            TensorContract("sequence_probability", ("batch",)),
        ),
        outputs=(TensorContract("score", ("batch",)),),
    ),
    "explainer": ModelContract(
        "explainer",
        "explainer.onnx",
        inputs=(
            TensorContract("features", ("batch", "F")),
            TensorContract("reconstruction_error", ("batch",)),
            TensorContract("sequence_probability", ("batch",)),
        ),
        outputs=(TensorContract("contributions", ("batch", "F+2")),),
    ),
}
