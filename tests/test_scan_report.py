"""Scan reports (``deepfake-detector report``, ``predict --report``): rows read back from every format
predict writes, the summary's figures, thumbnails that never fail a report, and the page itself in a
real headless Chromium (Debian's, driven by Playwright, as in tests/test_web_page.py): its counts, its
filters, and attacker-controlled file names and metadata shown as text, never run."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.scan_report import (
    ResultsFileError,
    RunSettings,
    compute_summary,
    load_overlay_paths,
    load_result_rows,
    render_report,
    resolve_run_settings,
)
from deepfake_detector.scan_report.rows import parse_evidence
from deepfake_detector.scan_report.summary import is_video_row
from deepfake_detector.scan_report.thumbnails import load_image_thumbnail, load_video_thumbnail
from deepfake_detector.scoring import Calibration, Thresholds

from .browser import chromium_page
from .conftest import jpeg_bytes
from .media import picture_with_faces, write_video

HOSTILE_NAME = "<img src=x onerror=alert(1)>.jpg"
HOSTILE_METADATA = (
    "a photo <script>window.pwned = 1</script> of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7"
)
# As tests/test_web_page.py: CI sets this, so that there a missing browser is a failure, not a skip.


def page_data(report: Path) -> dict:
    """The JSON island a report page draws itself from."""
    html = report.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(match[1])


def write_generated_png(path: Path, parameters: str) -> Path:
    """A PNG with an AUTOMATIC1111-style ``parameters`` text chunk, as Stable Diffusion web UIs save."""
    info = PngInfo()
    info.add_text("parameters", parameters)
    Image.open(io.BytesIO(jpeg_bytes(96, 128, seed=7))).save(path, pnginfo=info)
    return path


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, seed_checkpoint) -> SimpleNamespace:
    """A real ``predict --report`` run over real and fake images, a broken file, a video, a PNG with
    generation metadata and an image named like an HTML tag; the threshold splits the images' scores."""
    pytest.importorskip("av", reason="the video extra is not installed")
    root = tmp_path_factory.mktemp("mixed-run")
    uploads = root / "uploads"
    uploads.mkdir()
    for seed in range(4):
        (uploads / f"photo-{seed}.jpg").write_bytes(jpeg_bytes(96, 128, seed=seed))
    shutil.copy(uploads / "photo-0.jpg", uploads / HOSTILE_NAME)
    (uploads / "broken.jpg").write_bytes(b"not an image at all")
    write_generated_png(uploads / "generated.png", HOSTILE_METADATA)
    frames = [picture_with_faces(160, 120, [(20 + 4 * i, 10, 90)], seed=i)[0] for i in range(6)]
    write_video(uploads / "clip.mp4", frames, fps=10)
    images = sorted(
        path for path in uploads.iterdir() if path.suffix in (".jpg", ".png") and "broken" not in path.name
    )
    scores = [
        row.fake_score for row in Detector.from_pretrained(seed_checkpoint, device="cpu").predict(images)
    ]
    assert min(scores) < max(scores), "the tiny model must score the images apart for a mixed run"
    threshold = round((min(scores) + max(scores)) / 2, 6)
    results, report = root / "results.jsonl", root / "report.html"
    flags = ["--threshold", str(threshold), "--output", str(results), "--report", str(report), "--quiet"]
    code = main(["predict", str(uploads), "--model", str(seed_checkpoint), *flags])
    assert code == 1  # the broken file is an error row
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    (generated,) = [row for row in rows if row["source"].endswith("generated.png")]
    findings = [(item["check"], item["name"]) for item in generated["provenance"]["evidence"]]
    assert ("metadata", "png_parameters") in findings  # the provenance stage ran, as predict does by default
    return SimpleNamespace(
        root=root, uploads=uploads, results=results, report=report, rows=rows, threshold=threshold
    )


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory, domain_checkpoint, varied_images) -> SimpleNamespace:
    """A ``predict --report`` run of a checkpoint with a face and a general head (its probe sends the
    images both ways) and a broken file, written as JSON Lines and as CSV."""
    root = tmp_path_factory.mktemp("domain-run")
    (root / "broken.jpg").write_bytes(b"not an image at all")
    inputs = [*(str(path) for path in varied_images[:6]), str(root / "broken.jpg")]
    results, flat, report = root / "results.jsonl", root / "results.csv", root / "report.html"
    args = ["predict", *inputs, "--model", str(domain_checkpoint), "--quiet"]
    assert main([*args, "--output", str(results), "--report", str(report)]) == 1  # the broken file
    assert main([*args, "--output", str(flat)]) == 1
    return SimpleNamespace(results=results, flat=flat, report=report, rows=load_result_rows(results))


