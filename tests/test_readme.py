"""The commands of the README and of the docs/ pages it links run as written (on a tiny local checkpoint,
or the bundled model where they name none), so the documentation can't rot. The other pages' blocks
are run by their features' tests: evaluation (test_evaluate.py), faces and video (test_video.py),
serving (test_serving.py), speed (test_export.py)."""

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
from .doc_pages import ROOT, code_blocks

VENV_BIN = Path(sys.executable).parent


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
    setup = code_blocks("README.md", "## Set-up", "console")[0]
    assert setup.splitlines()[0].split()[:2] == ["make", "demo"]
    assert setup.splitlines()[1].startswith("make test")
    dry_run = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "ruff check" in dry_run.stdout and "pytest" in dry_run.stdout


def _run_commands(block: str, workspace: Path, timeout_s: int) -> list[subprocess.CompletedProcess]:
    """Runs each non-empty line of a console block in ``workspace``; each must exit 0. A line that names
    ``.venv/bin/PROGRAM`` runs that program of this test's environment."""
    runs = []
    for command in (line for line in block.splitlines() if line.strip()):
        argv = shlex.split(command)
        if argv[0].startswith(".venv/bin/"):
            argv[0] = str(VENV_BIN / Path(argv[0]).name)
        result = subprocess.run(
            argv,
            cwd=workspace,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        runs.append(result)
    return runs


def test_own_files_command_runs_and_writes_its_report(workspace):
    (block,) = code_blocks("README.md", "## On your own files", "console")
    (run,) = _run_commands(block, workspace, timeout_s=300)
    assert "photo.jpg" in run.stdout and (workspace / "scan.html").is_file()


def test_usage_commands_run(workspace):
    assert len(_run_commands(code_blocks("docs/usage.md", "## Commands", "console")[0], workspace, 300)) >= 4
    rows = (workspace / "results.jsonl").read_text().splitlines()
    assert len(rows) == len(list((workspace / "uploads").rglob("*.jpg")))  # --resume added nothing twice


def test_scan_report_commands_run(workspace):
    block = code_blocks("docs/scan-report.md", "# Scan report", "console")[0]
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

    block = code_blocks("docs/ray.md", "# Scale out with Ray", "console")[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2 and all(command.endswith("--ray") for command in commands)
    # A local Ray instance starts a dozen processes, and each actor loads PyTorch.
    runs = _run_commands(block, workspace, timeout_s=600)
    sources = pq.read_table(workspace / "scored").column("source").to_pylist()
    jpegs = list((workspace / "uploads").rglob("*.jpg"))
    assert len(sources) == len(set(sources)) == len(jpegs)
    assert f"scored 0 of 0 inputs; {len(jpegs)} already in scored/ were skipped" in runs[1].stderr


def _run_python(code: str, workspace: Path, page: str) -> None:
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        exec(compile(code, page, "exec"), {})
    finally:
        os.chdir(cwd)


def test_python_examples_run(workspace, capsys):
    (readme_code,) = code_blocks("README.md", "## Python", "python")
    _run_python(readme_code, workspace, "README.md")
    verdict, score, threshold, domain = capsys.readouterr().out.split()
    assert verdict in ("real", "fake") and 0 <= float(score) <= 1 and 0 < float(threshold) < 1
    assert domain in ("face", "general")

    (usage_code,) = code_blocks("docs/usage.md", "## Python", "python")
    _run_python(usage_code, workspace, "docs/usage.md")
    printed = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"(real|fake) \d\.\d+", printed[0])


def _table(stdout: str) -> list[dict]:
    """The rows of predict's table in ``stdout``, as {column: value}, from its header line on."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["verdict"] and "source" in line)
    header = lines[at].split()
    rows = []
    for line in lines[at + 1 :]:
        values = line.split()
        if len(values) != len(header) or values[0] not in ("real", "fake", "uncertain"):
            break  # the table ends where make's own lines begin
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def test_make_demo_scores_the_named_images(workspace):
    result = subprocess.run(
        ["make", "-s", "demo", f"MODEL={workspace / 'my-checkpoint'}", f"IMAGES={workspace / 'photo.jpg'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (row,) = _table(result.stdout)
    assert row["verdict"] in ("real", "fake") and row["source"].endswith("photo.jpg")
    assert "Scan report: build/demo-report.html" in result.stdout
    assert "made by this project" not in result.stdout  # the note is about the examples only


def test_make_demo_catches_a_fake_passes_a_real_photo_and_writes_a_report():
    """`make demo` shows what the tool is for: at least one fake it catches and one real photo it passes,
    with the bundled model at its stored thresholds. The README shows the same table."""
    result = subprocess.run(["make", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = _table(result.stdout)
    truth = {row["source"]: Path(row["source"]).parent.name for row in rows}  # real/ or fake/
    assert sorted(Path(source).name for source in truth) == sorted(
        [
            "astronaut.jpg",
            "astronaut-face.jpg",
            "astronaut-face-small.jpg",
            "rocket.jpg",
            "astronaut-face-swapped.jpg",
            "astronaut-face-blended.jpg",
            "astronaut-face-retouched.jpg",
        ]
    )
    right = [row["verdict"] for row in rows if row["verdict"] == truth[row["source"]]]
    assert "fake" in right and "real" in right, result.stdout
    assert all(0.0 <= float(row["fake_score"]) <= 1.0 for row in rows)
    report = ROOT / "build" / "demo-report.html"
    assert f"Scan report: {report.relative_to(ROOT)}" in result.stdout and report.is_file()
    assert "made by this project" in result.stdout and "clip-b16-v2/README.md" in result.stdout

    # The README's copy of the table: the same images, verdicts and domains (scores move a little
    # between CPUs and precisions, so they are not compared).
    (shown,) = code_blocks("README.md", "## What the output means", "text")
    keys = ("verdict", "domain", "source")
    printed = [[row[key] for key in keys] for row in rows]
    assert [[row[key] for key in keys] for row in _table(shown)] == printed
    assert shown.splitlines()[0].split() == result.stdout.splitlines()[0].split()
