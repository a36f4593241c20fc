"""The labelled-data reader: folders, CSV manifests, `datasets` datasets, splits and clear errors."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from deepfake_detector.data import DataError, LabelledImage, load_labelled_images
from deepfake_detector.modeling.labels import role_of_label

from .conftest import jpeg_bytes


def _write_folder(root: Path, counts: dict[str, int]) -> Path:
    for class_name, count in counts.items():
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            (root / class_name / f"{index:03d}.jpg").write_bytes(b"not decoded by the reader")
    return root


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("name", "role"),
    [("real", "real"), ("Realism", "real"), ("Deepfake", "fake"), ("AIGenerated", "fake"), ("cats", None)],
)
def test_role_of_label_uses_the_checkpoint_name_rules(name, role):
    assert role_of_label(name) == role


def test_folder_classes_map_to_roles_and_get_a_deterministic_stratified_split(tmp_path):
    root = _write_folder(tmp_path / "data", {"Realism": 50, "Deepfake": 30, ".hidden": 2})
    images = load_labelled_images(root, seed=3)
    assert len(images) == 80
    assert Counter(image.label for image in images) == {"real": 50, "fake": 30}
    assert Counter((image.split, image.label) for image in images) == {
        ("train", "real"): 40,
        ("train", "fake"): 24,
        ("val", "real"): 5,
        ("val", "fake"): 3,
        ("test", "real"): 5,
        ("test", "fake"): 3,
    }
    assert load_labelled_images(root, seed=3) == images
    assert [i.split for i in load_labelled_images(root, seed=4)] != [i.split for i in images]
    test = load_labelled_images(root, split="test", seed=3)
    assert test == [image for image in images if image.split == "test"]
    assert all(isinstance(image, LabelledImage) and Path(image.path).is_file() for image in test)


def test_split_folders_are_respected(tmp_path):
    for split, count in (("train", 6), ("validation", 2), ("test", 3)):
        _write_folder(tmp_path / split, {"real": count, "fake": count})
    val = load_labelled_images(tmp_path, split="val")
    assert len(val) == 4 and {image.split for image in val} == {"val"}
    assert all("/validation/" in image.path for image in val)


def test_csv_manifest_paths_are_relative_to_the_csv_and_its_split_column_is_used(tmp_path):
    rows = [
        {"path": f"img/{i}.jpg", "label": "real" if i % 2 else "fake", "split": s, "source": "a", "group": ""}
        for i, s in enumerate(["train"] * 6 + ["validation"] * 2 + ["test"] * 2)
    ]
    manifest = _write_csv(tmp_path / "manifest.csv", rows)
    test = load_labelled_images(manifest, split="test")
    assert [image.path for image in test] == [str(tmp_path / "img/8.jpg"), str(tmp_path / "img/9.jpg")]
    assert test[0] == LabelledImage(str(tmp_path / "img/8.jpg"), "fake", source="a", group=None, split="test")
    assert Counter(image.split for image in load_labelled_images(manifest)) == {
        "train": 6,
        "val": 2,
        "test": 2,
    }


def test_groups_never_straddle_splits(tmp_path):
    # 40 people, each with a real photo and one to three fakes: a person must sit on one side only.
    rows = []
    for person in range(40):
        rows.append({"path": f"{person}-real.jpg", "label": "real", "group": f"p{person}"})
        rows += [
            {"path": f"{person}-fake{k}.jpg", "label": "fake", "group": f"p{person}"}
            for k in range(1 + person % 3)
        ]
    images = load_labelled_images(_write_csv(tmp_path / "m.csv", rows), val_fraction=0.2, test_fraction=0.2)
    sides = {}
    for image in images:
        sides.setdefault(image.group, set()).add(image.split)
    assert all(len(split) == 1 for split in sides.values())
    people = Counter(next(iter(split)) for split in sides.values())
    assert people["train"] >= 20 and people["val"] >= 6 and people["test"] >= 6


def test_datasets_parquet_with_embedded_images_and_class_label(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("DEEPFAKE_DETECTOR_CACHE", str(tmp_path / "cache"))
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["Realism", "Deepfake"])}
    )
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": jpeg_bytes(seed=i), "path": None} for i in range(10)], "label": [0, 1] * 5},
        features=features,
    )
    table.to_parquet(tmp_path / "faces.parquet")
    images = load_labelled_images(tmp_path / "faces.parquet", val_fraction=0.2, test_fraction=0.2)
    assert Counter(image.label for image in images) == {"real": 5, "fake": 5}
    assert Path(images[3].path).read_bytes() == jpeg_bytes(seed=3)
    assert Counter(image.split for image in images) == {"train": 6, "val": 2, "test": 2}


def test_datasets_saved_folder_uses_its_own_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    splits = {
        name: datasets.Dataset.from_dict(
            {"file": [f"{name}{i}.png" for i in range(4)], "kind": ["real", "fake"] * 2}
        )
        for name in ("train", "validation", "test")
    }
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "saved")
    val = load_labelled_images(tmp_path / "saved", split="val", path_column="file", label_column="kind")
    assert [Path(image.path).name for image in val] == [f"validation{i}.png" for i in range(4)]
    with pytest.raises(DataError, match="--path-column 'path' not found; columns are: file, kind"):
        load_labelled_images(tmp_path / "saved")


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        (
            [{"path": "a.jpg", "label": "real"}],
            {"label_column": "lbl"},
            "--label-column 'lbl' not found; columns",
        ),
        (
            [{"file": "a.jpg", "label": "real"}],
            {},
            "--path-column 'path' not found; columns are: file, label",
        ),
        (
            [{"path": "a.jpg", "label": "real"}, {"path": "b.jpg", "label": "maybe"}],
            {},
            "line 3: label 'maybe'",
        ),
        ([{"path": "a.jpg", "label": "real"}, {"path": "b.jpg", "label": "Realism"}], {}, "no fake images"),
        (
            [{"path": "a.jpg", "label": "real"}, {"path": "", "label": "fake"}],
            {},
            "line 3: empty 'path' cell",
        ),
        (
            [{"path": "a", "label": "real", "split": "train"}, {"path": "b", "label": "fake", "split": ""}],
            {},
            "no split",
        ),
        ([{"path": "a", "label": "real", "split": "holdout"}], {}, "line 2: unknown split 'holdout'"),
        (
            [
                {"path": "a", "label": "real", "split": "train"},
                {"path": "b", "label": "fake", "split": "train"},
            ],
            {"split": "test"},
            "the 'test' split is empty",
        ),
        ([{"path": "a.jpg", "label": "real"}], {"val_fraction": 0.5, "test_fraction": 0.5}, "leaves nothing"),
        ([{"path": "a.jpg", "label": "real"}], {"split": "dev-2"}, "unknown split 'dev-2'; accepted: train"),
    ],
)
def test_bad_manifests_raise_a_clear_error(tmp_path, rows, kwargs, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_labelled_images(_write_csv(tmp_path / "m.csv", rows), **kwargs)


def test_bad_folders_raise_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="'cats' names neither a real nor a fake class"):
        load_labelled_images(_write_folder(tmp_path / "a", {"real": 2, "cats": 2}))
    with pytest.raises(DataError, match="no fake images"):
        load_labelled_images(_write_folder(tmp_path / "b", {"real": 2, "authentic": 1}))
    with pytest.raises(DataError, match="no class sub-folders"):
        load_labelled_images(tmp_path / "b" / "real")
    with pytest.raises(DataError, match="no such file or folder"):
        load_labelled_images(tmp_path / "missing.csv")
