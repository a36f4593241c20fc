"""Video mode on videos written with PyAV in the test: sampling, rotation, damage, faces, output."""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.aggregation import FrameAggregation
from deepfake_detector.cli.main import main
from deepfake_detector.errors import VideoLoadError
from deepfake_detector.faces.backends import load_face_detector
from deepfake_detector.scoring import Thresholds
from deepfake_detector.video.decode import FrameSampling, VideoReader
from tests.doc_pages import code_blocks
from tests.media import (
    background,
    iou,
    picture_with_faces,
    write_audio_only,
    write_video,
    write_zero_frame_video,
)

pytest.importorskip("av", reason="video tests need the 'video' extra")
pytest.importorskip("dlib", reason="face tests need the 'faces' extra")

FACE_AT = (70, 30, 110)  # left, top, side of the drawn face in each 240x180 frame


def _plain_frames(count: int, size=(96, 64)) -> list[Image.Image]:
    """Frames whose brightness encodes their index (index * 8), to tell which frame came back."""
    return [Image.new("RGB", size, (i * 8 % 256,) * 3) for i in range(count)]


def _face_frames(count: int, with_face=lambda i: True) -> tuple[list[Image.Image], tuple]:
    frames, box = [], None
    for i in range(count):
        if with_face(i):
            image, (box,) = picture_with_faces(240, 180, [FACE_AT], seed=7)
        else:
            image = background(240, 180, seed=8)
        frames.append(image)
    return frames, box


