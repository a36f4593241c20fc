"""Training: a tiny ViT trained a few steps on synthetic images, saved, and loaded by `Detector`, the
transformers pipeline and the seed card's snippet; resume; config and data errors; DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.data import DataError, LabelledImage
from deepfake_detector.training import AugmentationConfig, ConfigError, load_train_config, train
from deepfake_detector.training.augment import build_augmentation
from deepfake_detector.training.dataset import ImageClassificationDataset
from deepfake_detector.training.trainer import _class_weights

from .conftest import SEED_LABELS, _texture, build_tiny_vit

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    "training.max_steps=2",
    "training.per_device_train_batch_size=4",
    "training.per_device_eval_batch_size=8",
    "training.logging_steps=1",
    "data.val_fraction=0.25",
    "data.test_fraction=0.0",
]


def _write_images(root: Path, count: int = 8) -> Path:
    # Fakes carry a bright square, so a real signal exists; sizes vary so the processor has to resize.
    for role in ("real", "fake"):
        (root / role).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = _texture(36 + index, 40, seed=index + (100 if role == "fake" else 0))
            if role == "fake":
                pixels[8:20, 8:20] = 255
            Image.fromarray(pixels).save(root / role / f"{index}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("base"), SEED_LABELS)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("faces"))


def _args(base: Path, data: Path, output: Path, *extra: str) -> list[str]:
    sets = [item for setting in [*QUICK, *extra] for item in ("--set", setting)]
    return ["train", "--data", str(data), "--output-dir", str(output), "--set", f"model.base={base}", *sets]


@pytest.fixture(scope="module")
def trained(base, images, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "model"
    assert (
        main(
            _args(
                base, images, output, "augmentation.rotation_degrees=90", "augmentation.jpeg_quality=[30,90]"
            )
        )
        == 0
    )
    return output


def test_output_is_a_plain_hugging_face_folder_with_card_config_and_run_record(trained):
    names = {path.name for path in trained.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= names
    assert not [path for path in trained.iterdir() if path.suffix in (".bin", ".pt", ".pth", ".pkl")]
    config = json.loads((trained / "config.json").read_text())
    assert config["id2label"] == {"0": "Realism", "1": "Deepfake"}

    card = (trained / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["pipeline_tag"] == "image-classification" and metadata["library_name"] == "transformers"
    names_in_index = [m["type"] for m in metadata["model-index"][0]["results"][0]["metrics"]]
    assert names_in_index[:2] == ["accuracy", "balanced_accuracy"]

    resolved = yaml.safe_load((trained / "training_config.yaml").read_text())
    assert resolved["training"]["max_steps"] == 2 and resolved["training"]["weight_decay"] == 0.05
    assert resolved["augmentation"]["rotation_degrees"] == 90
    run = json.loads((trained / "training_run.json").read_text())
    assert run["versions"]["deepfake_detector"] and run["result"]["global_step"] == 2
    assert run["git"] is None or len(run["git"]["commit"]) == 40
    assert run["data"]["train"]["real"] + run["data"]["train"]["fake"] == run["result"]["train_images"] == 12
    assert list((trained / "logs").glob("events.out.tfevents.*")), "TensorBoard logs are missing"


def test_trained_model_loads_in_detector_pipeline_and_card_snippet_with_equal_scores(trained, images):
    from transformers import ViTForImageClassification, ViTImageProcessor, pipeline

    path = images / "fake" / "3.jpg"
    # fp32: the exact path (auto is bf16 on CPUs with AVX512-BF16 or AMX).
    detector = Detector.from_pretrained(trained, device="cpu", precision="fp32")
    detector_score = detector.predict(path).fake_score
    pipe = pipeline("image-classification", model=str(trained), device="cpu")
    pipeline_score = {row["label"]: row["score"] for row in pipe(str(path), top_k=None)}["Deepfake"]

    # The seed card's "Inference with PyTorch" snippet, with the model path replaced.
    model = ViTForImageClassification.from_pretrained(trained)
    processor = ViTImageProcessor.from_pretrained(trained)
    image = Image.open(path).convert("RGB")
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    snippet_score = torch.softmax(logits, dim=1)[0, model.config.label2id["Deepfake"]].item()
    label = model.config.id2label[torch.argmax(logits, dim=1).item()]

    assert label in ("Realism", "Deepfake")
    np.testing.assert_allclose([detector_score, pipeline_score], snippet_score, atol=1e-5)


def test_resume_continues_from_the_last_checkpoint_and_a_rerun_is_refused(base, images, tmp_path):
    output = tmp_path / "model"
    assert main(_args(base, images, output, "training.save_steps=1", "training.save_strategy=steps")) == 0
    assert (output / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(ConfigError, match=r"already holds checkpoints.*--resume"):
        train(load_train_config(None, [f"output_dir={output}", f"data.data={images}", f"model.base={base}"]))
    assert (
        main(
            [
                *_args(base, images, output, "training.save_strategy=steps"),
                "--resume",
                "--set",
                "training.max_steps=3",
            ]
        )
        == 0
    )
    run = json.loads((output / "training_run.json").read_text())
    assert run["result"]["global_step"] == 3


def test_resume_without_a_checkpoint_is_refused(base, images, tmp_path, capsys):
    assert main([*_args(base, images, tmp_path / "new"), "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_bad_data_is_refused_before_training_starts(base, images, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,lbl\nreal/0.jpg,real\n")
    assert main(_args(base, manifest, tmp_path / "a")) == 2
    assert "--path-column 'path' not found; columns are: file, lbl" in capsys.readouterr().err

    one_class = tmp_path / "one-class"
    (one_class / "real").mkdir(parents=True)
    (one_class / "real" / "a.jpg").write_bytes((images / "real" / "0.jpg").read_bytes())
    assert main(_args(base, one_class, tmp_path / "b")) == 2
    assert "no fake images" in capsys.readouterr().err

    broken = _write_images(tmp_path / "broken", count=4)
    for index in range(2):
        (broken / "fake" / f"junk{index}.jpg").write_bytes(b"not a jpeg")
    assert main(_args(base, broken, tmp_path / "c", "data.val_fraction=0.2")) == 2
    err = capsys.readouterr().err
    assert "can't be read" in err and "junk" in err and "max_bad_fraction" in err
    assert not (tmp_path / "c").exists(), "nothing may be written before the data is known to be good"


def test_few_unreadable_images_are_skipped_and_counted(base, tmp_path):
    data = _write_images(tmp_path / "data", count=6)
    (data / "real" / "empty.jpg").write_bytes(b"")
    good = (data / "fake" / "0.jpg").read_bytes()
    (data / "fake" / "truncated.jpg").write_bytes(good[: len(good) // 3])  # header fine, pixels cut off
    config = load_train_config(
        None,
        [
            f"output_dir={tmp_path / 'out'}",
            f"data.data={data}",
            f"model.base={base}",
            *QUICK,
            "data.max_bad_fraction=0.2",
            "data.eval_split=null",
            "training.max_steps=3",
            "training.per_device_train_batch_size=12",
        ],
    )
    result = train(config)
    run = json.loads((tmp_path / "out" / "training_run.json").read_text())
    skipped = {Path(item["path"]).name for item in run["skipped_images"]}
    assert "empty.jpg" in skipped and result.skipped_images == len(run["skipped_images"])
    assert "truncated.jpg" in skipped, "a file that breaks while training must be skipped and counted"
    assert "Not validated" in (tmp_path / "out" / "README.md").read_text()


def test_dataset_replaces_a_corrupt_image_with_the_next_one(base, tmp_path):
    from transformers import AutoImageProcessor

    good = tmp_path / "good.png"
    Image.fromarray(_texture(20, 20, 1)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    records = [LabelledImage(str(bad), "fake"), LabelledImage(str(good), "real")]
    dataset = ImageClassificationDataset(
        records, AutoImageProcessor.from_pretrained(base), {"real": 0, "fake": 1}
    )
    item = dataset[0]
    assert item["labels"] == 0 and tuple(item["pixel_values"].shape) == (3, 30, 30)
    assert [problem.path for problem in dataset.skipped] == [str(bad)]


def test_augmentations_keep_size_and_are_reproducible():
    config = AugmentationConfig(
        crop_scale=(0.3, 1.0),
        rotation_degrees=45,
        horizontal_flip_probability=0.5,
        color_jitter=0.3,
        sharpness_factor=2.0,
        blur_sigma=(0.5, 1.5),
        blur_probability=1.0,
        downscale_factor=(0.25, 0.5),
        downscale_probability=1.0,
        jpeg_quality=(20, 40),
        jpeg_probability=1.0,
    )
    augment = build_augmentation(config)
    image = Image.fromarray(_texture(48, 64, 3))
    first = augment(image, random.Random(7))
    assert first.size == image.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(augment(image, random.Random(7))))
    assert not np.array_equal(np.asarray(first), np.asarray(augment(image, random.Random(8))))
    off = AugmentationConfig(
        crop_scale=None,
        horizontal_flip_probability=0,
        color_jitter=None,
        blur_sigma=None,
        downscale_factor=None,
    )
    assert build_augmentation(off) is not None  # JPEG re-compression is still on
    assert build_augmentation(AugmentationConfig(**{**off.__dict__, "jpeg_quality": None})) is None


def test_class_weights_balance_the_classes():
    weights = _class_weights([0, 0, 0, 1], 2)
    np.testing.assert_allclose(weights, [4 / 6, 2.0])
    np.testing.assert_allclose(weights[[0, 0, 0, 1]].sum(), 4.0)  # each class adds up to half


def test_oversampling_mode_trains(base, images, tmp_path):
    config = load_train_config(
        None,
        [
            f"output_dir={tmp_path}",
            f"data.data={images}",
            f"model.base={base}",
            "class_balance=sampler",
            *QUICK,
        ],
    )
    assert train(config).global_step == 2


def test_seed_config_is_the_card_recipe():
    config = load_train_config(REPO / "configs" / "seed-vit-base.yaml", ["data.data=x", "output_dir=y"])
    assert config.model.base == "google/vit-base-patch16-224-in21k"
    assert config.model.labels == {0: "Realism", 1: "Deepfake"}
    arguments = config.training_arguments()
    expected = {
        "learning_rate": 1e-6,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 8,
        "num_train_epochs": 2,
        "weight_decay": 0.02,
        "warmup_steps": 50,
        "optim": "adamw_torch",
    }
    assert {key: arguments[key] for key in expected} == expected
    augmentation = config.augmentation
    assert augmentation.rotation_degrees == 90 and augmentation.sharpness_factor == 2.0
    assert augmentation.crop_scale == (0.08, 1.0)
    assert augmentation.jpeg_quality is augmentation.blur_sigma is augmentation.downscale_factor is None
    assert augmentation.color_jitter is None and augmentation.horizontal_flip_probability == 0
    assert load_train_config(REPO / "configs" / "dev-small.yaml", ["data.data=x"]).model.architecture


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.base=b", "trainng.learning_rate=1"], "unknown config key 'trainng'"),
        (["model.base=b", "augmentation.rotaton=5"], "unknown config key augmentation.'rotaton'"),
        (["model.base=b", "training.output_dir=x"], "training.output_dir is set by the trainer"),
        (["model.base=b", "augmentation.jpeg_quality=[90, 30]"], "jpeg_quality must satisfy"),
        (["model.base=b", "class_balance=smote"], "class_balance must be one of loss, sampler, none"),
        (["model.base=b", "model.labels={0: cat, 1: dog}"], "cannot tell whether 'cat', 'dog'"),
        (["data.data=x"], "no model to train"),
        (["model.base=b", "model.architecture={model_type: resnet}"], "exactly one of model.base"),
        (["model.base"], "must look like section.key=value"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    from deepfake_detector.errors import DetectorError

    with pytest.raises(DetectorError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_train_config(None, overrides)


def test_unknown_training_argument_is_a_config_error(base, images, tmp_path):
    config = load_train_config(
        None,
        [f"output_dir={tmp_path}", f"data.data={images}", f"model.base={base}", "training.learning_rat=1"],
    )
    with pytest.raises(ConfigError, match="learning_rat"):
        train(config)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,kind\nreal/0.jpg,real\n")
    with pytest.raises(DataError, match="--label-column 'label' not found; columns are: path, kind"):
        train(
            load_train_config(None, [f"output_dir={tmp_path}", f"data.data={manifest}", f"model.base={base}"])
        )


def test_ddp_trains_two_steps_in_two_cpu_processes(base, images, tmp_path):
    output = tmp_path / "ddp"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "deepfake_detector",
    ]
    command += _args(base, images, output, "training.save_strategy=no")
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]
    run = json.loads((output / "training_run.json").read_text())
    assert run["world_size"] == 2 and run["result"]["global_step"] == 2
    # Sharded over 2 processes, a step takes 2 x 4 of the 12 training images, so an epoch is 2 steps
    # (one process alone would need 3 and be at epoch 2/3 now).
    assert run["result"]["epochs"] == pytest.approx(1.0)
    assert Detector.from_pretrained(output, device="cpu").predict(images / "real" / "0.jpg").ok


def test_overrides_read_yaml_1_2_values():
    config = load_train_config(
        None,
        ["model.base=b", "training.eval_strategy=no", "training.learning_rate=1e-4", "tensorboard=false"],
    )
    assert config.training == {"eval_strategy": "no", "learning_rate": 1e-4} and config.tensorboard is False


def test_time_limit_stops_training_then_validates_and_saves(base, images, tmp_path):
    config = load_train_config(
        None,
        [
            f"output_dir={tmp_path}",
            f"data.data={images}",
            f"model.base={base}",
            *QUICK,
            "training.max_steps=50",
            "max_train_minutes=1e-6",
        ],
    )
    result = train(config)
    assert result.global_step == 1 and "eval_roc_auc" in result.eval_metrics
    assert (tmp_path / "model.safetensors").is_file()


def test_bf16_setting_resolves(monkeypatch):
    from deepfake_detector.training import trainer

    assert trainer.resolve_bf16(True) is True and trainer.resolve_bf16(False) is False
    from deepfake_detector.inference import engines

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engines, "detect_cpu_features", lambda: engines.CpuFeatures(amx=True))
    assert trainer.resolve_bf16("auto") is True
    monkeypatch.setattr(engines, "detect_cpu_features", lambda: engines.CpuFeatures(avx2=True))
    assert trainer.resolve_bf16("auto") is False  # the same answer inference's precision="auto" gets
