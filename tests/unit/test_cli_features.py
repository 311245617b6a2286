"""The ``fraudstream`` CLI frame, ``simulate`` and ``features``, run through ``cli.main``."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_app import cli
from stream_app.commands import COMMANDS, Command
from stream_app.commands import simulate as simulate_command
from stream_app.features.batch import compute_features
from stream_app.features.spec import feature_set
from stream_app.sources.handbook import read_handbook
from stream_app.sources.jsonl import read_jsonl
from stream_app.sources.load import load_history
from stream_app.sources.simulator import simulate

SIMULATION = ["--customers", "80", "--terminals", "160", "--days", "20", "--seed", "4"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same small simulation as handbook Parquet and as gzipped JSONL events."""
    folder = tmp_path_factory.mktemp("simulated")
    paths = {"parquet": folder / "history.parquet", "jsonl": folder / "events.jsonl.gz"}
    for path in paths.values():
        assert cli.main(["simulate", *SIMULATION, "--output", str(path)]) == 0
    return paths


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _probe(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints a JSON object on its last line."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


_LOADED = (
    "import json, sys\n"
    "loaded = sorted(m for m in sys.modules if m.startswith('stream_app.commands.'))\n"
    "torch = any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
    "print(json.dumps({'rc': rc, 'loaded': loaded, 'torch': torch}))\n"
)


def test_help_lists_every_command_without_importing_any_command_module() -> None:
    code = (
        "import contextlib, io\nfrom stream_app.cli import main\nout = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n    rc = main(['--help'])\n"
        "print(out.getvalue())\n" + _LOADED
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=120)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "loaded": [], "torch": False}
    for command in COMMANDS:
        assert f"    {command.name}" in result.stdout, command.name


def test_running_a_command_imports_only_its_module(tmp_path: Path) -> None:
    output = tmp_path / "sim.jsonl"
    report = _probe(
        "from stream_app.cli import main\n"
        f"rc = main(['simulate', '--customers', '5', '--days', '2', '--output', {str(output)!r}])\n"
        + _LOADED
    )
    assert report == {"rc": 0, "loaded": ["stream_app.commands.output",
                                          "stream_app.commands.simulate"], "torch": False}
    assert output.is_file()


def test_version_and_usage_errors_exit_like_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"
    assert cli.main([]) == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err
    assert cli.main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert cli.main(["features", "--input", "x.parquet"]) == 2
    assert "required: --output" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["handbook", "default"])
@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_features_writes_what_compute_features_computes(
    simulated: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    name: str, kind: str,
) -> None:
    output = tmp_path / "features.parquet"
    code = cli.main(["features", "--input", str(simulated[kind]), "--output", str(output),
                     "--feature-set", name, "--label-delay-days", "3"])
    assert code == 0
    fs = feature_set(name, label_delay_days=3)
    expected = compute_features(load_history(simulated[kind], label_delay_days=3), fs)
    written = pq.read_table(output)
    assert written.column_names == ["transaction_id", *fs.columns]
    assert written.num_rows == len(expected.transaction_id) > 2000
    assert written.column("transaction_id").to_pylist() == list(expected.transaction_id)
    values = np.column_stack([written.column(c).to_numpy() for c in fs.columns])
    np.testing.assert_array_equal(values, expected.values)
    assert f"x {len(fs.columns)} {name!r} features to {output}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["features.parquet"]


def test_simulate_writes_the_simulators_history_in_both_layouts(
    simulated: dict[str, Path],
) -> None:
    history = simulate(80, 160, 20, dt.date(2018, 4, 1), seed=4)
    from_parquet = read_handbook(simulated["parquet"])
    from_jsonl = read_jsonl(simulated["jsonl"])
    for name in ("transaction_id", "customer_id", "terminal_id", "event_time_us", "amount",
                 "is_fraud", "label_time_us"):
        expected = getattr(history, name)
        np.testing.assert_array_equal(getattr(from_parquet, name), expected, err_msg=name)
        np.testing.assert_array_equal(getattr(from_jsonl, name), expected, err_msg=name)
    np.testing.assert_array_equal(from_parquet.fraud_scenario, history.fraud_scenario)
    table = pq.read_table(simulated["parquet"])
    assert table.column("TX_TIME_DAYS").to_pylist()[-1] == 19
    assert table.schema.field("TX_DATETIME").type == pa.timestamp("us")