def _read(path, sampling: FrameSampling):
    with VideoReader(path, sampling) as reader:
        frames = list(reader)
    return reader, frames


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".mov"])
def test_frames_are_evenly_spaced_in_time(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", _plain_frames(30), fps=10)  # 3.0 s, frames every 0.1 s
    reader, frames = _read(path, FrameSampling(num_frames=8))
    # Targets are the middles of 8 slices of 3 s: 0.1875, 0.5625, ..., 2.8125 s; the nearest frames:
    assert [round(f.timestamp_s, 3) for f in frames] == [0.2, 0.6, 0.9, 1.3, 1.7, 2.1, 2.4, 2.8]
    assert [f.index for f in frames] == [2, 6, 9, 13, 17, 21, 24, 28]
    assert reader.duration_s == pytest.approx(3.0)
    assert reader.problem is None and reader.stopped_at_s is None
    assert np.asarray(frames[1].image).mean() == pytest.approx(6 * 8, abs=4)  # really frame 6


def test_every_k_seconds_and_short_videos(tmp_path):
    path = write_video(tmp_path / "clip.mkv", _plain_frames(30), fps=10)
    _, frames = _read(path, FrameSampling(every_s=0.75))
    # 0.75 s lies halfway between the frames at 0.7 and 0.8 s: a tie goes to the earlier frame.
    assert [round(f.timestamp_s, 2) for f in frames] == [0.0, 0.7, 1.5, 2.2]
    _, frames = _read(write_video(tmp_path / "short.mkv", _plain_frames(3)), FrameSampling(num_frames=32))
    assert [f.index for f in frames] == [0, 1, 2]  # each frame once, never repeated
    # As many samples as frames: every target lies halfway between two frames; each frame comes once.
    _, frames = _read(write_video(tmp_path / "twenty.mp4", _plain_frames(20)), FrameSampling(num_frames=20))
    assert [f.index for f in frames] == list(range(20))


def test_variable_frame_rate_is_sampled_by_time_not_by_index(tmp_path):
    times_ms = [0, 40, 80, 120, 1000, 1040, 1080, 2500, 2540, 2580, 2620, 2660, 2700, 2740, 2780, 2820]
    path = write_video(tmp_path / "vfr.mkv", _plain_frames(len(times_ms)), pts_ms=times_ms)
    reader, frames = _read(path, FrameSampling(num_frames=4))
    assert reader.duration_s == pytest.approx(2.92)  # the last frame starts at 2.82 and lasts 1/10 s
    # Targets at 1/8, 3/8, 5/8, 7/8 of 2.92 s: 0.365 -> 0.12 (not 1.0), 1.095 -> 1.08, 1.825 -> 2.5
    # (0.675 away, 1.08 is 0.745), 2.555 -> 2.54. By index (2, 6, 10, 14) it would be 0.08, 1.08, 2.58, 2.74.
    assert [round(f.timestamp_s, 2) for f in frames] == [0.12, 1.08, 2.5, 2.54]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    upright, (truth,) = picture_with_faces(240, 180, [FACE_AT], seed=7)
    stored = upright.rotate(-rotation, expand=True)  # what a phone stores for a display rotation
    path = write_video(tmp_path / "phone.mp4", [stored] * 10, rotation_deg=rotation)
    reader, frames = _read(path, FrameSampling(num_frames=2))
    assert reader.rotation_deg == rotation
    assert frames[0].image.size == upright.size
    difference = np.abs(np.asarray(frames[0].image, float) - np.asarray(upright, float)).mean()
    assert difference < 8  # codec noise only; a wrong turn gives a different picture altogether
    (found,) = load_face_detector("dlib-hog").detect(frames[0].image)  # not found sideways (90)
    assert iou(found.as_tuple(), truth) > 0.4


def test_truncated_video_scores_what_decodes_and_says_where_it_stopped(tmp_path, detector):
    path = write_video(tmp_path / "full.mkv", _face_frames(60)[0], fps=10)  # 6.0 s
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    prediction = detector.predict_video(cut, sampling=FrameSampling(num_frames=12))
    assert prediction.ok, prediction.error
    assert prediction.duration_s == pytest.approx(6.0)
    assert 1.0 < prediction.stopped_at_s < 5.0
    assert f"decoding stopped at {prediction.stopped_at_s:.2f} s of the 6.00 s" in prediction.decode_problem
    assert all(f.timestamp_s <= prediction.stopped_at_s for f in prediction.frames)
    assert 2 <= len(prediction.frames) < 12
    assert prediction.fake_score == pytest.approx(np.mean([f.fake_score for f in prediction.frames]))


def test_unscorable_files_give_a_clear_error(tmp_path, detector):
    audio = write_audio_only(tmp_path / "speech.mp4")
    zero = write_zero_frame_video(tmp_path / "zero.mkv")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video " * 50)
    for path, message in [
        (audio, "speech.mp4: no video stream to score (the file has: audio)"),
        (zero, "zero.mkv: the file ends before any video data (zero frames)"),
        (junk, "junk.mp4: not a readable video"),
        (tmp_path / "missing.mp4", "missing.mp4: no such file or directory"),
    ]:
        prediction = detector.predict_video(path)
        assert not prediction.ok and message in prediction.error
        assert prediction.fake_score is None and prediction.verdict is None
    with pytest.raises(VideoLoadError, match="no video stream"), VideoReader(audio):
        pass


@pytest.fixture(scope="module")
def detector(seed_checkpoint) -> Detector:
    return Detector.from_pretrained(seed_checkpoint, device="cpu")


def test_faces_are_found_scored_and_aggregated_per_frame(tmp_path, detector):
    frames, truth = _face_frames(20, with_face=lambda i: i % 4 != 3)  # every 4th frame has no face
    path = write_video(tmp_path / "talk.mp4", frames, fps=10)
    prediction = detector.predict_video(path, faces=True, sampling=FrameSampling(num_frames=20))
    assert prediction.ok and len(prediction.frames) == 20
    missing = [f for f in prediction.frames if f.no_face]
    assert [f.index for f in missing] == [3, 7, 11, 15, 19]
    assert prediction.no_face_frames == 5 and prediction.no_face is False
    for frame in prediction.frames:
        if not frame.no_face:
            assert len(frame.faces) == 1 and iou(frame.faces[0].box, truth) > 0.4
            assert frame.fake_score == frame.faces[0].fake_score
    # Frames without a face are counted but left out of the video score.
    with_face = [f.fake_score for f in prediction.frames if not f.no_face]
    assert prediction.fake_score == pytest.approx(np.mean(with_face))
    assert prediction.aggregation == {"strategy": "mean", "num_frames": 20, "face_strategy": "max"}
    top = detector.predict_video(
        path,
        faces=True,
        sampling=FrameSampling(num_frames=6),
        aggregation=FrameAggregation("top_k_mean", k=3),
    )
    top_scores = sorted(f.fake_score for f in top.frames if not f.no_face)
    assert len(top_scores) > 3 and top.fake_score == pytest.approx(np.mean(top_scores[-3:]))
    row = prediction.to_dict()
    assert row["kind"] == "video" and row["num_frames"] == 20 and row["no_face_frames"] == 5
    assert set(row["frames"][0]) == {"index", "timestamp_s", "fake_score", "no_face", "faces", "domain"}


def test_a_video_without_faces_is_scored_on_whole_frames(tmp_path, detector):
    path = write_video(
        tmp_path / "scenery.webm", [background(160, 120, seed=s) for s in range(10)], codec="libvpx"
    )
    prediction = detector.predict_video(path, faces=True, sampling=FrameSampling(num_frames=5))
    assert prediction.ok and prediction.no_face is True and prediction.no_face_frames == 5
    assert prediction.fake_score == pytest.approx(np.mean([f.fake_score for f in prediction.frames]))
    whole = detector.predict_video(path, faces=False, sampling=FrameSampling(num_frames=5))
    assert whole.no_face is None and whole.frames[0].faces is None
    assert whole.fake_score == pytest.approx(prediction.fake_score, abs=1e-6)


def _run(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def test_cli_scores_videos_and_images_together(tmp_path, seed_checkpoint):
    video = write_video(tmp_path / "talk.mp4", _face_frames(10)[0], fps=10)
    image, _ = picture_with_faces(240, 180, [FACE_AT], seed=9)
    image.save(tmp_path / "photo.png")
    write_audio_only(tmp_path / "voice.mp4")
    model = ["--model", str(seed_checkpoint), "--device", "cpu", "--quiet"]
    code, out = _run(["predict", str(tmp_path), "--faces", "--frames", "4", "--format", "jsonl", *model])
    assert code == 1  # the audio-only file failed; the others were scored
    rows = {json.loads(line)["source"].rsplit("/", 1)[-1]: json.loads(line) for line in out.splitlines()}
    assert rows["photo.png"]["no_face"] is False and len(rows["photo.png"]["faces"]) == 1
    assert rows["talk.mp4"]["kind"] == "video" and rows["talk.mp4"]["num_frames"] == 4
    assert "no video stream" in rows["voice.mp4"]["error"]

    code, out = _run(
        [
            "predict",
            str(video),
            str(tmp_path / "photo.png"),
            "--faces",
            "--frames",
            "4",
            "--format",
            "csv",
            *model,
        ]
    )
    header, *lines = list(csv.reader(out.splitlines()))
    assert header[-4:] == ["num_faces", "no_face", "num_frames", "no_face_frames"]
    assert lines[0][-4:] == ["4", "False", "4", "0"] and lines[1][-4:] == ["1", "False", "", ""]

    code, out = _run(["predict", str(video), "--faces", "--frames", "3", *model])
    assert code == 0 and "[3 frames, mean, image threshold, 0 without a face]" in out


def test_cli_timeline_and_plain_image_rows(tmp_path, seed_checkpoint):
    video = write_video(tmp_path / "talk.mkv", _face_frames(10)[0], fps=10)
    model = ["--model", str(seed_checkpoint), "--device", "cpu", "--quiet"]
    plot = tmp_path / "timeline.png"
    code, _ = _run(["predict", str(video), "--faces", "--frames", "4", "--timeline", str(plot), *model])
    assert code == 0 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image, _ = picture_with_faces(240, 180, [FACE_AT], seed=9)
    image.save(tmp_path / "photo.png")
    code, out = _run(["predict", str(tmp_path / "photo.png"), "--format", "csv", *model])
    header = (
        "source,label,fake_score,verdict,model,revision,error,decided_by,domain,detector,threshold,"
        "uncertain_from,threshold_from,ai_declared,provenance_evidence"
    )
    assert out.splitlines()[0] == header  # plain rows: no face columns
    # A face-mode CSV resumes in face mode only: the columns of its rows must match its header.
    results = str(tmp_path / "results.csv")
    assert _run(["predict", str(tmp_path / "photo.png"), "--faces", "-o", results, *model])[0] == 0
    with pytest.raises(SystemExit, match="written with --faces; resume it the same way"):
        _run(["predict", str(video), "-o", results, "--resume", *model])
    assert (
        _run(["predict", str(video), "--faces", "--frames", "2", "-o", results, "--resume", *model])[0] == 0
    )
    assert [row[-2] for row in csv.reader(Path(results).read_text().splitlines())] == ["num_frames", "", "2"]


def _readme_blocks(language: str) -> list[str]:
    """The blocks of docs/faces.md's "Commands" (once the README's "Faces and video" section)."""
    return code_blocks("docs/faces.md", "## Commands", language)


def test_readme_faces_and_video_examples_run(tmp_path, seed_checkpoint, monkeypatch, capsys):
    shutil.copytree(seed_checkpoint, tmp_path / "my-checkpoint")
    picture_with_faces(480, 260, [(20, 30, 140), (300, 60, 160)], seed=1)[0].save(tmp_path / "group.jpg")
    write_video(tmp_path / "clip.mp4", _face_frames(20)[0], fps=10)
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "talk.mkv", _face_frames(12)[0], fps=6)
    write_video(
        tmp_path / "clips" / "scenery.webm", [background(160, 120, s) for s in range(8)], codec="libvpx"
    )
    monkeypatch.chdir(tmp_path)
    (commands,) = _readme_blocks("console")
    for command in commands.strip().splitlines():
        argv = shlex.split(command)
        assert argv[0] == "deepfake-detector"
        code, _ = _run([*argv[1:], "--quiet"])
        assert code == 0, command
    assert (tmp_path / "timeline.png").is_file()
    rows = [json.loads(line) for line in (tmp_path / "videos.jsonl").read_text().splitlines()]
    assert [row["no_face"] for row in rows] == [True, False]  # scenery.webm, talk.mkv
    (code,) = _readme_blocks("python")
    exec(compile(code, "docs/faces.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "False" in printed[-2] and printed[-1].split()[0] in ("real", "fake", "uncertain")


def test_evaluate_on_labelled_videos_reports_video_level_metrics(tmp_path, detector):
    from deepfake_detector.data.labelled import load_labelled_images
    from deepfake_detector.evaluation.evaluate import evaluate

    manifest = tmp_path / "videos.csv"
    lines = ["path,label"]
    for index, label in enumerate(["real", "fake", "real", "fake"]):
        frames = _face_frames(6)[0] if index % 2 else [background(160, 120, seed=index)] * 6
        write_video(tmp_path / f"clip{index}.mkv", frames, fps=6)
        lines.append(f"clip{index}.mkv,{label}")
    manifest.write_text("\n".join(lines) + "\n")
    items = load_labelled_images(str(manifest), split=None)
    report = evaluate(detector, items, tmp_path / "report", faces=True, n_resamples=0, data=str(manifest))
    assert report.images == 4 and report.scored == 4
    rows = list(csv.DictReader((tmp_path / "report" / "predictions.csv").read_text().splitlines()))
    assert [row["path"].rsplit("/", 1)[-1] for row in rows] == [f"clip{i}.mkv" for i in range(4)]
    for index in (0, 1):  # one without a face, one with: the same score as predict_video gives
        expected = detector.predict_video(tmp_path / f"clip{index}.mkv", faces=True).fake_score
        assert float(rows[index]["fake_score"]) == pytest.approx(expected)


def _with_video_threshold(seed_checkpoint: Path, folder: Path, threshold: float) -> Path:
    """The seed checkpoint storing a video threshold (and 0.5 for images), as `save_video_thresholds`
    writes it."""
    from deepfake_detector.evaluation.calibration import save_video_thresholds

    shutil.copytree(seed_checkpoint, folder)
    save_video_thresholds(folder, Thresholds.single(threshold), {}, {"clips": 2, "split": "val"})
    return folder


def test_a_video_is_decided_by_the_stored_video_threshold_and_says_so(tmp_path, seed_checkpoint, detector):
    frames, _ = _face_frames(8)
    path = write_video(tmp_path / "talk.mp4", frames, fps=8)
    sampling = FrameSampling(num_frames=4)
    plain = detector.predict_video(path, faces=True, sampling=sampling)
    assert (plain.threshold, plain.uncertain_from, plain.threshold_from) == (0.5, None, "image")
    # A video threshold on the other side of the clip's score from the image one (0.5): the verdict flips.
    score = plain.fake_score
    threshold = float(np.nextafter(score, 1.0)) if score >= 0.5 else score
    model = _with_video_threshold(seed_checkpoint, tmp_path / "video-calibrated", threshold)
    calibrated = Detector.from_pretrained(model, device="cpu")
    assert calibrated.calibration.video_thresholds.to_dict() == {"real": threshold, "fake": threshold}
    clip = calibrated.predict_video(path, faces=True, sampling=sampling)
    assert clip.fake_score == pytest.approx(score, abs=1e-12)
    assert (clip.threshold, clip.uncertain_from, clip.threshold_from) == (threshold, None, "video")
    assert clip.verdict == ("fake" if clip.fake_score >= threshold else "real") != plain.verdict
    assert clip.label == {"fake": "Deepfake", "real": "Realism"}[clip.verdict]
    for frame in clip.frames:  # each face is an image crop, judged by the image threshold
        assert all(face.threshold == 0.5 for face in frame.faces)
    row = clip.to_dict()
    assert (row["threshold"], row["threshold_from"], row["label"]) == (threshold, "video", clip.label)
    # Images keep the image threshold; the caller's threshold replaces both.
    image = calibrated.predict(frames[0])
    assert (image.threshold, image.threshold_from) == (0.5, "image")
    caller = Detector.from_pretrained(model, device="cpu", thresholds=Thresholds.single(0.25))
    clip = caller.predict_video(path, faces=True, sampling=sampling)
    assert (clip.threshold, clip.threshold_from) == (0.25, "caller")
    # The table says which threshold decided; info lists the video rule.
    code, out = _run(["predict", str(path), "--faces", "--frames", "4", "--model", str(model), "-q"])
    assert code == 0 and "[4 frames, mean, video threshold, 0 without a face]" in out
    assert f"{threshold:.3g}" in out.splitlines()[1].split()
    code, out = _run(["info", "--model", str(model)])
    assert f"video:        fake >= {threshold:.3g}" in out


def test_a_video_threshold_is_chosen_per_domain_and_falls_back_to_the_image_rule():
    from deepfake_detector.evaluation.calibration import compute_video_thresholds
    from deepfake_detector.scoring import Calibration
    from deepfake_detector.stored_settings import SETTINGS_KEY, StoredSettings

    labels = ["real", "real", "fake", "fake", "real", "fake"]
    scores = [0.2, 0.6, 0.7, 0.9, 0.1, 0.3]
    domains = ["face", "face", "face", "face", "general", "general"]
    pooled, own = compute_video_thresholds(labels, scores, domains, names=("face", "general"), target_fpr=0.0)
    assert pooled is None and own["face"].fake == float(np.nextafter(0.6, 1.0))  # above every real face clip
    assert own["general"].fake == 0.5  # above every real general clip (0.1), and never below even odds
    pooled, own = compute_video_thresholds(labels, scores, [None] * 6, target_fpr=0.0)
    assert pooled.fake == float(np.nextafter(0.6, 1.0)) and own == {}
    stored = {"face": Thresholds.single(0.7)}
    calibration = Calibration(
        thresholds=Thresholds.single(0.4),
        domain_thresholds={"general": Thresholds.single(0.8)},
        video_domain_thresholds=stored,
    )
    assert (
        calibration.rule_for("face", video=True).thresholds.fake,
        calibration.rule_for("face", video=True).origin,
    ) == (0.7, "video")
    general = calibration.rule_for("general", video=True)  # no video rule of its own: its image rule
    assert (general.thresholds.fake, general.origin) == (0.8, "image")
    assert calibration.rule_for(None, video=True).origin == "image"
    stored = StoredSettings(calibration=calibration)  # the video rules survive the stored form
    assert StoredSettings.from_config({SETTINGS_KEY: stored.to_dict()}) == stored
    caller = calibration.with_thresholds(Thresholds(real=0.1, fake=0.9))
    assert caller.rule_for("face", video=True).row_fields() == {
        "threshold": 0.9,
        "uncertain_from": 0.1,
        "threshold_from": "caller",
    }
