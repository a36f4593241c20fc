"""Read labelled images (real or fake) for training and evaluation from three kinds of source.

- An image folder with one sub-folder per class (``real/``, ``fake/`` or synonyms such as ``Realism/``,
  ``Deepfake/``), optionally under ``train/``, ``val/``, ``test/`` split folders.
- A CSV manifest with ``path,label`` and optional ``split``, ``source``, ``group`` columns; paths are
  relative to the CSV's folder.
- A Hugging Face ``datasets`` dataset: a hub name, a folder written by ``save_to_disk``, or a local
  ``.parquet``/``.arrow``/``.json``/``.jsonl`` file.

Every source becomes the same list of `LabelledImage` records whose ``label`` is the role ("real" or
"fake"), found from the class name with the rules of `deepfake_detector.modeling.labels`. Problems with
the data as a whole (a wrong column name, an unknown label, a class with no images) raise `DataError`
before anything else happens; whether each file can be decoded is the caller's business, per image.

The split that keeps every ``group`` on one side is written here rather than taken from scikit-learn:
``StratifiedGroupKFold`` only makes k equal folds, not arbitrary validation and test fractions.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from deepfake_detector.errors import DetectorError
from deepfake_detector.io.inputs import IMAGE_SUFFIXES
from deepfake_detector.modeling.labels import FAKE_NAMES, REAL_NAMES, role_of_label

SPLITS = ("train", "val", "test")
ROLES = ("real", "fake")
_SPLIT_SYNONYMS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_DATASET_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json"}
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_OPTIONAL_COLUMNS = ("source", "group", "split")
# Where image bytes embedded in a `datasets` dataset are written so that every record has a path.
CACHE_ENV = "DEEPFAKE_DETECTOR_CACHE"


class DataError(DetectorError):
    """The labelled data can't be used as given; the message names the file or flag and the fix."""