@pytest.fixture(scope="module")
def calibrated_domain_run(tmp_path_factory, calibrated_domain_checkpoint, varied_images) -> SimpleNamespace:
    """``predict --report`` runs of a checkpoint whose face and general thresholds are far apart (faces
    fake at or above 0.123; general images real below 0.3, fake at or above 0.954): one with its own
    thresholds, one with ``--threshold 0.5``."""
    root = tmp_path_factory.mktemp("calibrated-domain-run")
    args = [
        "predict",
        *(str(path) for path in varied_images[:6]),
        "--model",
        str(calibrated_domain_checkpoint),
    ]
    runs = {}
    for name, flags in (("own", []), ("fixed", ["--threshold", "0.5"])):
        results, report = root / f"{name}.jsonl", root / f"{name}.html"
        assert main([*args, *flags, "--output", str(results), "--report", str(report), "--quiet"]) == 0
        runs[name] = SimpleNamespace(results=results, report=report, rows=load_result_rows(results))
    stored = json.loads((calibrated_domain_checkpoint / "config.json").read_text())["deepfake_detector"]
    rules = {domain: Thresholds(**entry["thresholds"]) for domain, entry in stored["domains"].items()}
    return SimpleNamespace(**runs, rules=rules)


def expected_counts(rows: list[dict]) -> dict[str, int]:
    counts = {name: sum(row["verdict"] == name for row in rows) for name in ("fake", "uncertain", "real")}
    counts["error"] = sum(row["error"] is not None for row in rows)
    counts["video"] = sum(row.get("kind") == "video" for row in rows)
    counts["total"] = len(rows)
    return counts


# ------------------------------------------------------------------ reading rows back


def test_rows_read_back_from_jsonl_json_and_csv_are_predicts_rows(mixed_run, tmp_path, seed_checkpoint):
    assert load_result_rows(mixed_run.results) == mixed_run.rows
    as_json = tmp_path / "results.json"
    as_csv = tmp_path / "results.csv"
    for output in (as_json, as_csv):
        main(["predict", str(mixed_run.uploads), "--model", str(seed_checkpoint), "-o", str(output), "-q"])
    by_source = {row["source"]: row for row in load_result_rows(as_json)}
    assert set(by_source) == {row["source"] for row in mixed_run.rows}
    flat = {row["source"]: row for row in load_result_rows(as_csv)}
    assert set(flat) == set(by_source)
    for source, row in flat.items():  # typed like the JSON rows, for the columns CSV has
        assert row["fake_score"] == by_source[source]["fake_score"]
        assert row["verdict"] == by_source[source]["verdict"] and row["error"] == by_source[source]["error"]
        for name in ("label", "threshold", "uncertain_from", "threshold_from"):  # threshold: a float again
            assert row[name] == by_source[source][name], name
    assert is_video_row(flat[str(mixed_run.uploads / "clip.mp4")])  # told apart by its suffix


def test_a_partial_last_line_is_ignored_and_bad_files_are_refused_by_name(mixed_run, tmp_path):
    partial = tmp_path / "killed.jsonl"
    partial.write_text(mixed_run.results.read_text() + '{"source": "half')
    assert len(load_result_rows(partial)) == len(mixed_run.rows)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"source": "a"}\nnot json\n{"source": "b"}\n')
    with pytest.raises(ResultsFileError, match="line 2"):
        load_result_rows(broken)
    with pytest.raises(ResultsFileError, match="no such results file"):
        load_result_rows(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ResultsFileError, match="no result rows"):
        load_result_rows(tmp_path / "empty.jsonl")
    (tmp_path / "other.csv").write_text("path,label\na.jpg,1\n")
    with pytest.raises(ResultsFileError, match="no 'source' column"):
        load_result_rows(tmp_path / "other.csv")
    (tmp_path / "shards").mkdir()
    with pytest.raises(ResultsFileError, match="no result shards"):
        load_result_rows(tmp_path / "shards")


def test_shard_folders_of_both_formats_read_back(mixed_run, tmp_path):
    pytest.importorskip("pyarrow")
    from deepfake_detector.io.shards import ShardWriter, encode_rows
    from deepfake_detector.results import Prediction

    predictions = [
        Prediction("a.jpg", "Deepfake", 0.9, "fake", "m"),
        Prediction.failed("b.jpg", "b.jpg: empty file (0 bytes)", model="m"),
    ]
    for fmt in ("parquet", "jsonl"):
        folder = tmp_path / fmt
        folder.mkdir()
        writer = ShardWriter(folder, fmt, rows_per_shard=1)
        writer.add(encode_rows(predictions, fmt))
        writer.close()
        rows = load_result_rows(folder)
        assert [(row["source"], row["fake_score"], row["verdict"], row["error"]) for row in rows] == [
            ("a.jpg", 0.9, "fake", None),
            ("b.jpg", None, None, "b.jpg: empty file (0 bytes)"),
        ]


