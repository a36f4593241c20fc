"""The README's commands run as written (on a tiny local checkpoint), so the README can't rot."""

from __future__ import annotations

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
    assert setup.splitlines()[0].startswith("make demo MODEL=")
    assert setup.splitlines()[1].startswith("make test")
    dry_run = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "ruff check" in dry_run.stdout and "pytest" in dry_run.stdout


def test_usage_commands_run(workspace):
    commands = [line for line in _blocks("console", "## Usage")[0].splitlines() if line.strip()]
    assert len(commands) >= 4
    for command in commands:
        result = subprocess.run(
            shlex.split(command),
            cwd=workspace,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    rows = (workspace / "results.jsonl").read_text().splitlines()
    assert len(rows) == len(list((workspace / "uploads").rglob("*.jpg")))  # --resume added nothing twice


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
    assert header.split() == ["verdict", "fake_score", "label", "source"]
    assert row.split()[0] in ("real", "fake") and row.endswith("photo.jpg")


def test_make_demo_without_a_model_explains_what_it_needs():
    result = subprocess.run(["make", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "make demo MODEL=path/to/checkpoint" in result.stdout