@dataclass(frozen=True)
class LabelledImage:
    """One image file with its role.

    Attributes:
        path: Where the image file is.
        label: Its role, "real" or "fake" (not the class name the data used).
        source: Which collection it came from (the ``source`` column), for per-source metrics.
        group: Images sharing a group (a person, a video) always land in the same split.
        split: "train", "val" or "test".
    """

    path: str
    label: str
    source: str | None = None
    group: str | None = None
    split: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_labelled_images(
    data: str | os.PathLike,
    *,
    split: str | None = None,
    path_column: str = "path",
    label_column: str = "label",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> list[LabelledImage]:
    """Reads labelled images from a folder, a CSV manifest or a `datasets` dataset.

    Args:
        data: An image folder (one sub-folder per class), a ``.csv`` manifest, a local `datasets` file
            or ``save_to_disk`` folder, or a dataset name on the Hugging Face hub.
        split: "train", "val" or "test" to return only that split (synonyms such as "validation" are
            accepted); None returns every image with its ``split`` filled in.
        path_column: Column holding the image path (CSV) or image (`datasets`). For `datasets`, the
            default "path" falls back to the dataset's only ``Image`` column when it has no "path".
        label_column: Column holding the class name.
        val_fraction: Share of images for "val" when the data has no split of its own.
        test_fraction: Share of images for "test" when the data has no split of its own.
        seed: Makes the computed split reproducible.

    Returns:
        The records in the data's own order (folders: sorted by class, then path).

    Raises:
        DataError: The data is missing, a column is not there, a label names neither role, a class has
            no images, or a split value or fraction is invalid.
    """
    wanted = None if split is None else _normalise_split(split, where="split argument")
    images, where, own = _read_complete(data, path_column, label_column, val_fraction, test_fraction, seed)
    if wanted is None:
        return images
    return _select(images, where, wanted, own)


@dataclass(frozen=True)
class SplitSelection:
    """The images an evaluation reports on, which split they are, and what the report must say about it.

    Attributes:
        images: The selected records.
        split: The split reported: "train", "val", "test" or "all".
        note: Set when the choice is not the obvious one, for the report and the console: every row
            evaluated because the data has no split of its own, or a split computed here.
    """

    images: list[LabelledImage]
    split: str
    note: str | None = None


def select_evaluation_split(
    data: str | os.PathLike,
    *,
    split: str | None = None,
    default: str = "test",
    path_column: str = "path",
    label_column: str = "label",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> SplitSelection:
    """The images to report on, decided once for ``evaluate``.

    Data with a split of its own (a split column, split folders, dataset splits) gives ``split``, or
    ``default`` when None. Data without one gives every row when ``split`` is None (a user who hands
    over 200 labelled images is told about 200, not a computed 10%), and the computed split (as
    `load_labelled_images`) only when ``split`` names it, with a note that says so. ``"all"`` is every
    row. Other arguments as for `load_labelled_images`.

    Raises:
        DataError: As `load_labelled_images`.
    """
    images, where, own = _read_complete(data, path_column, label_column, val_fraction, test_fraction, seed)
    wanted = None if split in (None, "all") else _normalise_split(split, where="split argument")
    if split == "all":
        return SplitSelection(images, "all")
    if own:
        chosen = wanted or _normalise_split(default, where="default split")
        return SplitSelection(_select(images, where, chosen, own), chosen)
    if wanted is None:
        return SplitSelection(
            images,
            "all",
            f"{where} has no split of its own (no split column or split folders) and no split was asked "
            f"for, so all {len(images)} images are evaluated; name one (--split test) to report on a "
            "split computed here instead",
        )
    selected = _select(images, where, wanted, own)
    fraction = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    return SplitSelection(
        selected,
        wanted,
        f"{where} has no split of its own: the {wanted!r} split was computed here ({fraction[wanted]:g} of "
        f"the images, seed {seed}): {len(selected)} of {len(images)} images are evaluated; leave out "
        "--split (or pass --split all) to evaluate every row",
    )


def _read_complete(
    data, path_column: str, label_column: str, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[LabelledImage], str, bool]:
    """Every record with its split filled in, where the data was, and whether it had splits of its own."""
    _check_fractions(val_fraction, test_fraction)
    images, where = _read(data, path_column, label_column)
    if not images:
        raise DataError(f"{where}: no labelled images found")
    _check_both_roles(images, where)
    own = _has_own_splits(images)
    return _complete_splits(images, where, val_fraction, test_fraction, seed), where, own


def _select(images: list[LabelledImage], where: str, wanted: str, own: bool) -> list[LabelledImage]:
    selected = [image for image in images if image.split == wanted]
    if not selected:
        counts = Counter(image.split for image in images)
        raise DataError(
            f"{where}: the {wanted!r} split is empty (splits: {_format_counts(counts)}); "
            + (
                "the data's own split column has no such rows"
                if own
                else f"raise {'val_fraction' if wanted == 'val' else 'test_fraction'} (--{wanted}-fraction)"
            )
        )
    _check_both_roles(selected, f"{where} ({wanted} split)")
    return selected


def _read(data: str | os.PathLike, path_column: str, label_column: str) -> tuple[list[LabelledImage], str]:
    given = os.fspath(data)
    path = Path(given).expanduser()
    if path.is_dir():
        if any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS):
            return _read_dataset(given, path_column, label_column), given
        return _read_folder(path), given
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _read_csv(path, path_column, label_column), given
        if suffix in _DATASET_FILE_BUILDERS:
            return _read_dataset(given, path_column, label_column), given
        raise DataError(
            f"{given}: unsupported data file; pass an image folder, a .csv manifest, or a "
            f"`datasets` file ({', '.join(sorted(_DATASET_FILE_BUILDERS))})"
        )
    if path.exists():
        raise DataError(f"{given}: not a regular file or folder")
    if given.startswith((".", "/", "~")) or given.count("/") > 1 or path.suffix:
        raise DataError(f"{given}: no such file or folder")
    return _read_dataset(given, path_column, label_column), given


# --- image folders ---------------------------------------------------------------------------------


def _subfolders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def _read_folder(root: Path) -> list[LabelledImage]:
    children = _subfolders(root)
    if not children:
        raise DataError(
            f"{root}: no class sub-folders; an image folder needs one sub-folder per class "
            "(e.g. real/ and fake/), or train/, val/, test/ folders that each hold them"
        )
    if all(child.name.lower() in _SPLIT_SYNONYMS for child in children):
        images: list[LabelledImage] = []
        for child in children:
            images += _read_class_folders(child, split=_SPLIT_SYNONYMS[child.name.lower()])
        return images
    return _read_class_folders(root, split=None)


def _read_class_folders(folder: Path, *, split: str | None) -> list[LabelledImage]:
    images: list[LabelledImage] = []
    classes = _subfolders(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected e.g. real/ and fake/)")
    for class_folder in classes:
        role = role_of_label(class_folder.name)
        if role is None:
            raise DataError(
                f"{class_folder}: sub-folder {class_folder.name!r} names neither a real nor a fake class. "
                + _accepted_names()
                + " Rename or move the folder."
            )
        for path in _image_files(class_folder):
            images.append(LabelledImage(path=str(path), label=role, split=split))
    return images


def _image_files(folder: Path) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        found += [
            Path(directory) / name for name in sorted(files) if Path(name).suffix.lower() in IMAGE_SUFFIXES
        ]
    return found


# --- CSV manifests ---------------------------------------------------------------------------------


def _read_csv(manifest: Path, path_column: str, label_column: str) -> list[LabelledImage]:
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            _check_columns(columns, manifest, path_column, label_column)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{manifest}: cannot read the CSV manifest ({error})") from None
    folder = manifest.parent
    roles = _RoleMapper(str(manifest), label_column)
    images = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{manifest} line {line}"
        path_text = (row.get(path_column) or "").strip()
        if not path_text:
            raise DataError(f"{where}: empty {path_column!r} cell; every row needs an image path")
        path = Path(path_text).expanduser()
        images.append(
            LabelledImage(
                path=str(path if path.is_absolute() else folder / path),
                label=roles.role(row.get(label_column), where),
                source=_cell(row, "source"),
                group=_cell(row, "group"),
                split=_split_cell(row, where),
            )
        )
    return images


def _cell(row: Mapping, column: str) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _split_cell(row: Mapping, where: str) -> str | None:
    value = _cell(row, "split")
    return None if value is None else _normalise_split(value, where=where)


# --- `datasets` datasets ---------------------------------------------------------------------------


def _read_dataset(given: str, path_column: str, label_column: str) -> list[LabelledImage]:
    from deepfake_detector.optional import require

    datasets = require("datasets", "train")
    path = Path(given).expanduser()
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            # A single local file is one unsplit table; `datasets` calls it "train" by convention only.
            builder = _DATASET_FILE_BUILDERS[path.suffix.lower()]
            loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
        else:
            loaded = datasets.load_dataset(given)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as error:
        raise DataError(
            f"{given}: cannot load it as a `datasets` dataset ({type(error).__name__}: {error}); "
            "datasets on the hub need network access, otherwise pass a local folder, CSV or data file"
        ) from None
    base = path.parent if path.is_file() else path if path.is_dir() else None
    if isinstance(loaded, datasets.DatasetDict):
        images = []
        for name, table in loaded.items():
            split = _normalise_split(name, where=f"{given}: split name")
            images += _read_table(table, given, base, path_column, label_column, split)
        return images
    return _read_table(loaded, given, base, path_column, label_column, None)


def _read_table(table, given: str, base: Path | None, path_column: str, label_column: str, split):
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    columns = list(table.column_names)
    image_columns = [name for name in columns if isinstance(table.features[name], ImageFeature)]
    if path_column not in columns and path_column == "path" and len(image_columns) == 1:
        path_column = image_columns[0]
    _check_columns(columns, given, path_column, label_column)
    feature = table.features[label_column]
    names = feature.names if isinstance(feature, ClassLabel) else None
    keep = [path_column, label_column, *(name for name in _OPTIONAL_COLUMNS if name in columns)]
    table = table.select_columns(keep)
    if path_column in image_columns:
        table = table.cast_column(path_column, ImageFeature(decode=False))  # {"bytes", "path"}, no decode
    roles = _RoleMapper(given, label_column)
    images = []
    for index, row in enumerate(table):
        where = f"{given} row {index}" + (f" ({split} split)" if split else "")
        value = row[label_column]
        if names is not None and isinstance(value, int):
            value = names[value]
        elif not isinstance(value, str):
            raise DataError(
                f"{where}: label {value!r} is not a class name; the {label_column!r} column must hold "
                "names (e.g. real/fake) or be a ClassLabel feature with names"
            )
        images.append(
            LabelledImage(
                path=_image_path(row[path_column], base, where, path_column),
                label=roles.role(value, where),
                source=_cell(row, "source"),
                group=_cell(row, "group"),
                split=split if split is not None else _split_cell(row, where),
            )
        )
    return images


def _image_path(value, base: Path | None, where: str, column: str) -> str:
    if isinstance(value, str):
        path = Path(value).expanduser()
        return str(path if path.is_absolute() or base is None else base / path)
    if isinstance(value, dict) and value.get("bytes"):
        return str(_cache_image_bytes(value["bytes"], value.get("path")))
    if isinstance(value, dict) and value.get("path"):
        return _image_path(value["path"], base, where, column)
    raise DataError(f"{where}: column {column!r} holds neither an image path nor image bytes")


def _cache_image_bytes(data: bytes, original_name: str | None) -> Path:
    # Records carry paths, so embedded images are written once to a content-addressed file; loading
    # the same dataset again finds them there instead of writing copies.
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "deepfake_detector") / "images"
    suffix = Path(original_name).suffix.lower() if original_name else ""
    target = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(target)
    return target


