"""Face boxes and crops, the detector backends on drawn faces at known places, and face mode."""

from __future__ import annotations

import pytest

from deepfake_detector import Detector
from deepfake_detector.aggregation import FaceAggregation
from deepfake_detector.faces.backends import FACE_DETECTORS, load_face_detector
from deepfake_detector.faces.boxes import FaceBox, clip_box, compute_crop_box, compute_iou
from deepfake_detector.faces.crops import FaceOptions
from tests.media import background, iou, picture_with_faces

pytest.importorskip("dlib", reason="face tests need the 'faces' extra")


def test_crop_box_is_a_centred_square_of_margin_times_the_longer_side():
    # Box 20x40 centred at (50, 60): side ceil(40 * 1.3) = 52, so 26 either side of the centre.
    assert compute_crop_box(FaceBox(40, 40, 60, 80), (200, 200), 1.3) == (24, 34, 76, 86)
    assert compute_crop_box(FaceBox(40, 40, 60, 80), (200, 200), 1.0) == (30, 40, 70, 80)


def test_crop_box_moves_inside_the_image_instead_of_being_cut():
    assert compute_crop_box(FaceBox(0, 0, 20, 20), (200, 200), 1.5) == (0, 0, 30, 30)
    assert compute_crop_box(FaceBox(185, 190, 200, 200), (200, 200), 2.0) == (170, 170, 200, 200)
    # A square larger than the image's shorter side shrinks to it, still square.
    assert compute_crop_box(FaceBox(0, 0, 100, 50), (100, 50), 1.3) == (25, 0, 75, 50)


def test_box_checks_and_helpers():
    with pytest.raises(ValueError, match="empty face box"):
        FaceBox(10, 10, 10, 20)
    with pytest.raises(ValueError, match=r"margin_ratio must be at least 1\.0"):
        compute_crop_box(FaceBox(0, 0, 10, 10), (50, 50), 0.9)
    assert clip_box(FaceBox(-5, -5, 20, 30, 0.5), (10, 100)) == FaceBox(0, 0, 10, 30, 0.5)
    assert clip_box(FaceBox(200, 0, 220, 10), (100, 100)) is None
    assert compute_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


@pytest.mark.parametrize("name", ["dlib-hog", "opencv-haar"])
def test_detectors_find_each_drawn_face_where_it_is(name):
    image, truth = picture_with_faces(480, 260, [(20, 30, 140), (300, 60, 160)], seed=1)
    boxes = load_face_detector(name).detect(image)
    assert len(boxes) == 2
    assert boxes[0].area >= boxes[1].area  # largest first
    for expected in truth:
        assert max(iou(box.as_tuple(), expected) for box in boxes) > 0.4
    assert load_face_detector(name).detect(background(320, 240, seed=2)) == []


def test_detection_on_a_shrunk_copy_maps_boxes_back_to_full_size():
    image, (truth,) = picture_with_faces(800, 400, [(450, 100, 220)], seed=3)
    full = load_face_detector("dlib-hog", max_side_px=None, upsample=0).detect(image)
    shrunk = load_face_detector("dlib-hog", max_side_px=400, upsample=0).detect(image)  # 2x smaller
    assert len(full) == len(shrunk) == 1
    assert iou(shrunk[0].as_tuple(), full[0].as_tuple()) > 0.7
    assert iou(shrunk[0].as_tuple(), truth) > 0.4


def test_unknown_detector_and_options_are_refused():
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'; choose one of dlib-hog"):
        load_face_detector("mtcnn")
    with pytest.raises(ValueError, match="upsample must be 0, 1 or 2"):
        load_face_detector("dlib-hog", upsample=5)
    with pytest.raises(ValueError, match=r"margin_ratio must be at least 1\.0"):
        FaceOptions(margin_ratio=0.5)
    assert set(FACE_DETECTORS) == {"dlib-hog", "dlib-cnn", "opencv-haar", "centerface"}


@pytest.fixture(scope="module")
def detector(seed_checkpoint) -> Detector:
    return Detector.from_pretrained(seed_checkpoint, device="cpu")