def test_flattened_provenance_is_parsed_back_even_when_details_hold_the_separator(tmp_path):
    from deepfake_detector.provenance.records import Finding, flatten_findings

    # A detail crafted to look like a second, decisive finding stays part of its own finding.
    forged = "Steps: 20; Sampler: Euler; c2pa:c2pa_ai_generated=forged \\ end"
    written = [Finding("metadata", "png_parameters", forged), Finding("watermark", "sd_watermark", "found")]
    findings = parse_evidence(flatten_findings(written))
    assert findings == [
        {"check": "metadata", "name": "png_parameters", "detail": forged},
        {"check": "watermark", "name": "sd_watermark", "detail": "found"},
    ]
    flat = tmp_path / "flat.csv"
    with flat.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = (
            "source,label,fake_score,verdict,model,revision,error,decided_by,ai_declared,provenance_evidence"
        )
        writer.writerow(header.split(","))
        writer.writerow(
            [
                "gen.png",
                "Deepfake",
                "0.2",
                "fake",
                "m",
                "",
                "",
                "provenance",
                "True",
                "c2pa:c2pa_ai_generated=trainedAlgorithmicMedia",
            ]
        )
        writer.writerow(["plain.jpg", "Realism", "0.1", "real", "m", "", "", "model", "", ""])
    generated, plain = load_result_rows(flat)
    assert generated["decided_by"] == "provenance" and generated["fake_score"] == 0.2
    assert generated["provenance"] == {
        "ai_declared": True,
        "evidence": [{"check": "c2pa", "name": "c2pa_ai_generated", "detail": "trainedAlgorithmicMedia"}],
        "c2pa": None,
    }
    assert "provenance" not in plain  # nothing found, nothing declared: no record to show
    # Flat columns can't tell "checked, nothing found" from "not checked": the summary says so.
    counts = compute_summary([generated, plain])["provenance"]
    assert counts["flat"] == 2 and counts["checked"] == 1 and counts["with_evidence"] == 1
    # Written before rows carried a domain: read back without one, counted as scored without one.
    assert "domain" not in generated and compute_summary([generated, plain])["domains"] == {
        "counts": {},
        "none": 2,
    }


def test_rows_cards_and_summary_carry_each_inputs_domain_and_head(domain_run, tmp_path):
    scored = [row for row in domain_run.rows if row["error"] is None]
    domains = [row["domain"] for row in scored]
    assert set(domains) == {"face", "general"} and len(scored) == len(domain_run.rows) - 1
    assert all(row["detector"] == f"{row['domain']}-head" for row in scored)
    flat = {row["source"]: row for row in load_result_rows(domain_run.flat)}
    for row in domain_run.rows:  # CSV text reads back as the JSON values, None for the error row
        assert (flat[row["source"]]["domain"], flat[row["source"]]["detector"]) == (
            row["domain"],
            row["detector"],
        )
    data = page_data(domain_run.report)
    assert data["summary"]["domains"] == {
        "counts": {"face": domains.count("face"), "general": domains.count("general")},
        "none": 0,
    }
    for card, row in zip(data["cards"], domain_run.rows, strict=True):
        assert (card["domain"], card["detector"]) == (row["domain"], row["detector"])

    # Rows of a run before domains (no such keys) still make a report: no domain on the card.
    old = {key: value for key, value in scored[0].items() if key not in ("domain", "detector")}
    (card,) = page_data(render_report([old], tmp_path / "old.html", thumbnails=False).path)["cards"]
    assert (card["domain"], card["detector"]) == (None, None)
    assert compute_summary([old])["domains"] == {"counts": {}, "none": 1}


# ------------------------------------------------------------------ summary and settings


def test_summary_counts_verdicts_errors_bins_and_provenance(mixed_run):
    summary = compute_summary(mixed_run.rows)
    assert {key: summary["counts"][key] for key in expected_counts(mixed_run.rows)} == expected_counts(
        mixed_run.rows
    )
    histogram = summary["histogram"]["counts"]
    for verdict in ("fake", "real"):
        scores = [row["fake_score"] for row in mixed_run.rows if row["verdict"] == verdict]
        assert sum(histogram[verdict]) == len(scores)
        for score in scores:
            assert histogram[verdict][min(int(score * 20), 19)] >= 1
    assert summary["models"] == [
        {"model": mixed_run.rows[0]["model"], "revision": None, "rows": len(mixed_run.rows)}
    ]

    rows = [
        {
            "source": "a",
            "verdict": "fake",
            "fake_score": 0.1,
            "error": None,
            "decided_by": "provenance",
            "provenance": {
                "ai_declared": True,
                "evidence": [
                    {"check": "c2pa", "name": "c2pa_ai_generated", "detail": "x"},
                    {"check": "metadata", "name": "png_parameters", "detail": "y"},
                ],
                "c2pa": {"state": "valid", "ai_generated": True},
                "checks": ["c2pa", "metadata", "watermark"],
            },
        },
        {
            "source": "b",
            "verdict": "real",
            "fake_score": 0.2,
            "error": None,
            "decided_by": "model",
            "provenance": {"ai_declared": None, "evidence": [], "c2pa": None},
        },
        {"source": "c", "verdict": "real", "fake_score": 0.3, "error": None},  # a run without the stage
    ]
    provenance = compute_summary(rows)["provenance"]
    assert provenance["checked"] == 2 and provenance["with_evidence"] == 1
    assert provenance["ai_declared"] == {"true": 1, "false": 0, "unknown": 1}
    assert provenance["decided_by_provenance"] == 1
    assert provenance["by_check"] == {"c2pa": 1, "metadata": 1}
    assert provenance["c2pa_states"] == {"valid": 1}
    assert provenance["checks"] == {"c2pa": 1, "metadata": 1, "watermark": 1} and provenance["flat"] == 0