# --- checks and splits -----------------------------------------------------------------------------


def _accepted_names() -> str:
    return (
        f"Accepted real names: {', '.join(sorted(REAL_NAMES))}; fake names: {', '.join(sorted(FAKE_NAMES))}."
    )


class _RoleMapper:
    """Maps class names to roles once per distinct name, with an error that names the row."""

    def __init__(self, where: str, label_column: str) -> None:
        self.where = where
        self.label_column = label_column
        self.roles: dict[str, str | None] = {}

    def role(self, value, where: str) -> str:
        name = "" if value is None else str(value).strip()
        if not name:
            raise DataError(f"{where}: empty {self.label_column!r} cell; every row needs a label")
        if name not in self.roles:
            self.roles[name] = role_of_label(name)
        role = self.roles[name]
        if role is None:
            raise DataError(
                f"{where}: label {name!r} names neither a real nor a fake class. {_accepted_names()} "
                f"Fix the {self.label_column!r} column, or pick another one with --label-column."
            )
        return role


def _check_columns(columns: list[str], where, path_column: str, label_column: str) -> None:
    shown = ", ".join(columns) if columns else "(none: is the file empty?)"
    for flag, column in (("--path-column", path_column), ("--label-column", label_column)):
        if column not in columns:
            raise DataError(f"{where}: {flag} {column!r} not found; columns are: {shown}")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on; "
            "their sum must be below 1"
        )


