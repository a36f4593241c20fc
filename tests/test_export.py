"""ONNX export: the folder loads straight into `predict`, scores like PyTorch, and a bad export fails."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.inference.engines import EngineError
from deepfake_detector.inference.parity import compute_score_parity

from .doc_pages import code_blocks

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'deepfake-detector[onnx]'")
pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'deepfake-detector[onnx]'")


@pytest.fixture(scope="module")
def exported(seed_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported through the CLI, fp32 and int8."""
    folders = {}
    for precision, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        folder = tmp_path_factory.mktemp("exports") / precision
        args = ["export", "--format", "onnx", *extra, "--model", str(seed_checkpoint), "--out", str(folder)]
        assert main(args) == 0
        folders[precision] = folder
    return folders


def _read_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_export_then_predict_model_dir_scores_like_pytorch(
    exported, seed_checkpoint, varied_images, tmp_path, precision
):
    paths = [str(path) for path in varied_images]
    ours, theirs = tmp_path / "onnx.jsonl", tmp_path / "torch.jsonl"
    common = ["--jpeg-draft", "off", "--quiet"]
    # auto: the export's own precision; the reference is PyTorch in float32 (auto there would be bf16 on
    # CPUs with AVX512-BF16 or AMX).
    onnx_args = ["--model", str(exported[precision]), "--precision", "auto", "--output", str(ours)]
    assert main(["predict", *paths, *onnx_args, *common]) == 0
    torch_args = ["--model", str(seed_checkpoint), "--precision", "fp32", "--output", str(theirs)]
    assert main(["predict", *paths, *torch_args, *common]) == 0
    onnx_rows, torch_rows = _read_rows(ours), _read_rows(theirs)
    assert [row["source"] for row in onnx_rows] == paths
    onnx_scores = np.array([row["fake_score"] for row in onnx_rows])
    torch_scores = np.array([row["fake_score"] for row in torch_rows])
    if precision == "fp32":
        np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-5)
        assert [row["label"] for row in onnx_rows] == [row["label"] for row in torch_rows]
    else:
        labels = [[row["label"] for row in rows] for rows in (torch_rows, onnx_rows)]
        report = compute_score_parity(torch_scores, onnx_scores, *labels)
        assert report.passed, report.describe()
        assert report.max_score_diff > 1e-6  # it really is the quantised model


def test_export_folder_holds_what_predict_needs(exported, capsys):
    folder = exported["int8"]
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json",
        "export.json",
        "model.onnx",
        "preprocessor_config.json",
    ]
    info = json.loads((folder / "export.json").read_text())
    assert info["precision"] == "int8" and info["parity"]["passed"] and info["parity"]["check_images"] == 32
    detector = Detector.from_pretrained(folder)
    assert detector.model is None and (detector.engine.name, detector.engine.precision) == ("onnx", "int8")
    assert main(["info", "--model", str(folder)]) == 0
    assert "engine:       onnx (int8)" in capsys.readouterr().out


def test_export_folder_refuses_other_engines_and_precisions(exported):
    with pytest.raises(EngineError, match="engine='torch' needs PyTorch weights"):
        Detector.from_pretrained(exported["fp32"], engine="torch")
    with pytest.raises(EngineError, match="precision='int8' does not match this ONNX export, which is fp32"):
        Detector.from_pretrained(exported["fp32"], precision="int8")


def test_export_fails_loudly_and_writes_nothing_when_parity_is_off(
    seed_checkpoint, tmp_path, monkeypatch, capsys
):
    from deepfake_detector.inference import engines
    from deepfake_detector.scoring import ModelOutputs

    original = engines.OnnxEngine.compute_outputs

    def swapped(self, pixel_values):  # a broken export: the classes come out swapped
        outputs = original(self, pixel_values)
        return ModelOutputs(outputs.logits[:, ::-1], outputs.domain_logits)

    monkeypatch.setattr(engines.OnnxEngine, "compute_outputs", swapped)
    out = tmp_path / "bad"
    code = main(["export", "--format", "onnx", "--model", str(seed_checkpoint), "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err
    assert "the fp32 ONNX export does not score like the PyTorch model: verdict agreement" in error
    assert "nothing was written" in error
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_refuses_a_folder_that_is_not_empty(seed_checkpoint, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["export", "--model", str(seed_checkpoint), "--out", str(tmp_path)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


def test_export_rejects_unknown_format_and_quantisation(seed_checkpoint, tmp_path, capsys):
    for flag, value in (("--format", "tflite"), ("--quantize", "int4")):
        with pytest.raises(SystemExit):
            main(["export", flag, value, "--model", str(seed_checkpoint), "--out", str(tmp_path / "x")])
        assert f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err


def test_readme_speed_commands_run(seed_checkpoint, varied_images, tmp_path):
    """docs/speed.md's commands run as written, so they can't rot."""
    block = code_blocks("docs/speed.md", "# Speed", "console")[0]
    shutil.copytree(seed_checkpoint, tmp_path / "my-checkpoint")
    (tmp_path / "uploads" / "day1").mkdir(parents=True)
    jpegs = [path for path in varied_images if path.suffix == ".jpg"]
    for index, path in enumerate(jpegs):
        shutil.copy(path, tmp_path / "uploads" / (f"{index}.jpg" if index % 2 else f"day1/{index}.jpg"))
    shutil.copy(jpegs[0], tmp_path / "photo.jpg")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    commands = [line for line in block.splitlines() if line.strip()]
    assert any(" export " in command for command in commands)
    for command in commands:
        result = subprocess.run(
            shlex.split(command), cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    for output in tmp_path.glob("*.jsonl"):
        assert len(output.read_text().splitlines()) == len(jpegs)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_on_an_export_never_imports_pytorch_or_transformers(exported, varied_images, precision):
    import subprocess
    import sys

    # A fresh interpreter: this one has imported both long ago. Importing either costs seconds of
    # start-up that a detector running ONNX Runtime does not need.
    image, folder = str(varied_images[0]), str(exported[precision])
    script = (
        "import sys\n"
        "from deepfake_detector.cli.main import main\n"
        f"code = main(['predict', {image!r}, '--model', {folder!r}, '--quiet'])\n"
        "print('exit', code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "exit 0 False False", run.stdout
    assert image in run.stdout  # it did score the image
