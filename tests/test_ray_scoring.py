"""Batch scoring on Ray (``predict --ray``, `score_with_ray`) on a real local Ray cluster of 2 CPUs.

One cluster serves the module. Its workers run a setup hook that logs which process scored each batch
and, only while the kill test arms it, makes one actor SIGKILL itself in the middle of a batch: a real
actor process dies, and Ray has to restart it and redo the batch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from deepfake_detector.cli.main import main
from deepfake_detector.errors import ManifestError
from deepfake_detector.inference.ray_scoring import (
    DetectorConfig,
    RayScoringConfig,
    RayScoringError,
    score_with_ray,
)
from deepfake_detector.io.inputs import load_manifest
from deepfake_detector.io.shards import ShardFolderError, ShardWriter, encode_rows, open_shard_folder
from deepfake_detector.results import Prediction

from .conftest import jpeg_bytes

pytest.importorskip("ray")
pytest.importorskip("pyarrow")


def _install_test_hook(folder: str):
    """The worker setup hook: log each batch's pid; SIGKILL this process mid-batch once, when armed."""

    def hook() -> None:
        import os
        import signal

        from deepfake_detector.inference.detector import Detector

        original = Detector.iter_predict_media
        batches = {"count": 0}

        def iter_predict_media(self, inputs, **kwargs):
            batches["count"] += 1
            with open(os.path.join(folder, "batches.log"), "a") as log:
                log.write(f"{os.getpid()}\n")
            for index, row in enumerate(original(self, inputs, **kwargs)):
                if index == 1 and batches["count"] >= 3:  # halfway through this process's third batch
                    try:
                        os.rename(os.path.join(folder, "armed"), os.path.join(folder, "fired"))
                    except FileNotFoundError:
                        pass  # not armed, or another process already died for this test
                    else:
                        with open(os.path.join(folder, "fired"), "w") as fired:
                            fired.write(str(os.getpid()))
                        os.kill(os.getpid(), signal.SIGKILL)
                yield row

        Detector.iter_predict_media = iter_predict_media

    return hook


@pytest.fixture(scope="module")
def hook_folder(tmp_path_factory) -> Path:
    import ray

    folder = tmp_path_factory.mktemp("ray-hook")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"worker_process_setup_hook": _install_test_hook(str(folder))},
    )
    yield folder
    ray.shutdown()


