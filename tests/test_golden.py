"""Golden regression test for the bundled models: fixed inputs and the logits each gave for them.

An upgrade of torch, transformers, Pillow or NumPy that shifts a shipped model's answers fails here, on
purpose: scores users rely on must not move silently. If the shift is understood and accepted, regenerate
the stored values and commit them with the upgrade:

    .venv/bin/python -m tests.test_golden --update

The inputs are built in code: scikit-image's public-domain ``astronaut`` photo (shipped in its wheel),
fixed crops of it, and seeded synthetic images. The model is run in float32 (``precision="fp32"``), the
exact path that `transformers.pipeline` takes, which the test also checks.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.modeling.checkpoints import BUNDLED_MODELS, bundled_model_folder, resolve_checkpoint

GOLDEN_FOLDER = Path(__file__).parent / "golden"
# float32 kernels differ by ~1e-6 between CPUs (more through the 12 blocks of the CLIP tower, whose
# residual stream reaches the hundreds); a real shift is far larger.
LOGIT_TOLERANCE = 1e-3


def build_golden_inputs() -> dict[str, Image.Image]:
    """The fixed inputs, by name. Each is deterministic for a given NumPy and scikit-image."""
    from skimage import data

    photo = Image.fromarray(data.astronaut())  # (512, 512, 3): NASA portrait, public domain
    face = photo.crop((150, 20, 310, 180))  # the face, framed roughly like the training images
    rng = np.random.default_rng(0)  # PCG64: the same stream on every platform
    noise = rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, 200, dtype=np.float32)
    gradient = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    return {
        "astronaut": photo,
        "astronaut-face": face,
        "astronaut-face-mirrored": face.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "astronaut-face-small": face.resize((48, 48), Image.Resampling.BILINEAR),
        "noise": Image.fromarray(noise),
        "gradient": Image.fromarray(gradient.astype(np.uint8)),
        "grey": Image.new("RGB", (96, 96), (128, 128, 128)),
    }


def compute_weights_digest(name: str) -> str:
    """sha256 of what the package ships of the model: its whole weights, or its head alone."""
    folder = bundled_model_folder(name)
    shipped = folder / "head.safetensors"
    return hashlib.sha256(
        (shipped if shipped.is_file() else folder / "model.safetensors").read_bytes()
    ).hexdigest()


def compute_golden_values(name: str) -> dict:
    from deepfake_detector import Detector

    detector = Detector.from_pretrained(name, precision="fp32")
    inputs = build_golden_inputs()
    logits = detector.compute_logits(list(inputs.values()))  # (N, C)
    predictions = detector.predict(list(inputs.values()))
    return {
        "model": name,
        "weights_sha256": compute_weights_digest(name),
        "inputs": {
            name: {"logits": [float(value) for value in row], "fake_score": prediction.fake_score}
            for name, row, prediction in zip(inputs, logits, predictions, strict=True)
        },
    }


@pytest.fixture(scope="module", params=BUNDLED_MODELS)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def golden(name) -> dict:
    pytest.importorskip("skimage")
    return json.loads((GOLDEN_FOLDER / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def measured(name, golden) -> dict:
    if golden["weights_sha256"] != compute_weights_digest(name):
        pytest.fail(
            f"the bundled {name} weights changed but {name}.json did not; "
            "regenerate it with `python -m tests.test_golden --update`"
        )
    return compute_golden_values(name)


def test_the_bundled_model_gives_its_stored_logits(golden, measured):
    assert measured["inputs"].keys() == golden["inputs"].keys()
    for name, stored in golden["inputs"].items():
        np.testing.assert_allclose(
            measured["inputs"][name]["logits"], stored["logits"], atol=LOGIT_TOLERANCE, err_msg=name
        )
        assert measured["inputs"][name]["fake_score"] == pytest.approx(stored["fake_score"], abs=1e-4), name


def test_the_stored_logits_are_not_all_alike(golden):
    # A model that answers the same for everything would pass the test above forever.
    scores = [stored["fake_score"] for stored in golden["inputs"].values()]
    assert max(scores) - min(scores) > 0.05


def test_the_pipeline_gives_the_bundled_models_stored_scores(name, golden):
    from transformers import pipeline

    from deepfake_detector.modeling.clip_detector import register_auto_classes
    from deepfake_detector.modeling.labels import resolve_label_roles

    register_auto_classes()  # the CLIP detector is a custom class: transformers knows it once registered
    # The folder transformers loads: the package's own, or the one assembled from a shipped head.
    classifier = pipeline("image-classification", model=str(resolve_checkpoint(name).folder), device="cpu")
    roles = resolve_label_roles(classifier.model.config.id2label)
    fake_name = roles.id2label[roles.fake_ids[0]]
    for name, image in build_golden_inputs().items():
        scores = {entry["label"]: entry["score"] for entry in classifier(image, top_k=None)}
        # The pipeline applies no calibration temperature; compare its softmax with the stored logits'.
        logits = np.asarray(golden["inputs"][name]["logits"], dtype=np.float64)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert scores[fake_name] == pytest.approx(expected[roles.fake_ids[0]], abs=1e-4), name


def main(argv: list[str]) -> int:
    if argv != ["--update"]:
        print("usage: python -m tests.test_golden --update", file=sys.stderr)
        return 2
    GOLDEN_FOLDER.mkdir(exist_ok=True)
    for name in BUNDLED_MODELS:
        target = GOLDEN_FOLDER / f"{name}.json"
        target.write_text(json.dumps(compute_golden_values(name), indent=1) + "\n")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
