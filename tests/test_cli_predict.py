"""The predict and info commands, called through main(argv) and as a real process."""

from __future__ import annotations

import builtins
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepfake_detector.io.images as images_module
from deepfake_detector.cli.main import main

from .conftest import jpeg_bytes


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def good_folder(tmp_path, varied_images) -> Path:
    folder = tmp_path / "good"
    folder.mkdir()
    for path in varied_images[:6]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def unreadable(monkeypatch):
    """Makes a file unreadable: chmod 000, or, as root (who reads it anyway), a PermissionError on open."""

    def make(path: Path) -> None:
        path.chmod(0)
        if os.geteuid() != 0:
            return

        def guarded_open(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)

        monkeypatch.setattr(images_module, "open", guarded_open, raising=False)

    return make


def test_bad_inputs_become_error_rows_and_the_rest_is_scored(
    tmp_path, good_folder, seed_checkpoint, unreadable
):
    mixed = tmp_path / "mixed"
    shutil.copytree(good_folder, mixed)
    (mixed / "zero.jpg").write_bytes(b"")
    (mixed / "truncated.jpg").write_bytes(jpeg_bytes(300, 300)[:2500])
    (mixed / "text.jpg").write_text("definitely not a JPEG\n")
    Image.new("1", (12_000, 12_000)).save(mixed / "bomb.png", optimize=True)
    (mixed / "locked.jpg").write_bytes(jpeg_bytes())
    unreadable(mixed / "locked.jpg")
    (mixed / "nested").mkdir()
    (mixed / "nested" / "deep.jpg").write_bytes(jpeg_bytes(seed=3))
    os.symlink(mixed, mixed / "nested" / "loop")  # a directory loop
    (mixed / "notes.txt").write_text("not scored: not an image suffix")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "results.jsonl"

    code = main(
        ["predict", str(mixed), str(missing), "--recursive", "--model", str(seed_checkpoint), "-o", str(out)]
    )

    assert code == 1  # some inputs failed
    rows = {row["source"]: row for row in _read_jsonl(out)}
    expected_errors = {
        "zero.jpg": "empty file",
        "truncated.jpg": "truncated or corrupt",
        "text.jpg": "not an image",
        "bomb.png": "144,000,000 pixels",
        "locked.jpg": "permission denied",
    }
    for name, message in expected_errors.items():
        row = rows[str(mixed / name)]
        assert message in row["error"] and str(mixed / name) in row["error"]
        assert row["fake_score"] is None and row["verdict"] is None
    assert "no such file" in rows[str(missing)]["error"]
    loop_rows = [row for source, row in rows.items() if source.endswith("loop")]
    assert len(loop_rows) == 1 and "directory loop" in loop_rows[0]["error"]
    scored = [row for row in rows.values() if row["error"] is None]
    assert {Path(row["source"]).name for row in scored} == {p.name for p in good_folder.iterdir()} | {
        "deep.jpg"
    }
    for row in scored:
        assert 0.0 <= row["fake_score"] <= 1.0 and row["verdict"] in ("real", "fake")
        assert row["label"] == {"real": "Realism", "fake": "Deepfake"}[row["verdict"]]  # follows the verdict
        assert row["threshold"] == 0.5 and row["threshold_from"] == "image" and row["uncertain_from"] is None
        assert row["model"] == str(seed_checkpoint)
    assert not any(source.endswith("notes.txt") for source in rows)


def test_folder_is_not_descended_without_recursive(tmp_path, good_folder, seed_checkpoint):
    (good_folder / "sub").mkdir()
    (good_folder / "sub" / "inner.jpg").write_bytes(jpeg_bytes())
    out = tmp_path / "flat.jsonl"
    assert main(["predict", str(good_folder), "--model", str(seed_checkpoint), "-o", str(out)]) == 0
    assert len(_read_jsonl(out)) == 6