def test_thresholds_come_from_the_run_or_the_checkpoint_only_when_every_verdict_agrees(
    mixed_run, seed_checkpoint
):
    known = resolve_run_settings(
        mixed_run.rows, RunSettings(Thresholds.single(mixed_run.threshold), "the run")
    )
    assert known.thresholds == Thresholds.single(mixed_run.threshold)
    # Read later from the file: the checkpoint stores no thresholds (0.5), and the run used another.
    later = resolve_run_settings(mixed_run.rows)
    assert later.thresholds is None and later.engine is None
    assert "disagree" in later.thresholds_source and "--threshold" in later.thresholds_source
    fake = min(row["fake_score"] for row in mixed_run.rows if row["verdict"] == "fake")
    assert f"at most {fake:.4g}" in later.thresholds_source  # what the verdicts do say

    at_half = [
        {**row, "verdict": "fake" if row["fake_score"] >= 0.5 else "real"}
        for row in mixed_run.rows
        if row["error"] is None
    ]
    agreed = resolve_run_settings(at_half)
    assert agreed.thresholds == Thresholds() and "config.json" in agreed.thresholds_source
    # Provenance decides some verdicts whatever the score: they say nothing about the thresholds.
    overruled = [
        *at_half,
        {
            "source": "x",
            "fake_score": 0.01,
            "verdict": "fake",
            "error": None,
            "decided_by": "provenance",
            "model": at_half[0]["model"],
            "revision": None,
        },
    ]
    assert resolve_run_settings(overruled).thresholds == Thresholds()
    # The detector's own thresholds are refused when resumed rows were scored with others.
    mixed = resolve_run_settings(at_half, RunSettings(Thresholds.single(0.001), "the detector"))
    assert mixed.thresholds is None and "other thresholds" in mixed.thresholds_source
    hub = resolve_run_settings([{**at_half[0], "model": "someone/not-cached-anywhere"}])
    assert hub.thresholds is None and "can't be found" in hub.thresholds_source


def test_a_clip_decided_by_a_video_threshold_shows_it_and_leaves_the_runs_rules_known(mixed_run, tmp_path):
    from deepfake_detector.scan_report.page import _entry

    at_half = [
        {**row, "verdict": "fake" if row["fake_score"] >= 0.5 else "real"}
        for row in mixed_run.rows
        if row["error"] is None
    ]
    # A clip at 0.6 called real by a video threshold of 0.7: the image rule (0.5) would call it fake.
    clip = {**at_half[0], "source": "clip.mp4", "kind": "video", "fake_score": 0.6, "verdict": "real"}
    decided = {**clip, "threshold": 0.7, "uncertain_from": None, "threshold_from": "video"}
    assert resolve_run_settings([*at_half, decided]).thresholds == Thresholds()
    assert resolve_run_settings([*at_half, clip]).thresholds is None  # a row that doesn't say: disagrees
    card = _entry(0, decided, None, {}).card
    assert (card["threshold"], card["uncertain_from"], card["threshold_from"]) == (0.7, None, "video")
    assert "label" not in card  # the deprecated label is not shown: the verdict is


def test_a_domain_models_rows_are_checked_against_their_own_domains_thresholds(calibrated_domain_run):
    from deepfake_detector.scoring import compute_verdict

    rules = calibrated_domain_run.rules
    rows = calibrated_domain_run.own.rows
    assert {row["domain"] for row in rows} == {"face", "general"}
    for row in rows:
        assert row["verdict"] == compute_verdict(row["fake_score"], rules[row["domain"]])
    # One pooled rule would disagree with some verdicts: what made such a run's thresholds "unknown".
    assert any(compute_verdict(row["fake_score"], Thresholds()) != row["verdict"] for row in rows)
    by_domain = {domain: rule.to_dict() for domain, rule in rules.items()}

    # predict --report: the detector's rules, every domain's.
    settings = page_data(calibrated_domain_run.own.report)["summary"]["settings"]
    assert settings["domain_thresholds"] == by_domain and settings["thresholds"] == Thresholds().to_dict()
    # Later, from the file: read from the checkpoint's config, and every verdict agrees with its domain's.
    later = resolve_run_settings(rows)
    assert later.domain_thresholds == rules and later.thresholds == Thresholds()
    assert later.thresholds_source.endswith("config.json; every verdict agrees") and later.engine is None

    # With --threshold, one rule decided every row: the run says so, and the file read later
    # disagrees with the stored rules, naming them and bounding the threshold per domain.
    fixed = calibrated_domain_run.fixed
    settings = page_data(fixed.report)["summary"]["settings"]
    assert settings["thresholds"] == Thresholds().to_dict() and settings["domain_thresholds"] is None
    later = resolve_run_settings(fixed.rows)
    assert later.thresholds is None and not later.domain_thresholds
    assert "disagree" in later.thresholds_source and "--threshold" in later.thresholds_source
    assert "face: fake at or above 0.123457; general: real below 0.3" in later.thresholds_source
    assert "; general: the verdicts put the fake threshold above" in later.thresholds_source
    # Rows without a domain (a model without domains, or rows before them) keep the pooled rule.
    old = [{key: value for key, value in row.items() if key != "domain"} for row in fixed.rows]
    pooled = RunSettings.from_calibration(Calibration(domain_thresholds=rules), "the run")
    assert resolve_run_settings(old, pooled) == pooled


