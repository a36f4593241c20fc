"""Self-blended pseudo-fakes: what the blend changes and what it leaves alone, how the dataset adds them,
their config, and a training run that uses them."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.data import DataError, LabelledImage
from deepfake_detector.training import ConfigError, load_train_config, train
from deepfake_detector.training.dataset import ImageClassificationDataset
from deepfake_detector.training.pseudo_fakes import make_self_blended, render_blend_mask

from .conftest import SEED_LABELS, _texture, build_tiny_vit


def _face_like(size: int = 96) -> Image.Image:
    return Image.fromarray(_texture(size, size, seed=3))


def test_mask_covers_the_middle_and_fades_out_before_the_corners():
    for seed in range(20):
        mask = render_blend_mask((100, 120), random.Random(seed))  # (H, W)
        assert mask.shape == (120, 100) and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        assert mask[62, 50] > 0.9, "the centre of the face is blended"
        assert mask[:6, :6].max() < 0.05 and mask[-6:, -6:].max() < 0.05, "corners keep the original"


def test_blend_changes_the_face_keeps_the_rest_and_is_reproducible():
    image = _face_like()
    blended = make_self_blended(image, random.Random(1))
    assert blended.size == image.size and blended.mode == "RGB"
    original, changed = np.asarray(image, dtype=np.int16), np.asarray(blended, dtype=np.int16)
    difference = np.abs(original - changed).max(axis=-1)  # (H, W)
    assert difference[40:56, 40:56].mean() > 3, "the blended region differs from the source"
    assert difference[:4, :4].max() <= 2, "far corners are the source's pixels"
    assert np.array_equal(np.asarray(make_self_blended(image, random.Random(1))), changed)
    assert not np.array_equal(np.asarray(make_self_blended(image, random.Random(2))), changed)


def _records(root: Path) -> list[LabelledImage]:
    records = []
    for index, label in enumerate(["real", "real", "fake"]):
        path = root / f"{index}.png"
        Image.fromarray(_texture(40, 40, seed=index)).save(path)
        records.append(LabelledImage(str(path), label))
    return records


def test_dataset_appends_pseudo_fakes_made_from_real_images(tmp_path):
    from transformers import ViTImageProcessor

    records = _records(tmp_path)
    dataset = ImageClassificationDataset(
        records, ViTImageProcessor(size={"height": 32, "width": 32}), {"real": 0, "fake": 1}, pseudo_fakes=4
    )
    assert len(dataset) == 7
    assert dataset.labels() == [0, 0, 1, 1, 1, 1, 1]
    random.seed(0)
    items = [dataset[index] for index in range(3, 7)]
    assert all(item["labels"] == 1 and tuple(item["pixel_values"].shape) == (3, 32, 32) for item in items)
    # A pseudo-fake is made from a real image, never from the fake one: it matches one of the reals
    # outside the blended middle.
    processor = dataset.processor
    reals = [processor(images=Image.open(r.path).convert("RGB"))["pixel_values"][0] for r in records[:2]]
    fake = processor(images=Image.open(records[2].path).convert("RGB"))["pixel_values"][0]
    for item in items:
        corner = item["pixel_values"][:, :3, :3].numpy()
        assert min(np.abs(corner - real[:, :3, :3]).max() for real in reals) < 0.05
        assert np.abs(corner - fake[:, :3, :3]).max() > 0.05


def test_pseudo_fakes_need_real_images(tmp_path):
    from transformers import ViTImageProcessor

    fakes = [record for record in _records(tmp_path) if record.label == "fake"]
    with pytest.raises(DataError, match="made from real images"):
        ImageClassificationDataset(fakes, ViTImageProcessor(), {"real": 0, "fake": 1}, pseudo_fakes=2)


@pytest.mark.parametrize(
    ("value", "message"),
    [("-0.5", "must be between 0 and 4"), ("yes", "must be a number"), ("9", "must be between 0 and 4")],
)
def test_share_is_validated(value, message):
    with pytest.raises(ConfigError, match=f"pseudo_fakes.share {message}"):
        load_train_config(None, ["model.base=b", f"pseudo_fakes.share={value}"])


def test_training_with_pseudo_fakes_counts_them_in_its_steps(tmp_path):
    root = tmp_path / "images"
    for role in ("real", "fake"):
        (root / role).mkdir(parents=True)
        for index in range(6):
            Image.fromarray(_texture(40, 40, seed=index + (50 if role == "fake" else 0))).save(
                root / role / f"{index}.jpg"
            )
    base = build_tiny_vit(tmp_path / "base", SEED_LABELS)
    config = load_train_config(
        None,
        [
            f"output_dir={tmp_path / 'out'}",
            f"data.data={root}",
            f"model.base={base}",
            "data.val_fraction=0.0",
            "data.test_fraction=0.0",
            "data.eval_split=null",
            "pseudo_fakes.share=1.0",
            "training.num_train_epochs=1",
            "training.per_device_train_batch_size=6",
        ],
    )
    result = train(config)
    # 12 images plus one pseudo-fake per real image (6): 18 items, 3 batches of 6.
    assert result.train_images == 12 and result.global_step == 3


def test_landmark_mask_follows_the_hull_of_the_landmarks():
    from deepfake_detector.training.pseudo_fakes import render_landmark_mask

    # A face's landmarks in the left half of a 200 x 100 image: the blend must stay there.
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    landmarks = np.stack([50 + 30 * np.cos(angles), 50 + 35 * np.sin(angles)], axis=1).astype(np.float32)
    for seed in range(10):
        mask = render_landmark_mask((200, 100), landmarks, random.Random(seed))  # (H, W)
        assert mask.shape == (100, 200)
        assert mask[50, 50] > 0.9, "inside the hull is blended"
        assert mask[:, 120:].max() < 0.05, "far outside the hull is untouched"


def test_landmark_self_blend_changes_only_the_face_of_a_real_photo():
    from skimage import data

    from deepfake_detector.training.pseudo_fakes import find_face_landmarks, load_landmark_models

    photo = Image.fromarray(data.astronaut())  # public domain; the face is in the upper middle
    landmarks = find_face_landmarks(photo, load_landmark_models())
    assert landmarks is not None and landmarks.shape == (68, 2)
    left, top = landmarks.min(axis=0)
    right, bottom = landmarks.max(axis=0)
    assert 150 < left < right < 300 and 50 < top < bottom < 250  # the astronaut's face
    blended = np.asarray(make_self_blended(photo, random.Random(0), landmarks), dtype=np.int16)
    changed = np.abs(blended - np.asarray(photo, dtype=np.int16)).max(axis=2) > 3  # (H, W)
    assert changed.any()
    rows, cols = np.nonzero(changed)
    margin = 0.4 * (right - left)  # the hull is scaled up to 1.1x and feathered
    assert cols.min() > left - margin and cols.max() < right + margin
    assert rows.min() > top - margin and rows.max() < bottom + margin
