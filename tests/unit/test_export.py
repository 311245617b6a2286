"""Contract suite for every exported model: names, shapes, dtypes, dynamic batch,
determinism and ONNX-vs-PyTorch agreement (plus the exporter's refusals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from stream_app.errors import BundleError
from stream_app.scoring.contract import CONTRACTS, ROLES, ModelRole
from tests.unit.model_bundles import Rows, random_rows, tiny_bundle
from training.export import DEFAULT_TOLERANCE, export_model, torch_outputs

pytestmark = pytest.mark.train


def _inputs(role: ModelRole, rows: Rows) -> list[npt.NDArray[np.float32]]:
    if role == "autoencoder":
        return [rows.values]
    if role == "sequence":
        return [rows.sequences, rows.mask]
    n = len(rows.values)
    rng = np.random.default_rng(n)
    return [
        rows.values,
        rng.gamma(1.0, 1.0, size=n).astype(np.float32),
        rng.uniform(0.0, 1.0, size=n).astype(np.float32),
    ]


def _session(role: ModelRole) -> ort.InferenceSession:
    path = tiny_bundle().path / CONTRACTS[role].file
    return ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])


def _run(role: ModelRole, inputs: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
    contract = CONTRACTS[role]
    result: list[npt.NDArray[np.float32]] = _session(role).run(
        None, dict(zip(contract.input_names, inputs, strict=True))
    )
    return result


@pytest.mark.parametrize("role", ROLES)
def test_graph_has_the_contract_names_dtypes_and_a_dynamic_batch_axis(role: ModelRole) -> None:
    bundle = tiny_bundle()
    f, k = len(bundle.feature_set.columns), bundle.feature_set.sequence_length
    session = _session(role)
    contract = CONTRACTS[role]
    for actual, expected in (
        (session.get_inputs(), contract.inputs),
        (session.get_outputs(), contract.outputs),
    ):
        assert [(t.name, t.type, list(t.shape)) for t in actual] == [
            (t.name, "tensor(float)", t.shape(f, k)) for t in expected
        ]


@pytest.mark.parametrize("batch", [1, 37])
@pytest.mark.parametrize("role", ROLES)
def test_onnx_matches_pytorch_within_the_bound(role: ModelRole, batch: int) -> None:
    bundle = tiny_bundle()
    inputs = _inputs(role, random_rows(bundle.feature_set, batch, seed=100 + batch))
    expected = torch_outputs(bundle.modules[role], role, inputs)
    actual = _run(role, inputs)
    for want, got in zip(expected, actual, strict=True):
        assert got.shape == want.shape
        assert got.shape[0] == batch
        gap = np.abs(want.astype(np.float64) - got) / np.maximum(1.0, np.abs(want))
        assert float(np.max(gap)) <= DEFAULT_TOLERANCE


@pytest.mark.parametrize("role", ROLES)
def test_onnx_outputs_are_deterministic_and_independent_of_the_batch(role: ModelRole) -> None:
    inputs = _inputs(role, random_rows(tiny_bundle().feature_set, 37, seed=5))
    first, second = _run(role, inputs), _run(role, inputs)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    alone = [_run(role, [x[i : i + 1] for x in inputs]) for i in (0, 17, 36)]
    for row, outputs in zip((0, 17, 36), alone, strict=True):
        for together, single in zip(first, outputs, strict=True):
            np.testing.assert_allclose(single[0], together[row], rtol=0, atol=1e-6)


def test_manifest_records_the_measured_agreement() -> None:
    from stream_app.scoring.bundle import load_bundle

    agreement = load_bundle(tiny_bundle().path).manifest.export_max_abs_diff
    for role in ROLES:
        assert 0.0 <= getattr(agreement, role) < 1e-3


class _PlainAutoencoder(nn.Module):
    """Any module with the autoencoder's I/O works, whatever its parameter names."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 3), nn.Tanh(), nn.Linear(3, n_features))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        errors = (x - self.net(x)) ** 2
        return errors.mean(dim=1), errors


class _ColumnOutput(nn.Module):
    """Breaks the contract: fraud_probability shaped [batch, 1] instead of [batch]."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.head = nn.Linear(n_features, 1)

    def forward(self, sequence: Tensor, mask: Tensor) -> Tensor:
        return torch.sigmoid(self.head(sequence[:, -1] * mask[:, -1:]))


def test_export_accepts_any_module_following_the_contract(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rows = random_rows(tiny_bundle().feature_set, 16, seed=9)
    module = _PlainAutoencoder(rows.values.shape[1])
    report = export_model(module, "autoencoder", [rows.values], tmp_path / "ae.onnx")
    assert report.path.is_file()
    assert report.opset >= 18
    assert report.rows_checked == 16
    assert report.max_abs_diff >= 0.0
    assert 0.0 <= report.max_scaled_diff <= DEFAULT_TOLERANCE


def test_export_refuses_outputs_that_break_the_contract(tmp_path: Path) -> None:
    rows = random_rows(tiny_bundle().feature_set, 8, seed=3)
    module = _ColumnOutput(rows.values.shape[1])
    with pytest.raises(BundleError, match=r"'fraud_probability' is \(8, 1\).*shape \(8,\)"):
        export_model(module, "sequence", [rows.sequences, rows.mask], tmp_path / "s.onnx")
    assert not (tmp_path / "s.onnx").exists()


def test_export_refuses_a_difference_above_the_bound(tmp_path: Path) -> None:
    rows = random_rows(tiny_bundle().feature_set, 64, seed=4)
    module = tiny_bundle().modules["autoencoder"]
    with pytest.raises(BundleError, match=r"differs from PyTorch by .*bound 1e-12\)"):
        export_model(module, "autoencoder", [rows.values], tmp_path / "ae.onnx", tolerance=1e-12)
    assert not (tmp_path / "ae.onnx").exists()


def test_export_needs_two_sample_rows(tmp_path: Path) -> None:
    rows = random_rows(tiny_bundle().feature_set, 1, seed=4)
    with pytest.raises(BundleError, match=r"\[1\] rows; pass at least 2"):
        export_model(
            tiny_bundle().modules["autoencoder"], "autoencoder", [rows.values], tmp_path / "a"
        )