# ------------------------------------------------------------------ thumbnails


def test_thumbnails_are_upright_bounded_and_never_fail(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    Image.new("RGB", (300, 100), (200, 30, 30)).save(tmp_path / "sideways.jpg", exif=exif.tobytes())
    sideways = load_image_thumbnail(tmp_path / "sideways.jpg", 64)
    assert sideways.source_size == (100, 300)
    with Image.open(io.BytesIO(sideways.jpeg)) as small:
        assert small.size == (21, 64)
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "truncated.jpg").write_bytes(jpeg_bytes(200, 200)[:900])
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block forever
    for name, why in [
        ("missing.jpg", "no such file"),
        ("text.jpg", "not an image"),
        ("truncated.jpg", "truncated"),
        ("pipe.jpg", "not a regular file"),
    ]:
        thumbnail = load_image_thumbnail(tmp_path / name)
        assert thumbnail.jpeg is None and why in thumbnail.note
    not_a_video = load_video_thumbnail(tmp_path / "text.jpg")
    assert not_a_video.jpeg is None and not_a_video.note


def test_a_videos_thumbnail_is_the_first_frame_its_row_scored_with_that_frames_faces(tmp_path):
    pytest.importorskip("av", reason="the video extra is not installed")
    frames = [Image.new("RGB", (64, 48), (20 * i, 0, 0)) for i in range(10)]
    video = write_video(tmp_path / "ramp.mp4", frames, fps=10)
    thumbnail = load_video_thumbnail(video, 32, {"strategy": "mean", "num_frames": 2})
    assert thumbnail.source_size == (64, 48) and thumbnail.frame_index == 2  # 2 frames: at 0.25 s and 0.75 s
    rows = [
        {
            "source": str(video),
            "kind": "video",
            "fake_score": 0.4,
            "verdict": "real",
            "error": None,
            "model": "m",
            "aggregation": {"strategy": "mean", "num_frames": 2},
            "frames": [
                {
                    "index": 2,
                    "timestamp_s": 0.2,
                    "fake_score": 0.3,
                    "faces": [{"box": [1, 2, 30, 40], "fake_score": 0.3, "verdict": "real"}],
                    "domain": "face",
                },
                {"index": 7, "timestamp_s": 0.7, "fake_score": 0.5, "faces": []},  # no domain: older
            ],
        }
    ]
    report = render_report(rows, tmp_path / "video.html", settings=RunSettings(Thresholds()))
    (card,) = page_data(report.path)["cards"]
    assert card["faces"] == [
        {"box": [1, 2, 30, 40], "fake_score": 0.3, "verdict": "real", "detection_score": None}
    ]
    # (time, score, domain) per frame: the detail chart names each frame's domain
    assert card["video"]["timeline"] == [[0.2, 0.3, "face"], [0.7, 0.5, None]] and card["thumbnail"] == 0


# ------------------------------------------------------------------ the page's file


def test_the_page_is_one_file_with_attacker_text_only_inside_escaped_json(mixed_run):
    html = mixed_run.report.read_text(encoding="utf-8")
    assert "<img src=x" not in html and "<script>window.pwned" not in html
    assert "\\u003cimg src=x onerror=alert(1)\\u003e.jpg" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no CDN, nothing fetched
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)[1]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    data = page_data(mixed_run.report)
    assert [card["source"] for card in data["cards"]] == [row["source"] for row in mixed_run.rows]
    assert data["summary"]["settings"]["thresholds"] == Thresholds.single(mixed_run.threshold).to_dict()
    assert data["summary"]["settings"]["engine"] == "torch"
    pictured = [card for card in data["cards"] if card["thumbnail"] is not None]
    assert len(pictured) == len(mixed_run.rows) - 1  # all but the broken file
    (broken,) = [card for card in data["cards"] if card["error"]]
    assert "not an image" in broken["thumbnail_note"]


def test_long_metadata_is_cut_and_non_finite_numbers_become_unknown(tmp_path):
    rows = [
        {
            "source": "x.jpg",
            "verdict": "real",
            "fake_score": float("nan"),
            "error": None,
            "model": "m",
            "provenance": {
                "ai_declared": False,
                "evidence": [{"check": "metadata", "name": "exif_software", "detail": "A" * 50_000}],
            },
        }
    ]
    report = render_report(rows, tmp_path / "r.html", thumbnails=False)
    (card,) = page_data(report.path)["cards"]
    detail = card["provenance"]["evidence"][0]["detail"]
    assert len(detail) < 2100 and detail.endswith("(48,000 more characters not shown)")
    assert card["fake_score"] is None


