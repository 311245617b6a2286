"""Export torch modules to ONNX under the bundle contract and prove they agree with PyTorch.

:func:`export_model` works for any ``nn.Module`` whose ``forward`` takes the role's inputs
positionally and returns its outputs in order (``stream_app.scoring.contract``). It uses
the ``torch.export``-based exporter (``dynamo=True``; the TorchScript exporter is
deprecated and warns that LSTMs break at other batch sizes) with the first axis of every
input dynamic and named ``batch``, then runs the file in ONNX Runtime on held-out inputs,
as one batch and as a batch of one, and compares every output with PyTorch.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from stream_app.errors import BundleError
from stream_app.scoring.contract import BATCH_AXIS, CONTRACTS, ModelRole

OPSET: Final = 20
DEFAULT_TOLERANCE: Final = 1e-4
"""Largest accepted ``|PyTorch - ONNX Runtime| / max(1, |PyTorch|)``: absolute for outputs
up to 1 (probabilities, scores), relative above (a large reconstruction error carries
float32 rounding proportional to its size)."""

_log = logging.getLogger(__name__)


def _not_about_torchvision(record: logging.LogRecord) -> bool:
    """Drop the exporter's notices that torchvision (which we never use) is absent."""
    return "torchvision is not installed" not in record.getMessage()


logging.getLogger("torch.onnx._internal.exporter._registration").addFilter(
    _not_about_torchvision
)
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and how closely ONNX Runtime reproduces PyTorch."""

    role: ModelRole
    path: Path
    opset: int
    max_abs_diff: float
    max_scaled_diff: float
    """The quantity bounded by the tolerance (see ``DEFAULT_TOLERANCE``)."""
    rows_checked: int


def export_model(
    module: nn.Module,
    role: ModelRole,
    sample_inputs: Sequence[npt.NDArray[Any]],
    path: Path,
    *,
    opset: int = OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportReport:
    """Write ``module`` as the ONNX graph of ``role`` to ``path`` and check agreement.

    ``sample_inputs`` are held-out arrays, one per contract input in order, with at least
    2 rows. Raises :class:`BundleError` when the module does not follow the contract or
    its ONNX outputs differ from PyTorch's by more than ``tolerance``.
    """
    contract = CONTRACTS[role]
    arrays = _as_float32(role, sample_inputs)
    module.eval()
    torch_outputs(module, role, arrays)  # fail fast when the module breaks the contract
    example = tuple(torch.from_numpy(a) for a in arrays)
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(contract.input_names),
            output_names=list(contract.output_names),
            dynamic_shapes=tuple({0: batch} for _ in arrays),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    for warning in caught:  # torch.export's notes about its own internals, not about us
        _log.debug("torch.onnx.export(%s): %s", role, warning.message)
    written_opset = _default_opset(path)
    absolute, scaled = differences(module, role, path.read_bytes(), arrays)
    if not scaled <= tolerance:
        path.unlink()
        raise BundleError(
            f"the ONNX export of the {role} model differs from PyTorch by {scaled:.3g} "
            f"(|difference| / max(1, |value|); bound {tolerance:g}); the graph uses an "
            "operation ONNX Runtime computes differently: simplify the module or export "
            "with another opset"
        )
    return ExportReport(role, path, written_opset, absolute, scaled, len(arrays[0]))


def differences(
    module: nn.Module, role: ModelRole, onnx_model: bytes, inputs: Sequence[FloatArray]
) -> tuple[float, float]:
    """Largest ``|PyTorch - ONNX Runtime|`` over every output, absolute and divided by
    ``max(1, |PyTorch|)``, for the whole batch and for row 0 alone."""
    contract = CONTRACTS[role]
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    absolute = scaled = 0.0
    for rows in (slice(None), slice(0, 1)):
        batch = [a[rows] for a in inputs]
        expected = torch_outputs(module, role, batch)
        actual = session.run(list(contract.output_names), dict(zip(contract.input_names, batch,
                                                                  strict=True)))
        for name, want, got in zip(contract.output_names, expected, actual, strict=True):
            if want.shape != got.shape:
                raise BundleError(
                    f"the {role} model's output {name!r} has shape {want.shape} in PyTorch but "
                    f"{got.shape} in ONNX Runtime; make the batch axis dynamic in forward()"
                )
            gap = np.abs(want.astype(np.float64) - got)
            absolute = max(absolute, float(np.max(gap, initial=0.0)))
            scale = np.maximum(1.0, np.abs(want.astype(np.float64)))
            scaled = max(scaled, float(np.max(gap / scale, initial=0.0)))
    return absolute, scaled


def torch_outputs(
    module: nn.Module, role: ModelRole, inputs: Sequence[FloatArray]
) -> list[FloatArray]:
    """The module's outputs as float32 arrays, checked against the contract's shapes."""
    contract = CONTRACTS[role]
    with torch.no_grad():
        result = module(*(torch.from_numpy(a) for a in inputs))
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    n = len(inputs[0])
    n_features = inputs[0].shape[-1]
    k = inputs[0].shape[1] if role == "sequence" else 1
    if len(outputs) != len(contract.outputs):
        raise BundleError(
            f"the {role} model returns {len(outputs)} tensors; the ONNX contract needs "
            f"{len(contract.outputs)}: {', '.join(contract.output_names)}"
        )
    arrays: list[FloatArray] = []
    for tensor_contract, output in zip(contract.outputs, outputs, strict=True):
        want = tuple(n if d == BATCH_AXIS else d for d in tensor_contract.shape(n_features, k))
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != want:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise BundleError(
                f"the {role} model's output {tensor_contract.name!r} is {shape}; the ONNX "
                f"contract needs a tensor of shape {want} for {n} rows"
            )
        arrays.append(output.detach().to(torch.float32).numpy())
    return arrays


def _as_float32(role: ModelRole, sample_inputs: Sequence[npt.NDArray[Any]]) -> list[FloatArray]:
    contract = CONTRACTS[role]
    if len(sample_inputs) != len(contract.inputs):
        raise BundleError(
            f"{len(sample_inputs)} sample inputs for the {role} model; it takes "
            f"{', '.join(contract.input_names)}"
        )
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in sample_inputs]
    rows = {len(a) for a in arrays}
    if len(rows) != 1 or min(rows) < 2:
        raise BundleError(
            f"sample inputs of the {role} model have {sorted(rows)} rows; pass at least 2 "
            "held-out rows, the same number for every input"
        )
    return arrays


def _default_opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