def test_missing_input_is_one_error_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.parquet"
    code = cli.main(["features", "--input", str(missing), "--output", str(tmp_path / "f.parquet")])
    assert code == 2
    assert _error_line(capsys) == f"error: input file {missing} does not exist; check the path"


def test_unreadable_input_is_an_error_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    output = tmp_path / "f.parquet"
    output.write_bytes(b"previous output")
    assert cli.main(["features", "--input", str(garbage), "--output", str(output)]) == 2
    assert f"cannot read handbook file {garbage}" in _error_line(capsys)
    assert output.read_bytes() == b"previous output"


def test_wrongly_shaped_parquet_is_an_error_naming_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shaped = tmp_path / "shaped.parquet"
    pq.write_table(pa.table({"TRANSACTION_ID": [1], "CUSTOMER_ID": [2], "TERMINAL_ID": [3],
                             "TX_DATETIME": pa.array([0], pa.timestamp("s")),
                             "TX_FRAUD": [0]}), shaped)
    assert cli.main(["features", "--input", str(shaped), "--output",
                     str(tmp_path / "f.parquet")]) == 2
    line = _error_line(capsys)
    assert str(shaped) in line and "missing column(s) TX_AMOUNT" in line


@pytest.mark.parametrize(
    ("input_name", "content", "extra", "message"),
    [
        ("events.jsonl", '{"schema": "transaction.v1"}\n', [],
         r"events\.jsonl line 1: \$\.transaction_id: required field"),
        ("history.txt", "", [], r"cannot tell the format of .*history\.txt from its name"),
        ("history.txt", "", ["--format", "handbook"], r"has suffix '\.txt'; use \.parquet"),
        ("events.jsonl", "", ["--output", "/no/such/dir/f.parquet"],
         r"directory /no/such/dir does not exist"),
        ("events.jsonl", "", ["--output", "features.csv"], r"name it \*\.parquet"),
    ],
)
def test_bad_inputs_and_outputs_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    input_name: str, content: str, extra: list[str], message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / input_name).write_text(content, encoding="utf-8")
    arguments = ["features", "--input", input_name, "--output", "f.parquet", *extra]
    assert cli.main(arguments) == 2
    line = _error_line(capsys)
    assert re.search(message, line), line


def test_a_bad_setting_is_an_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_LABEL_DELAY_DAYS", "soon")
    assert cli.main(["features", "--input", "x.parquet", "--output", "f.parquet"]) == 2
    assert "FRAUDSTREAM_LABEL_DELAY_DAYS='soon' is not a valid int" in _error_line(capsys)
    monkeypatch.setenv("FRAUDSTREAM_LABEL_DELAY_DAYS", "7")
    monkeypatch.setenv("FRAUDSTREAM_FEATURE_SET", "fancy")
    assert cli.main(["features", "--input", "x.jsonl", "--output",
                     str(tmp_path / "f.parquet")]) == 2
    assert "unknown feature set 'fancy'" in _error_line(capsys)


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate_command, "run", interrupted)
    assert cli.main(["simulate", "--output", "x.jsonl"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_a_missing_optional_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "COMMANDS", (Command("train", "train models", extra="train"),))
    monkeypatch.setattr(importlib, "import_module", missing)
    assert cli.main(["train"]) == 2
    line = _error_line(capsys)
    assert "'train' command needs the Python package 'torch'" in line
    assert "pip install 'fraudstream[train]'" in line