def test_report_command_reads_results_and_explanations_without_scoring(
    mixed_run, tmp_path, seed_checkpoint, monkeypatch
):
    pytest.importorskip("matplotlib", reason="the explain extra is not installed")
    heatmaps = tmp_path / "heatmaps"
    photo = mixed_run.uploads / "photo-1.jpg"
    assert main(["explain", str(photo), "--model", str(seed_checkpoint), "--out", str(heatmaps)]) == 0
    monkeypatch.setattr(Detector, "from_pretrained", None)  # nothing is scored again
    out = tmp_path / "again.html"
    assert (
        main(["report", str(mixed_run.results), "--out", str(out), "--explanations", str(heatmaps), "-q"])
        == 0
    )
    cards = {card["source"]: card for card in page_data(out)["cards"]}
    assert cards[str(photo)]["heatmap"] is not None
    assert [source for source, card in cards.items() if card["heatmap"] is not None] == [str(photo)]
    assert load_overlay_paths(heatmaps, [str(photo), "elsewhere/photo-1.jpg"])[0] == {}  # two of that name
    assert main(["report", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    with pytest.raises(SystemExit, match="does not exist"):
        main(["report", str(mixed_run.results), "--out", str(tmp_path / "no" / "such" / "r.html")])


def test_predict_keeps_its_rows_when_the_report_fails(tmp_path, seed_checkpoint, monkeypatch, capsys):
    import deepfake_detector.scan_report as scan_report

    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(seed=1))
    out, report = tmp_path / "rows.jsonl", tmp_path / "report.html"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(scan_report, "render_report", broken)
    code = main(
        [
            "predict",
            str(tmp_path / "a.jpg"),
            "--model",
            str(seed_checkpoint),
            "-o",
            str(out),
            "--report",
            str(report),
            "-q",
        ]
    )
    assert code == 1 and not report.exists()
    assert json.loads(out.read_text())["verdict"] in ("real", "fake")
    assert (
        f"cannot write the report {report} (OSError: disk full); the rows are in {out}"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])  # read back from the file; kept while scoring
def test_resumed_predict_reports_every_row_of_its_output(tmp_path, seed_checkpoint, suffix):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "first.jpg").write_bytes(jpeg_bytes(seed=1))
    out, report = tmp_path / f"rows{suffix}", tmp_path / "report.html"
    assert main(["predict", str(folder), "--model", str(seed_checkpoint), "-o", str(out), "-q"]) == 0
    (folder / "second.jpg").write_bytes(jpeg_bytes(seed=2))
    flags = ["-o", str(out), "--resume", "--report", str(report), "-q"]
    for _ in range(2):  # the second run scores nothing new, and its report still shows every row
        assert main(["predict", str(folder), "--model", str(seed_checkpoint), *flags]) == 0
        names = sorted(Path(card["source"]).name for card in page_data(report)["cards"])
        assert names == ["first.jpg", "second.jpg"]


def test_a_ray_run_reports_every_row_of_its_shard_folder(tmp_path, seed_checkpoint, monkeypatch):
    pytest.importorskip("pyarrow", reason="the ray extra is not installed")
    import deepfake_detector.cli.ray_scoring as ray_cli
    from deepfake_detector.io.shards import ShardWriter, encode_rows

    def scored_into_shards(args, inputs):  # what Ray leaves behind, without starting a cluster for it
        predictions = Detector.from_pretrained(seed_checkpoint, device="cpu").predict(
            sorted(folder.glob("*.jpg"))
        )
        writer = ShardWriter(args.output, "parquet", rows_per_shard=2)
        for prediction in predictions:
            writer.add(encode_rows([prediction], "parquet"))
        writer.close()
        return 1

    monkeypatch.setattr(ray_cli, "run_ray", scored_into_shards)
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        (folder / f"photo-{seed}.jpg").write_bytes(jpeg_bytes(seed=seed))
    (folder / "broken.jpg").write_bytes(b"not an image")
    shards, report = tmp_path / "scored", tmp_path / "ray.html"
    shards.mkdir()
    flags = ["--threshold", "0.3", "--output", str(shards), "--report", str(report)]
    assert main(["predict", str(folder), "--model", str(seed_checkpoint), *flags, "-q", "--ray"]) == 1
    data = page_data(report)
    assert sorted(card["source"] for card in data["cards"]) == sorted(str(path) for path in folder.iterdir())
    assert data["summary"]["counts"]["error"] == 1 and len(list(shards.glob("part-*.parquet"))) == 2
    assert data["summary"]["settings"]["thresholds"] == {"real": 0.3, "fake": 0.3}  # from the flags
    assert data["meta"]["results"] == str(shards)


# ------------------------------------------------------------------ the page in a real browser


@pytest.fixture
def browser(tmp_path):
    with chromium_page(tmp_path / "profile", width=1280, offline=True) as page:  # the report needs no network
        page.alerts = []  # every alert/confirm the page opens: a script that ran
        page.requests = []  # every request that is not the page's own file or its data: images
        page.on("dialog", lambda dialog: (page.alerts.append(dialog.message), dialog.dismiss()))
        page.on(
            "request",
            lambda request: request.url.startswith(("file:", "data:")) or page.requests.append(request.url),
        )
        page.on("pageerror", lambda error: page.alerts.append(f"page error: {error}"))
        yield page