def _normalise_split(value: str, *, where: str) -> str:
    split = _SPLIT_SYNONYMS.get(str(value).strip().lower())
    if split is None:
        raise DataError(
            f"{where}: unknown split {value!r}; accepted: {', '.join(SPLITS)} "
            f"(or {', '.join(name for name in _SPLIT_SYNONYMS if name not in SPLITS)})"
        )
    return split


def _format_counts(counts: Mapping) -> str:
    return ", ".join(f"{key} {counts[key]}" for key in sorted(counts, key=str)) or "none"


def _check_both_roles(images: Iterable[LabelledImage], where: str) -> None:
    counts = Counter(image.label for image in images)
    missing = [role for role in ROLES if not counts[role]]
    if missing:
        raise DataError(
            f"{where}: no {missing[0]} images (found {_format_counts(counts)}); training and evaluation "
            "need both real and fake images. " + _accepted_names()
        )


def _has_own_splits(images: list[LabelledImage]) -> bool:
    return any(image.split is not None for image in images)


def _complete_splits(
    images: list[LabelledImage], where: str, val_fraction: float, test_fraction: float, seed: int
) -> list[LabelledImage]:
    unassigned = sum(image.split is None for image in images)
    if unassigned == 0:
        return images
    if unassigned < len(images):
        first = next(image for image in images if image.split is None)
        raise DataError(
            f"{where}: {unassigned} of {len(images)} images have no split (e.g. {first.path}); "
            "fill every cell of the split column, or drop the column to get a computed split"
        )
    splits = compute_group_split(images, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return [replace(image, split=split) for image, split in zip(images, splits, strict=True)]


def compute_group_split(
    images: list[LabelledImage], *, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Assigns each image a split, stratified by label, keeping every group on one side only.

    Groups (an image without one is its own group) are placed largest first, in an order shuffled by
    ``seed``, each into the split that is furthest below its target count for the group's labels.
    The result is deterministic for a given seed and input order, and within one image per class of
    the requested fractions when groups are small.

    Args:
        images: The records to split; their ``split`` is ignored.
        val_fraction: Target share of "val".
        test_fraction: Target share of "test".
        seed: Shuffles the order in which groups of the same size are placed.

    Returns:
        One split name per image, in input order.
    """
    members: dict[str, list[int]] = {}
    for index, image in enumerate(images):
        key = f"group:{image.group}" if image.group is not None else f"image:{index}"
        members.setdefault(key, []).append(index)
    keys = sorted(members)
    random.Random(seed).shuffle(keys)
    keys.sort(key=lambda key: -len(members[key]))  # stable: equal sizes stay in shuffled order
    totals = Counter(image.label for image in images)
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    candidates = [split for split in SPLITS if fractions[split] > 0]
    # deficit[split][role]: how many more images of that role the split should still receive.
    deficit = {split: {role: fractions[split] * totals[role] for role in totals} for split in candidates}
    assigned: list[str] = [""] * len(images)
    for key in keys:
        counts = Counter(images[index].label for index in members[key])
        best = max(candidates, key=lambda split: sum(deficit[split][r] * n for r, n in counts.items()))
        for role, n in counts.items():
            deficit[best][role] -= n
        for index in members[key]:
            assigned[index] = best
    return assigned
