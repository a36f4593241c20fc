"""The README's commands run as written (on a tiny local checkpoint), so the README can't rot."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import jpeg_bytes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent


def _blocks(language: str, after_heading: str) -> list[str]:
    section = README.split(after_heading, 1)[1]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture
def workspace(tmp_path, seed_checkpoint, varied_images) -> Path:
    """A folder holding what the README's commands name: photo.jpg, uploads/, more/, ./my-checkpoint."""
    shutil.copytree(seed_checkpoint, tmp_path / "my-checkpoint")
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(120, 160, seed=5))
    (tmp_path / "uploads" / "day1").mkdir(parents=True)
    for index, path in enumerate(p for p in varied_images if p.suffix == ".jpg"):
        shutil.copy(path, tmp_path / "uploads" / (f"{index}.jpg" if index % 2 else f"day1/{index}.jpg"))
    (tmp_path / "more" / "nested").mkdir(parents=True)
    for path in (p for p in varied_images if p.suffix == ".png"):
        shutil.copy(path, tmp_path / "more" / "nested" / path.name)
    return tmp_path


def _environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}


def test_setup_section_names_the_two_make_commands():
    setup = _blocks("console", "## Set-up")[0]
    assert setup.splitlines()[0].split()[:2] == ["make", "demo"]
    assert setup.splitlines()[1].startswith("make test")
    dry_run = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "ruff check" in dry_run.stdout and "pytest" in dry_run.stdout


def _run_commands(block: str, workspace: Path, timeout_s: int) -> list[subprocess.CompletedProcess]:
    """Runs each non-empty line of a README console block in ``workspace``; each must exit 0."""
    runs = []
    for command in (line for line in block.splitlines() if line.strip()):
        result = subprocess.run(
            shlex.split(command),
            cwd=workspace,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        runs.append(result)
    return runs


def test_usage_commands_run(workspace):
    assert len(_run_commands(_blocks("console", "## Usage")[0], workspace, timeout_s=300)) >= 4
    rows = (workspace / "results.jsonl").read_text().splitlines()
    assert len(rows) == len(list((workspace / "uploads").rglob("*.jpg")))  # --resume added nothing twice


def test_scan_report_commands_run(workspace):
    block = _blocks("console", "### Scan report")[0]
    assert len(_run_commands(block, workspace, timeout_s=300)) == 3
    jpegs = {str(path.relative_to(workspace)) for path in (workspace / "uploads").rglob("*.jpg")}
    for name, heatmaps in (("scan.html", 0), ("scan-heatmaps.html", len(jpegs))):
        html = (workspace / name).read_text()
        data = json.loads(
            re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1]
        )
        assert {card["source"] for card in data["cards"]} == jpegs
        assert all(card["thumbnail"] is not None for card in data["cards"])
        assert sum(card["heatmap"] is not None for card in data["cards"]) == heatmaps


def test_ray_example_runs_and_its_rerun_skips_everything(workspace):
    pytest.importorskip("ray")
    import pyarrow.parquet as pq

    block = _blocks("console", "### Scale out with Ray")[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2 and all(command.endswith("--ray") for command in commands)
    # A local Ray instance starts a dozen processes, and each actor loads PyTorch.
    runs = _run_commands(block, workspace, timeout_s=600)
    sources = pq.read_table(workspace / "scored").column("source").to_pylist()
    jpegs = list((workspace / "uploads").rglob("*.jpg"))
    assert len(sources) == len(set(sources)) == len(jpegs)
    assert f"scored 0 of 0 inputs; {len(jpegs)} already in scored/ were skipped" in runs[1].stderr


def test_python_example_runs(workspace, capsys):
    (code,) = _blocks("python", "### Python")
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"(real|fake) \d\.\d+", printed[0])


def test_make_demo_scores_the_named_images(workspace):
    result = subprocess.run(
        ["make", "-s", "demo", f"MODEL={workspace / 'my-checkpoint'}", f"IMAGES={workspace / 'photo.jpg'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()[-2:]
    assert header.split() == ["verdict", "fake_score", "domain", "label", "source"]
    assert row.split()[0] in ("real", "fake") and row.endswith("photo.jpg")


def test_make_demo_scores_the_project_made_examples_with_the_bundled_model():
    result = subprocess.run(["make", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    header_at = next(
        i
        for i, line in enumerate(lines)
        if line.split() == ["verdict", "fake_score", "domain", "label", "source"]
    )
    rows = [line.split() for line in lines[header_at + 1 :]]
    names = sorted(Path(row[-1]).name for row in rows)
    assert names == sorted(
        [
            "astronaut.jpg",
            "astronaut-face.jpg",
            "astronaut-face-blended.jpg",
            "astronaut-face-retouched.jpg",
            "astronaut-face-small.jpg",
            "rocket.jpg",
        ]
    )
    assert all(row[0] in ("real", "fake") and 0.0 <= float(row[1]) <= 1.0 for row in rows)