def test_globs_and_formats_agree(tmp_path, good_folder, seed_checkpoint, capsys):
    pattern = str(good_folder / "*.jpg")
    jpgs = sorted(str(p) for p in good_folder.glob("*.jpg"))
    outputs = {}
    for fmt in ("jsonl", "csv", "json"):
        out = tmp_path / f"results.{fmt}"
        assert main(["predict", pattern, "--model", str(seed_checkpoint), "-o", str(out), "-q"]) == 0
        outputs[fmt] = out
    jsonl = _read_jsonl(outputs["jsonl"])
    with open(outputs["csv"], newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    json_rows = json.loads(outputs["json"].read_text())
    assert [row["source"] for row in jsonl] == jpgs
    for a, b, c in zip(jsonl, csv_rows, json_rows, strict=True):
        assert a == c
        assert float(b["fake_score"]) == a["fake_score"] and b["verdict"] == a["verdict"] and b["error"] == ""
    assert main(["predict", pattern, "--model", str(seed_checkpoint), "-q", "--threshold", "0.0"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["verdict", "fake_score", "threshold", "domain", "source"]
    assert len(table) == 1 + len(jpgs) and all(line.startswith("fake") for line in table[1:])
    assert all(line.split()[2] == "0" for line in table[1:])  # the caller's --threshold, as it decided
    assert all(line.split()[3] == "-" for line in table[1:])  # a checkpoint without domains


def test_every_format_carries_the_domain_and_the_table_shows_it(
    tmp_path, varied_images, domain_checkpoint, capsys
):
    from deepfake_detector import Detector

    inputs = [str(path) for path in varied_images[:6]]
    expected = {
        prediction.source: (prediction.domain, prediction.detector)
        for prediction in Detector.from_pretrained(domain_checkpoint, device="cpu").predict(inputs)
    }
    assert {domain for domain, _ in expected.values()} == {"face", "general"}
    args = ["predict", *inputs, "--model", str(domain_checkpoint), "-q"]
    for fmt in ("jsonl", "csv", "json"):
        assert main([*args, "-o", str(tmp_path / f"results.{fmt}")]) == 0
    with open(tmp_path / "results.csv", newline="") as handle:
        flat = list(csv.DictReader(handle))
    for rows in (
        _read_jsonl(tmp_path / "results.jsonl"),
        json.loads((tmp_path / "results.json").read_text()),
        flat,
    ):
        assert {row["source"]: (row["domain"], row["detector"]) for row in rows} == expected
    assert main(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["verdict", "fake_score", "threshold", "domain"]
    assert {line.split()[-1]: line.split()[3] for line in table[1:]} == {
        source: domain for source, (domain, _) in expected.items()
    }


@pytest.mark.parametrize(
    "added",
    [
        ("threshold", "uncertain_from", "threshold_from"),  # the last release: rows without their threshold
        ("domain", "detector", "threshold", "uncertain_from", "threshold_from"),  # before rows had a domain
    ],
)
def test_a_csv_of_an_earlier_version_is_not_resumed_into(tmp_path, good_folder, seed_checkpoint, added):
    out = tmp_path / "old.csv"
    args = ["predict", str(good_folder), "--model", str(seed_checkpoint), "-o", str(out), "-q"]
    assert main(args) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    older = [name for name in rows[0] if name not in added]
    with open(out, "w", newline="") as handle:  # as predict wrote it before rows carried those columns
        writer = csv.DictWriter(handle, older, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[:2])
    before = out.read_text()
    with pytest.raises(
        SystemExit, match=re.escape(f"earlier version, without the column(s) {', '.join(added)}")
    ):
        main([*args, "--resume"])
    assert out.read_text() == before  # refused before writing a row: no file with two headers


def test_no_match_glob_is_an_error_row(tmp_path, seed_checkpoint, capsys):
    code = main(
        ["predict", str(tmp_path / "*.nothing"), "--model", str(seed_checkpoint), "--format", "jsonl", "-q"]
    )
    assert code == 1
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "no files match" in row["error"]


def test_uncertain_band(tmp_path, good_folder, seed_checkpoint):
    out = tmp_path / "band.jsonl"
    args = ["predict", str(good_folder), "--model", str(seed_checkpoint), "-o", str(out), "-q"]
    assert main([*args, "--uncertain-band", "0.0", "1.0"]) == 0
    assert {row["verdict"] for row in _read_jsonl(out)} == {"uncertain"}


def test_model_that_cannot_load_exits_2_with_one_line(tmp_path, capsys):
    code = main(["predict", str(tmp_path), "--model", str(tmp_path / "no-such-model" / "x")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepfake-detector predict: error:") and "does not exist" in err and "\n" not in err


def test_resume_requires_appendable_output(tmp_path, seed_checkpoint):
    with pytest.raises(SystemExit, match="needs --output"):
        main(["predict", str(tmp_path), "--model", str(seed_checkpoint), "--resume"])
    with pytest.raises(SystemExit, match="appendable format"):
        main(
            [
                "predict",
                str(tmp_path),
                "--model",
                str(seed_checkpoint),
                "--resume",
                "-o",
                str(tmp_path / "r.json"),
            ]
        )


def test_resume_after_partial_last_line(tmp_path, good_folder, seed_checkpoint):
    out = tmp_path / "partial.csv"
    args = ["predict", str(good_folder), "--model", str(seed_checkpoint), "-o", str(out), "-q"]
    assert main(args) == 0
    complete = out.read_text().splitlines(keepends=True)
    out.write_text("".join(complete[:3]) + complete[3][:10])  # header, 2 rows, and half of a third
    assert main([*args, "--resume"]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["source"] for row in rows) == sorted(str(p) for p in good_folder.iterdir())


def _cli() -> list[str]:
    return [sys.executable, "-m", "deepfake_detector"]


def test_resume_after_killed_run_scores_each_input_exactly_once(tmp_path, seed_checkpoint):
    folder = tmp_path / "many"
    folder.mkdir()
    image = jpeg_bytes(800, 1000, quality=95)  # large enough that decoding keeps the run busy
    for index in range(40):
        (folder / f"{index:03d}.jpg").write_bytes(image)
    out = tmp_path / "run.jsonl"
    command = [
        *_cli(),
        "predict",
        str(folder),
        "--model",
        str(seed_checkpoint),
        "-o",
        str(out),
        "--batch-size",
        "1",
    ]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_before = out.read_bytes().count(b"\n")  # complete rows; a half-written one is redone
    assert 3 <= done_before < 40
    finished = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"{done_before} already in" in finished.stderr
    sources = [row["source"] for row in _read_jsonl(out)]
    assert sorted(sources) == sorted(str(p) for p in folder.iterdir())
    assert len(sources) == len(set(sources)) == 40


def test_info_command(seed_checkpoint, capsys):
    assert main(["info", "--model", str(seed_checkpoint)]) == 0
    text = capsys.readouterr().out
    assert "labels:       0=Realism, 1=Deepfake" in text
    assert "roles:        real = Realism; fake = Deepfake" in text
    assert "input size:   30x30 (height x width)" in text
    assert "mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]" in text
    assert main(["info", "--model", str(seed_checkpoint), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["id2label"] == {"0": "Realism", "1": "Deepfake"} and info["num_parameters"] > 0


def test_module_entry_point_runs():
    result = subprocess.run([*_cli(), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("deepfake-detector ")


def test_manifest_inputs_are_scored_like_named_ones(tmp_path, good_folder, seed_checkpoint):
    manifest = good_folder / "list.csv"
    names = sorted(path.name for path in good_folder.glob("*.jpg"))
    manifest.write_text("path\n" + "\n".join(names) + "\nmissing.jpg\n")
    out = tmp_path / "listed.jsonl"
    code = main(
        ["predict", "--manifest", str(manifest), "--model", str(seed_checkpoint), "-o", str(out), "-q"]
    )
    assert code == 1  # missing.jpg
    rows = _read_jsonl(out)
    assert [row["source"] for row in rows] == [str(good_folder / name) for name in [*names, "missing.jpg"]]
    assert "no such file" in rows[-1]["error"]
    with pytest.raises(SystemExit, match="name at least one PATH, or a --manifest FILE"):
        main(["predict", "--model", str(seed_checkpoint)])
    (tmp_path / "bad.csv").write_text("file\nx.jpg\n")
    assert main(["predict", "--manifest", str(tmp_path / "bad.csv"), "--model", str(seed_checkpoint)]) == 2


def _checkpoint_with_threshold(seed_checkpoint: Path, folder: Path, threshold: float) -> Path:
    """A copy of the seed checkpoint that stores ``threshold`` as its calibrated one (full digits)."""
    shutil.copytree(seed_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["deepfake_detector"] = {"temperature": 1.0, "thresholds": {"real": threshold, "fake": threshold}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_label_never_disagrees_with_the_verdict(tmp_path, varied_images, seed_checkpoint):
    from deepfake_detector import Detector

    inputs = [str(path) for path in varied_images]
    scores = sorted(
        p.fake_score for p in Detector.from_pretrained(seed_checkpoint, device="cpu").predict(inputs)
    )
    # A stored threshold that puts a score between 0.5 and the threshold: there the checkpoint's top
    # class (the old label, the verdict at 0.5) and the verdict part ways.
    nearest = min(scores, key=lambda score: abs(score - 0.5))
    threshold = float(np.nextafter(nearest, 1.0)) if nearest >= 0.5 else nearest
    model = _checkpoint_with_threshold(seed_checkpoint, tmp_path / "calibrated", threshold)
    out = tmp_path / "rows.jsonl"
    assert main(["predict", *inputs, "--model", str(model), "-o", str(out), "-q"]) == 0
    rows = _read_jsonl(out)
    top_class = {row["source"]: "Deepfake" if row["fake_score"] >= 0.5 else "Realism" for row in rows}
    assert any(
        top_class[row["source"]] != {"fake": "Deepfake", "real": "Realism"}[row["verdict"]] for row in rows
    )
    for row in rows:
        assert row["label"] == {"fake": "Deepfake", "real": "Realism"}[row["verdict"]]
        assert row["threshold"] == threshold and row["threshold_from"] == "image"
    # With an uncertain band, the band's rows say "uncertain" in both columns, and the band's edge.
    assert (
        main(["predict", *inputs, "--model", str(model), "-o", str(out), "-q", "--uncertain-band", "0", "1"])
        == 0
    )
    for row in _read_jsonl(out):
        assert row["verdict"] == row["label"] == "uncertain"
        assert (row["uncertain_from"], row["threshold"], row["threshold_from"]) == (0.0, 1.0, "caller")


def test_files_keep_full_precision_and_the_table_rounds(tmp_path, good_folder, seed_checkpoint, capsys):
    threshold = 0.12345678901234
    model = _checkpoint_with_threshold(seed_checkpoint, tmp_path / "calibrated", threshold)
    args = ["predict", str(good_folder), "--model", str(model), "-q"]
    assert main([*args, "-o", str(tmp_path / "rows.jsonl")]) == 0
    assert main([*args, "-o", str(tmp_path / "rows.csv")]) == 0
    rows = _read_jsonl(tmp_path / "rows.jsonl")
    with open(tmp_path / "rows.csv", newline="") as handle:
        flat = {row["source"]: row for row in csv.DictReader(handle)}
    for row in rows:
        assert row["threshold"] == threshold  # every digit, as stored
        assert flat[row["source"]]["threshold"] == repr(threshold)
        assert float(flat[row["source"]]["fake_score"]) == row["fake_score"]
    assert main(args) == 0
    table = {line.split()[-1]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    for row in rows:
        verdict, score, shown_threshold = table[row["source"]][:3]
        assert verdict == row["verdict"] and shown_threshold == "0.123"
        assert score == f"{row['fake_score']:.3g}" != repr(row["fake_score"])  # rounded for people


def test_info_rounds_for_people_and_its_json_keeps_every_digit(tmp_path, seed_checkpoint, capsys):
    model = _checkpoint_with_threshold(seed_checkpoint, tmp_path / "calibrated", 0.8590627312660217)
    config = json.loads((model / "config.json").read_text())
    config["deepfake_detector"]["temperature"] = 0.8716624441599015
    (model / "config.json").write_text(json.dumps(config))
    assert main(["info", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "thresholds:   fake >= 0.859 (temperature 0.872)" in text
    assert "video:        clips decided by the image thresholds" in text
    assert "0.8590627312660217" not in text and "0.8716624441599015" not in text
    assert main(["info", "--model", str(model), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["thresholds"]["fake"] == 0.8590627312660217 and info["temperature"] == 0.8716624441599015