def open_report(page, report: Path) -> None:
    page.goto(report.resolve().as_uri())
    page.wait_for_selector("html[data-ready=true]", state="attached", timeout=30_000)


def shown(page) -> list[str]:
    """The sources of the cards in the grid, in display order (the small runs here fit in view)."""
    count = int(page.locator("#shown-count").get_attribute("data-shown"))
    sources = page.evaluate(
        """() => [...document.querySelectorAll("#grid .card")]
            .sort((a, b) => a.offsetTop - b.offsetTop || a.offsetLeft - b.offsetLeft)
            .map((card) => card.querySelector(".name").title)"""
    )
    assert len(sources) == count
    return sources


def test_mixed_run_page_shows_the_counts_filters_and_runs_no_hostile_script(browser, mixed_run):
    page = browser
    open_report(page, mixed_run.report)
    expected = expected_counts(mixed_run.rows)
    assert (
        expected["fake"] >= 1 and expected["real"] >= 1 and expected["error"] == 1 and expected["video"] == 1
    )
    for key in ("total", "fake", "real", "error", "video"):
        assert int(page.locator(f"#count-{key}").get_attribute("data-count")) == expected[key], key
        assert page.locator(f"#count-{key} .number").inner_text() == str(expected[key])
    generated = next(row for row in mixed_run.rows if row["source"].endswith("generated.png"))
    assert int(page.locator("#count-provenance").get_attribute("data-count")) == 1
    assert f"fake at or above {mixed_run.threshold:.3g}" in page.locator("#run-table").inner_text()
    assert page.locator("#histogram .hist-threshold").count() == 1
    assert sorted(shown(page)) == sorted(row["source"] for row in mixed_run.rows)

    # The hostile name is shown as text, on its card and in its details; nothing it holds ran.
    hostile = str(mixed_run.uploads / HOSTILE_NAME)
    card = page.locator(f'#grid .card .name[title="{hostile}"]')
    assert card.inner_text() == HOSTILE_NAME
    page.locator("#search").fill("onerror")
    assert shown(page) == [hostile]
    page.locator("#grid .card .more").click()
    assert page.locator("#details-title").inner_text() == hostile
    page.locator("#details-close").click()
    assert page.locator("img[src=x]").count() == 0 and page.locator("#grid .card img").count() == 1
    page.locator("#search").fill("")

    # Sorted most fake first by default: scores fall along the grid, errors last.
    scores = {row["source"]: row["fake_score"] for row in mixed_run.rows}
    order = shown(page)
    assert [scores[source] for source in order[:-1]] == sorted(
        (s for s in scores.values() if s is not None), reverse=True
    )
    assert scores[order[-1]] is None

    page.locator("#errors-only").check()
    assert shown(page) == [row["source"] for row in mixed_run.rows if row["error"]]
    assert "not an image" in page.locator("#grid .card .error-text").inner_text()
    page.locator("#errors-only").uncheck()

    page.locator("#filter-real").uncheck()
    assert sorted(shown(page)) == sorted(row["source"] for row in mixed_run.rows if row["verdict"] != "real")
    page.locator("#filter-real").check()

    page.locator("#score-min").fill(str(mixed_run.threshold))
    assert sorted(shown(page)) == sorted(row["source"] for row in mixed_run.rows if row["verdict"] == "fake")
    page.locator("#reset").click()

    page.locator("#filter-kind").select_option("video")
    (video,) = shown(page)
    assert video.endswith("clip.mp4")
    frames = next(row for row in mixed_run.rows if row["source"] == video)["frames"]
    points = page.locator("#grid .card .spark polyline").get_attribute("points").split()
    assert len(points) == len(frames) == 6
    page.locator("#reset").click()

    # The provenance stage read the PNG's generation parameters: the page shows them, as text.
    page.locator("#filter-provenance").select_option("evidence")
    assert shown(page) == [generated["source"]]
    assert "metadata:png_parameters" in page.locator("#grid .card .chips").inner_text()
    assert "<script>window.pwned" in page.locator("#grid .card .evidence").inner_text()
    page.locator("#grid .card .more").click()
    assert HOSTILE_METADATA.split("\n")[0] in page.locator("#details-body pre.detail").first.inner_text()
    page.locator("#details-close").click()
    page.locator("#filter-provenance").select_option("ai-declared")
    declared = [row["source"] for row in mixed_run.rows if (row.get("provenance") or {}).get("ai_declared")]
    assert shown(page) == declared == [generated["source"]]
    assert page.evaluate("window.pwned") is None
    assert page.locator("#domain-filter").is_hidden()  # a checkpoint without domains: nothing to filter
    assert page.alerts == [] and page.requests == []