@pytest.fixture
def mixed_folder(tmp_path, varied_images) -> Path:
    """Eight good images of varied formats, a truncated JPEG and a text file named .jpg."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in varied_images[:8]:
        shutil.copy(path, folder / path.name)
    (folder / "truncated.jpg").write_bytes(jpeg_bytes(300, 300)[:2500])
    (folder / "text.jpg").write_text("definitely not a JPEG\n")
    return folder


def _config(**changes) -> RayScoringConfig:
    settings = {"num_actors": 1, "batch_size": 4, "verbose": False}
    return RayScoringConfig(**{**settings, **changes})


def _jsonl_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("part-*.jsonl")) for line in path.open()]


def _snapshot(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_ray_rows_are_local_predict_rows_error_rows_included(
    tmp_path, mixed_folder, seed_checkpoint, hook_folder
):
    missing = str(tmp_path / "nothing-*.png")
    local = tmp_path / "local.jsonl"
    shards = tmp_path / "shards"
    common = [str(mixed_folder), missing, "--model", str(seed_checkpoint), "--batch-size", "4", "-q"]

    assert main(["predict", *common, "-o", str(local)]) == 1  # some inputs failed
    code = main(["predict", *common, "-o", str(shards), "--format", "jsonl", "--ray-actors", "2", "--ray"])

    assert code == 1
    expected = {row["source"]: row for row in map(json.loads, local.read_text().splitlines())}
    rows = _jsonl_rows(shards)
    assert sorted(row["source"] for row in rows) == sorted(expected)  # every input exactly once
    for row in rows:
        want = expected[row["source"]]
        assert list(row) == list(want)  # the same fields, in the same order
        assert row["fake_score"] == pytest.approx(want["fake_score"], abs=1e-6)
        assert {**row, "fake_score": None} == {**want, "fake_score": None}
    errors = {Path(row["source"]).name: row["error"] for row in rows if row["error"]}
    assert set(errors) == {"truncated.jpg", "text.jpg", "nothing-*.png"}
    assert (
        "truncated or corrupt" in errors["truncated.jpg"]
        and str(mixed_folder / "truncated.jpg") in errors["truncated.jpg"]
    )
    assert "not an image" in errors["text.jpg"] and str(mixed_folder / "text.jpg") in errors["text.jpg"]
    assert sum(row["error"] is None for row in rows) == 8
    # The provenance stage ran in the actors as it does locally (compared field for field above).
    assert all(row["provenance"]["checks"] and row["decided_by"] for row in rows if row["error"] is None)


def test_parquet_shards_hold_local_csv_columns_in_face_mode(
    tmp_path, mixed_folder, seed_checkpoint, hook_folder
):
    pytest.importorskip("dlib")
    import pyarrow.parquet as pq

    local = tmp_path / "local.csv"
    args = ["predict", str(mixed_folder), "--faces", "--model", str(seed_checkpoint), "-o", str(local), "-q"]
    assert main(args) == 1
    with open(local, newline="") as handle:
        expected = {row["source"]: row for row in csv.DictReader(handle)}

    result = score_with_ray(
        [str(mixed_folder)],
        tmp_path / "shards",
        DetectorConfig(seed_checkpoint),
        _config(rows_per_shard=3),
        faces=True,
    )

    assert (result.scored, result.failed, result.skipped) == (10, 2, 0)
    assert len(result.shards) >= 2  # cut at 3 rows, from batches of 4
    table = pq.read_table(tmp_path / "shards")
    assert table.column_names == list(next(iter(expected.values())))  # with num_faces, no_face, ...
    names = ("fake_score", "num_faces", "no_face", "ai_declared", "decided_by", "domain", "detector")
    assert [str(table.schema.field(name).type) for name in names] == [
        "double",
        "int64",
        "bool",
        "bool",
        "string",
        "string",
        "string",
    ]
    rows = table.to_pylist()
    assert sorted(row["source"] for row in rows) == sorted(expected)
    for row in rows:
        want = expected[row["source"]]
        if row["error"] is None:
            assert row["fake_score"] == pytest.approx(float(want["fake_score"]), abs=1e-6)
            for name in ("label", "verdict", "model", "num_faces", "no_face", "decided_by", "detector"):
                assert str(row[name]) == want[name], name
            assert (row["domain"] or "") == want["domain"]  # a face found is in the face domain
        else:
            assert row["error"] == want["error"] and row["fake_score"] is None and row["num_faces"] is None


def test_ray_rows_carry_each_inputs_domain_and_head(tmp_path, varied_images, domain_checkpoint, hook_folder):
    import pyarrow.parquet as pq

    from deepfake_detector import Detector

    inputs = [str(path) for path in varied_images[:6]]
    expected = Detector.from_pretrained(domain_checkpoint, device="cpu").predict(inputs)
    spec = DetectorConfig(domain_checkpoint)
    score_with_ray(inputs, tmp_path / "parquet", spec, _config())
    score_with_ray(inputs, tmp_path / "jsonl", spec, _config(format="jsonl"))

    table = pq.read_table(tmp_path / "parquet")
    assert [str(table.schema.field(name).type) for name in ("domain", "detector")] == ["string", "string"]
    want = {prediction.source: (prediction.domain, prediction.detector) for prediction in expected}
    assert {domain for domain, _ in want.values()} == {"face", "general"}
    for rows in (table.to_pylist(), _jsonl_rows(tmp_path / "jsonl")):
        assert {row["source"]: (row["domain"], row["detector"]) for row in rows} == want


def test_rerun_scores_nothing_new_and_leaves_the_output_unchanged(
    tmp_path, mixed_folder, seed_checkpoint, hook_folder
):
    output = tmp_path / "shards"
    spec = DetectorConfig(seed_checkpoint)
    first = score_with_ray([str(mixed_folder)], output, spec, _config(format="jsonl"))
    before = _snapshot(output)

    second = score_with_ray([str(mixed_folder)], output, spec, _config(format="jsonl"))

    assert (first.scored, first.skipped) == (10, 0)
    assert (second.scored, second.skipped, second.shards, second.num_actors) == (0, 10, (), 0)
    assert _snapshot(output) == before
    (mixed_folder / "late.jpg").write_bytes(jpeg_bytes(seed=9))
    third = score_with_ray([str(mixed_folder)], output, spec, _config(format="jsonl"))
    assert (third.scored, third.skipped) == (1, 10)
    sources = [row["source"] for row in _jsonl_rows(output)]
    assert len(sources) == len(set(sources)) == 11


def test_killed_actor_is_restarted_and_every_input_appears_once(tmp_path, seed_checkpoint, hook_folder):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(12):
        (folder / f"{index:02d}.jpg").write_bytes(jpeg_bytes(48, 64, seed=index))
    (hook_folder / "batches.log").unlink(missing_ok=True)
    (hook_folder / "armed").touch()
    output = tmp_path / "shards"

    try:
        result = score_with_ray(
            [str(folder)],
            output,
            DetectorConfig(seed_checkpoint),
            _config(format="jsonl", batch_size=2, rows_per_shard=2, max_restarts=2, max_task_retries=2),
        )
    finally:
        (hook_folder / "armed").unlink(missing_ok=True)

    killed = int((hook_folder / "fired").read_text())  # the actor did die, mid-batch
    (hook_folder / "fired").unlink()
    pids = [int(line) for line in (hook_folder / "batches.log").read_text().split()]
    assert pids[:3] == [killed] * 3  # it scored two batches, then died in its third
    assert killed not in pids[3:] and len(set(pids[3:])) == 1  # its restart redid that batch and the rest
    assert len(pids) == 6 + 1  # 6 batches, one of them twice
    sources = sorted(row["source"] for row in _jsonl_rows(output))
    assert sources == sorted(str(path) for path in folder.iterdir())  # each exactly once
    assert (result.scored, result.failed) == (12, 0)


def test_uris_and_manifests_name_their_inputs(tmp_path, mixed_folder, seed_checkpoint, hook_folder):
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    shutil.copy(mixed_folder / "small.jpg", manifest.parent / "listed.jpg")
    manifest.write_text("path,label\nlisted.jpg,real\nmissing.jpg,fake\n")
    uri = f"file://{mixed_folder}"
    inputs = [uri, *load_manifest(manifest), f"file://{tmp_path}/absent/"]

    result = score_with_ray(
        inputs, tmp_path / "shards", DetectorConfig(seed_checkpoint), _config(format="jsonl")
    )

    rows = {row["source"]: row for row in _jsonl_rows(tmp_path / "shards")}
    assert result.scored == len(rows) == 10 + 2 + 1
    assert rows[f"{uri}/small.jpg"]["error"] is None
    text_error = rows[f"{uri}/text.jpg"]["error"]
    assert text_error.startswith(f"{uri}/text.jpg: not an image") and "deepfake-detector-" not in text_error
    assert rows[str(manifest.parent / "listed.jpg")]["fake_score"] == pytest.approx(
        rows[f"{uri}/small.jpg"]["fake_score"], abs=1e-6
    )
    assert "no such file" in rows[str(manifest.parent / "missing.jpg")]["error"]
    assert "no such object or folder" in rows[f"file://{tmp_path}/absent/"]["error"]


def test_cli_in_another_process_joins_the_cluster_at_its_address(
    tmp_path, mixed_folder, seed_checkpoint, hook_folder
):
    import ray

    address = ray.get_runtime_context().gcs_address  # HOST:PORT, what `ray start --head` prints
    output = tmp_path / "shards"
    command = [sys.executable, "-m", "deepfake_detector", "predict", str(mixed_folder), "-o", str(output)]
    command += ["--model", str(seed_checkpoint), "--format", "jsonl", "--ray-actors", "1", f"--ray={address}"]

    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)  # slow on a busy CPU

    assert finished.returncode == 1, finished.stderr[-3000:]  # two inputs failed
    assert f"Connecting to existing Ray cluster at address: {address}" in finished.stderr
    sources = sorted(row["source"] for row in _jsonl_rows(output))
    assert sources == sorted(str(path) for path in mixed_folder.iterdir())
    assert "scored 8 of 10 inputs; 2 failed" in finished.stderr


def test_actors_that_cannot_fit_the_cluster_are_refused(tmp_path, mixed_folder, seed_checkpoint, hook_folder):
    output = tmp_path / "shards"
    with pytest.raises(RayScoringError, match="asks for 1 GPUs but the Ray cluster has 0; lower --ray-gpus"):
        score_with_ray(
            [str(mixed_folder)], output, DetectorConfig(seed_checkpoint), _config(num_gpus_per_actor=1)
        )
    assert list(output.iterdir()) == []


def test_manifest_without_a_path_column_names_its_columns(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.jpg,real\n")
    with pytest.raises(ManifestError, match="no 'path' column; columns are: file, label"):
        load_manifest(manifest)
    listing = tmp_path / "m.txt"
    listing.write_text("# inputs\na.jpg\n\ns3://bucket/b.jpg\n/abs/c.jpg\n")
    assert load_manifest(listing) == [str(tmp_path / "a.jpg"), "s3://bucket/b.jpg", "/abs/c.jpg"]


def _row(source: str, error: str | None = None) -> Prediction:
    score = None if error else 0.25
    return Prediction(
        source, None if error else "Realism", score, None if error else "real", "m", error=error
    )


def test_shards_are_whole_or_absent(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    folder = tmp_path / "shards"
    folder.mkdir()
    writer = ShardWriter(folder, "parquet", rows_per_shard=2)
    assert writer.add(encode_rows([_row("a.jpg"), _row("b.jpg", "b.jpg: empty file")], "parquet")) != []
    (folder / ".part-killed-00000.parquet.tmp").write_bytes(b"PAR1 half a shard")  # a killed job's leftover

    def failing_write(table, where, **kwargs):
        where.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", failing_write)
    writer.add(encode_rows([_row("c.jpg")], "parquet"))
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    monkeypatch.undo()

    assert sorted(path.name.startswith(".") for path in folder.iterdir()) == [False, True]
    assert open_shard_folder(folder, "parquet") == {"a.jpg", "b.jpg"}  # the whole shard only
    assert [path.name for path in folder.iterdir()] == [path.name for path in writer.written]
    assert writer.rows == 2 and writer.failed == 1


def test_parquet_shards_of_an_earlier_version_are_named_as_such(tmp_path):
    import pyarrow.parquet as pq

    table = encode_rows([replace(_row("a.jpg"), domain="general", detector="general-head")], "parquet")
    assert table.to_pylist()[0]["domain"] == "general"
    older = table.drop_columns(["domain", "detector"])  # as shards were written before rows had them
    pq.write_table(older, tmp_path / "part-old-00000.parquet")
    with pytest.raises(ShardFolderError, match=r"earlier version, without the column\(s\) domain, detector"):
        open_shard_folder(tmp_path, "parquet")


def test_output_folder_of_another_kind_is_refused(tmp_path):
    writer = ShardWriter(tmp_path, "jsonl")
    writer.add(encode_rows([_row("a.jpg")], "jsonl"))
    writer.close()
    with pytest.raises(ShardFolderError, match="shards of another format"):
        open_shard_folder(tmp_path, "parquet")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ShardFolderError, match="is a file"):
        open_shard_folder(tmp_path / "file.txt", "jsonl")
    with pytest.raises(RayScoringError, match="batch_size must be at least 1"):
        RayScoringConfig(batch_size=0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray"], "needs --output FOLDER"),
        (["-o", "out", "--format", "csv", "--ray"], "writes parquet or jsonl shards, not csv"),
        (["-o", "out", "--timeline", "t.png", "--ray"], "can't be combined with --ray"),
        (["-o", "out", "--format", "parquet"], "needs --ray"),
    ],
)
def test_meaningless_flag_combinations_are_refused(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        main(["predict", str(tmp_path), *flags])


def test_ray_swallowing_an_input_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"took .* as the cluster's address; .* Put --ray after the inputs"):
        main(["predict", "-o", "out", "--ray", str(tmp_path)])