def test_every_face_is_scored_as_its_crop_and_the_image_takes_the_most_fake(detector):
    image, truth = picture_with_faces(480, 260, [(20, 30, 140), (300, 60, 160)], seed=1)
    prediction = detector.predict(image, faces=True)
    assert prediction.ok and prediction.no_face is False and len(prediction.faces) == 2
    for face in prediction.faces:
        assert max(iou(face.box, expected) for expected in truth) > 0.4
        # The crop is a square 1.3x the box, and its score is exactly that of the crop scored alone.
        side = face.crop_box[2] - face.crop_box[0]
        assert side == face.crop_box[3] - face.crop_box[1]
        assert side == pytest.approx(1.3 * max(face.box[2] - face.box[0], face.box[3] - face.box[1]), abs=1)
        alone = detector.predict(image.crop(face.crop_box))
        assert face.fake_score == pytest.approx(alone.fake_score, abs=1e-6)
        assert face.verdict == alone.verdict and face.threshold == alone.threshold
        assert face.label == {"fake": "Deepfake", "real": "Realism", "uncertain": "uncertain"}[face.verdict]
    scores = [face.fake_score for face in prediction.faces]
    assert scores[0] != pytest.approx(scores[1], abs=1e-4)  # the faces differ, so the rule matters
    assert prediction.fake_score == max(scores)
    row = prediction.to_dict()
    assert row["no_face"] is False and len(row["faces"]) == 2
    assert set(row["faces"][0]) == {
        "box",
        "crop_box",
        "detection_score",
        "label",
        "fake_score",
        "verdict",
        "domain",
        "threshold",
    }


def test_other_face_strategies_and_margin(detector):
    image, _ = picture_with_faces(480, 260, [(20, 30, 140), (300, 60, 160)], seed=1)
    by_max = detector.predict(image, faces=True)
    scores = [face.fake_score for face in by_max.faces]
    mean = detector.predict(image, faces=FaceOptions(aggregation=FaceAggregation("mean")))
    assert mean.fake_score == pytest.approx(sum(scores) / 2)
    largest = detector.predict(image, faces=FaceOptions(aggregation=FaceAggregation("largest")))
    assert largest.fake_score == pytest.approx(by_max.faces[0].fake_score)  # faces come largest first
    wide = detector.predict(image, faces=FaceOptions(margin_ratio=1.6))
    assert [f.box for f in wide.faces] == [f.box for f in by_max.faces]
    assert all(
        (w.crop_box[2] - w.crop_box[0]) > (n.crop_box[2] - n.crop_box[0])
        for w, n in zip(wide.faces, by_max.faces, strict=True)
    )


def test_an_image_without_a_face_is_scored_whole_and_flagged(detector):
    image = background(320, 240, seed=4)
    prediction = detector.predict(image, faces=True)
    assert prediction.ok and prediction.faces == () and prediction.no_face is True
    assert prediction.fake_score == pytest.approx(detector.predict(image).fake_score, abs=1e-6)
    assert prediction.to_dict()["no_face"] is True


def test_a_bad_input_in_face_mode_is_an_error_row_not_an_abort(detector, tmp_path):
    image, _ = picture_with_faces(300, 240, [(60, 40, 160)], seed=5)
    good = tmp_path / "face.png"
    image.save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    first, second, third = detector.predict([str(good), str(broken), str(good)], faces=True)
    assert first.ok and third.ok and len(first.faces) == 1
    assert not second.ok and "broken.jpg" in second.error and second.faces is None


def test_plain_rows_keep_their_format(detector):
    image, _ = picture_with_faces(300, 240, [(60, 40, 160)], seed=5)
    row = detector.predict(image).to_dict()
    assert list(row) == [
        *("source", "label", "fake_score", "verdict", "model", "revision", "error"),
        *("decided_by", "domain", "detector", "threshold", "uncertain_from", "threshold_from", "provenance"),
    ]


def test_a_model_failure_in_face_mode_gives_error_rows(detector, monkeypatch):
    image, _ = picture_with_faces(300, 240, [(60, 40, 160)], seed=5)

    def broken(images):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(detector, "compute_outputs", broken)
    first, second = detector.predict([image, background(100, 100)], faces=True)
    assert not first.ok and "model failed: out of memory" in first.error
    assert not second.ok and second.faces is None