def test_cards_show_their_domain_and_the_domain_filter_picks_them(browser, domain_run):
    page = browser
    open_report(page, domain_run.report)
    scored = [row for row in domain_run.rows if row["error"] is None]
    options = page.locator("#filter-domain option").evaluate_all("options => options.map((o) => o.value)")
    assert sorted(options) == ["any", "face", "general"]
    counts = {domain: sum(row["domain"] == domain for row in scored) for domain in ("face", "general")}
    run_table = page.locator("#run-table").inner_text()  # most frequent first
    assert f"face {counts['face']}" in run_table and f"general image {counts['general']}" in run_table
    for domain, words in (("face", "face"), ("general", "general image")):
        page.locator("#filter-domain").select_option(domain)
        expected = sorted(row["source"] for row in scored if row["domain"] == domain)
        assert sorted(shown(page)) == expected
        assert page.locator("#grid .card .chip-domain").all_inner_texts() == [words] * len(expected)
    page.locator("#grid .card .more").first.click()
    facts = page.locator("#details-body table.facts").first.inner_text()
    assert "Judged as\tgeneral image" in facts and "scored by the general-head" in facts
    page.locator("#details-close").click()
    page.locator("#reset").click()
    assert page.locator("#filter-domain").input_value() == "any"
    assert sorted(shown(page)) == sorted(row["source"] for row in domain_run.rows)
    assert page.alerts == [] and page.requests == []


def test_a_domain_models_page_shows_each_domains_thresholds(browser, calibrated_domain_run):
    page = browser
    open_report(page, calibrated_domain_run.own.report)
    run_table = page.locator("#run-table").inner_text()
    assert "Thresholds\tfaces: fake at or above 0.123\ngeneral images: real below 0.3" in run_table
    assert "uncertain between, fake at or above 0.954" in run_table and "disagree" not in run_table
    assert "other rows" not in run_table  # every row has a domain with its own rule
    # One dashed line per threshold, each domain's labelled once, at its fake threshold.
    lines = page.locator("#histogram .hist-threshold")
    assert lines.evaluate_all("lines => lines.map((line) => line.dataset.domain)") == [
        "face",
        "general",
        "general",
    ]
    labels = page.locator("#histogram .hist-threshold-label").all_text_contents()
    assert labels == ["face", "general image"]
    caption = page.locator("#histogram-caption").inner_text()
    assert (
        "each domain's thresholds (faces: fake at or above 0.123; general images: real below 0.3" in caption
    )
    # A card's bar and details show its own domain's rule.
    page.locator("#filter-domain").select_option("face")
    bar = page.locator("#grid .card .bar").first
    assert bar.locator(".marker").count() == 1
    assert bar.get_attribute("title").endswith("fake at or above 0.123 (faces' threshold)")
    page.locator("#filter-domain").select_option("general")
    assert page.locator("#grid .card .bar").first.locator(".marker").count() == 2
    page.locator("#grid .card .more").first.click()
    facts = page.locator("#details-body table.facts").first.inner_text()
    assert (
        "threshold: real below 0.3, uncertain between, fake at or above 0.954 (general images' threshold)"
        in facts
    )
    page.locator("#details-close").click()

    # The run with --threshold: one rule, unlabelled, as for a model without domains.
    open_report(page, calibrated_domain_run.fixed.report)
    assert (
        "Threshold\tfake at or above 0.5\nthe detector that scored these rows"
        in page.locator("#run-table").inner_text()
    )
    assert page.locator("#histogram .hist-threshold").count() == 1
    assert page.locator("#histogram .hist-threshold-label").count() == 0
    assert page.alerts == [] and page.requests == []


def test_face_boxes_are_drawn_where_the_faces_are_and_the_heatmap_toggles(browser, tmp_path, seed_checkpoint):
    pytest.importorskip("dlib", reason="the faces extra is not installed")
    pytest.importorskip("matplotlib", reason="the explain extra is not installed")
    image, _ = picture_with_faces(480, 320, [(150, 40, 220)], seed=4)
    image.save(tmp_path / "portrait.png")
    results, report = tmp_path / "faces.jsonl", tmp_path / "faces.html"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "portrait.png"),
                "--faces",
                "--model",
                str(seed_checkpoint),
                "-o",
                str(results),
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "explain",
                str(tmp_path / "portrait.png"),
                "--model",
                str(seed_checkpoint),
                "--out",
                str(tmp_path / "maps"),
            ]
        )
        == 0
    )
    assert (
        main(["report", str(results), "--out", str(report), "--explanations", str(tmp_path / "maps"), "-q"])
        == 0
    )
    (row,) = load_result_rows(results)
    (face,) = row["faces"]
    open_report(browser, report)
    box = browser.locator("#grid .card .face")
    assert box.count() == 1 and box.inner_text() == f"{face['fake_score']:.3g}"
    left, top = face["box"][0] / 480 * 100, face["box"][1] / 320 * 100
    style = box.evaluate("b => [parseFloat(b.style.left), parseFloat(b.style.top)]")
    assert style == pytest.approx([left, top], abs=0.01)
    picture = browser.locator("#grid .card .stage img")
    before = picture.get_attribute("src")
    browser.locator("#grid .card button.chip", has_text="heatmap").click()
    assert picture.get_attribute("src") != before and box.is_hidden()
    assert browser.alerts == [] and browser.requests == []
