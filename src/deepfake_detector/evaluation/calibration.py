"""Fit temperature scaling and decision thresholds on held-out data, and store them with the checkpoint.

Calibration is stored with the checkpoint (`deepfake_detector.stored_settings.StoredSettings`, in its
``config.json``), so that `Detector.from_pretrained` (and so ``predict``) applies it wherever the
weights go. ``fitted_on`` names the data and split it was fitted on and the threshold rule, and
``evaluate`` refuses to report on that same split: thresholds are never chosen on the data being
reported.

Temperature scaling (Guo et al. 2017) divides the logits by one number T fitted to minimise the
negative log-likelihood of the true role; it changes how confident the scores are, never their order.
The fake threshold is fitted by one rule, `compute_threshold` (`THRESHOLD_RULE`), which ``calibrate``,
``train-head`` and the video thresholds share: the lowest threshold at which no real source's
false-positive rate (its real images called fake) exceeds a target on the validation images, and never
below 0.5. An optional
real threshold keeps the share of fakes called real under a target, and scores between the two are
"uncertain".
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepfake_detector.aggregation import FaceAggregation
from deepfake_detector.errors import DetectorError
from deepfake_detector.evaluation.metrics import (
    compute_ece,
    compute_false_negative_rate,
    compute_false_positive_rate,
)
from deepfake_detector.faces.crops import FaceChoice
from deepfake_detector.optional import require
from deepfake_detector.scoring import Calibration, Thresholds
from deepfake_detector.stored_settings import StoredSettings, load_settings, save_settings

# Search range of the temperature. Below 0.05 scores saturate to 0/1 in float64 for typical logits;
# above 20 every score is ~0.5. An optimum on a bound is reported as such (see `CalibrationResult`).
TEMPERATURE_BOUNDS = (0.05, 20.0)
# The one rule that fits a fake threshold (`compute_threshold`), recorded in ``fitted_on.rule``. Per source,
# so that a large clean source can't hide a small one whose real photos the model calls fake; never below
# even odds, so that a validation split the model separates cleanly can't pull the threshold down to just
# above its highest real score (1e-4 on an easy split), where every image it is unsure of is called fake.
THRESHOLD_RULE = "every real source's false-positive rate at most target_fpr, and never below 0.5"
MIN_THRESHOLD = 0.5


class CalibrationError(DetectorError):
    """Calibration can't be fitted or stored as asked; the message says what to change."""


def compute_role_log_probs(
    logits: np.ndarray,
    fake_ids: Sequence[int],
    temperature: float,
    *,
    counts: Sequence[int] | None = None,
    areas: Sequence[float] | None = None,
    strategy: str = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of the fake and the real role of each image under ``softmax(logits / T)``.

    In face mode an image has one row of logits per face crop, and its fake score is its faces'
    scores combined (`deepfake_detector.aggregation.FaceAggregation`); the combination is done here in
    log space, where it stays exact and finite: the most-fake face's fake probability is the largest,
    and its real probability the smallest; a mean is a log-mean-exp.

    Args:
        logits: Raw model outputs, shape (M, C): one row per image, or per crop with ``counts``.
        fake_ids: Class indices whose probabilities add up to the fake score.
        temperature: T > 0.
        counts: Rows of each image, in order (sum M); None: one row each.
        areas: Face box area of each row, for ``strategy="largest"``.
        strategy: How the faces of one image combine: "max", "mean" or "largest".

    Returns:
        (log P(fake), log P(real)), each of shape (N,), one per image.
    """
    special = require("scipy.special", "eval")
    scaled = np.asarray(logits, dtype=np.float64) / temperature  # (M, C)
    fake_mask = np.zeros(scaled.shape[1], dtype=bool)
    fake_mask[list(fake_ids)] = True
    total = special.logsumexp(scaled, axis=1)  # (M,)
    log_fake = special.logsumexp(scaled[:, fake_mask], axis=1) - total  # (M,)
    log_real = special.logsumexp(scaled[:, ~fake_mask], axis=1) - total  # (M,)
    if counts is None or all(count == 1 for count in counts):
        return log_fake, log_real
    counts = np.asarray(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first row of each image
    if strategy == "max":  # 1 - max(p_fake) = min(p_real)
        return np.maximum.reduceat(log_fake, starts), np.minimum.reduceat(log_real, starts)
    if strategy == "mean":
        return (
            np.logaddexp.reduceat(log_fake, starts) - np.log(counts),
            np.logaddexp.reduceat(log_real, starts) - np.log(counts),
        )
    if strategy == "largest":
        sizes = np.asarray(areas, dtype=np.float64)
        rows = [
            start + int(np.argmax(sizes[start : start + count]))
            for start, count in zip(starts, counts, strict=True)
        ]
        return log_fake[rows], log_real[rows]
    raise ValueError(f"unknown face strategy {strategy!r}")


def compute_role_nll(
    logits: np.ndarray, is_fake: np.ndarray, fake_ids: Sequence[int], temperature: float, **faces
) -> float:
    """Mean negative log-likelihood of the true role (real or fake) under ``softmax(logits / T)``.

    Args:
        logits: Raw model outputs, shape (N, C) (or one row per face crop, with ``faces``).
        is_fake: True where the image is fake, shape (N,).
        fake_ids: Class indices whose probabilities add up to the fake score.
        temperature: T > 0.
        **faces: ``counts``, ``areas`` and ``strategy`` of `compute_role_log_probs`, in face mode.

    Returns:
        The NLL in nats per image.
    """
    log_fake, log_real = compute_role_log_probs(logits, fake_ids, temperature, **faces)
    return float(-np.mean(np.where(np.asarray(is_fake, dtype=bool), log_fake, log_real)))


def compute_temperature(logits: np.ndarray, is_fake: np.ndarray, fake_ids: Sequence[int], **faces) -> float:
    """The temperature that minimises `compute_role_nll` within `TEMPERATURE_BOUNDS`.

    Args:
        logits: Raw model outputs on held-out images, shape (N, C) (or per face crop, with ``faces``).
        is_fake: True where the image is fake, shape (N,).
        fake_ids: Class indices of the fake role.
        **faces: As for `compute_role_nll`.

    Returns:
        T; 1.0 leaves the model's probabilities as they are.
    """
    optimize = require("scipy.optimize", "eval")
    low, high = np.log(TEMPERATURE_BOUNDS)
    # Searching log T makes the problem scale-free: halving and doubling T are equally far from 1.
    found = optimize.minimize_scalar(
        lambda log_t: compute_role_nll(logits, is_fake, fake_ids, float(np.exp(log_t)), **faces),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def compute_threshold_at_fpr(labels, scores, *, positive, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate (negatives scored at or above it) is <= target.

    Args:
        labels: True class of each image.
        scores: Positive-class score of each image, in [0, 1].
        positive: The label value that counts as positive ("fake").
        target_fpr: Largest acceptable share of negatives called positive, in [0, 1].

    Returns:
        A threshold in [0, 1]. It is just above the score of the first negative that would exceed
        the target, so on these images FPR <= target (unless negatives score exactly 1.0).

    Raises:
        ValueError: No negatives, or a target outside [0, 1].
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target FPR must be in [0, 1], got {target_fpr}")
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    negatives = np.sort(scores[labels != positive])[::-1]  # highest first
    if not len(negatives):
        raise ValueError("a threshold for a target false-positive rate needs negative (real) images")
    allowed = int(np.floor(target_fpr * len(negatives) + 1e-9))  # false positives we may keep
    if allowed >= len(negatives):
        return 0.0
    return float(min(np.nextafter(negatives[allowed], np.inf), 1.0))


def compute_threshold(labels, scores, *, target_fpr: float, sources=None, positive="fake") -> float:
    """The fake threshold by `THRESHOLD_RULE`, for ``calibrate``, ``train-head`` and video clips alike:
    the lowest threshold at which every real source's false-positive rate is at most ``target_fpr``
    (`compute_threshold_at_fpr` per source; the strictest wins), and at least `MIN_THRESHOLD`.

    Args:
        labels: True class of each image.
        scores: Positive-class score of each image, in [0, 1].
        target_fpr: Largest acceptable share of each source's negatives called positive, in [0, 1].
        sources: Each image's source (the manifest's ``source`` column); None, or a None entry, puts
            those images in one unnamed source.
        positive: The label value that counts as positive ("fake").

    Raises:
        ValueError: No negatives, or a target outside [0, 1].
    """
    labels, scores = np.asarray(labels, dtype=object), np.asarray(scores, dtype=np.float64)
    named = [None] * len(labels) if sources is None else list(sources)
    sources = np.array(["" if source is None else str(source) for source in named])
    if not (labels != positive).any():
        raise ValueError("a threshold for a target false-positive rate needs negative (real) images")
    return max(
        MIN_THRESHOLD,
        *(
            compute_threshold_at_fpr(
                labels[sources == source], scores[sources == source], positive=positive, target_fpr=target_fpr
            )
            for source in sorted(set(sources[labels != positive]))
        ),
    )


def compute_threshold_at_fnr(labels, scores, *, positive, target_fnr: float) -> float:
    """The highest threshold below which at most ``target_fnr`` of the positives score.

    Used for the "real" threshold: scores below it are called real, and at most that share of fakes
    are among them.

    Raises:
        ValueError: No positives, or a target outside [0, 1].
    """
    if not 0.0 <= target_fnr <= 1.0:
        raise ValueError(f"target FNR must be in [0, 1], got {target_fnr}")
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    positives = np.sort(scores[labels == positive])  # lowest first
    if not len(positives):
        raise ValueError("a threshold for a target false-negative rate needs positive (fake) images")
    allowed = int(np.floor(target_fnr * len(positives) + 1e-9))  # fakes we may call real
    if allowed >= len(positives):
        return 1.0
    return float(positives[allowed])


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` fitted, and how it does on the images it was fitted on.

    Attributes:
        calibration: The temperature and thresholds to store.
        images: Images given.
        scored: Images that could be read and scored (real + fake).
        real: Real images among them.
        fake: Fake images among them.
        target_fpr: The false-positive rate the fake threshold was chosen for.
        target_fnr: The false-negative rate the real threshold was chosen for (None: no uncertain band).
        false_positive_rate: On these images, with the new calibration.
        false_negative_rate: On these images, fakes scored below the real threshold.
        nll_before: Role NLL at T=1.
        nll_after: Role NLL at the fitted T.
        ece_before: Expected calibration error of the fake score at T=1.
        ece_after: The same at the fitted T.
        temperature_at_bound: The fitted T sits on a search bound: the upper one when the scores carry
            little information, the lower one when the images are perfectly separated or too few.
        fitted_on: Provenance stored in the config (data, split, image count, targets, and how the
            images were scored: engine, precision, JPEG draft decoding, face crops).
        errors: ``(path, message)`` of every image that could not be used.
        scores: ``(path, fake score)`` of every image used, with the fitted calibration: exactly the
            scores ``predict`` gives these images with the calibrated checkpoint, on which the
            thresholds were chosen.
    """

    calibration: Calibration
    images: int
    scored: int
    real: int
    fake: int
    target_fpr: float
    target_fnr: float | None
    false_positive_rate: float
    false_negative_rate: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    temperature_at_bound: bool
    fitted_on: dict = field(default_factory=dict)
    errors: tuple[tuple[str, str], ...] = ()
    scores: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict:
        return {
            "calibration": StoredSettings(calibration=self.calibration).to_dict(),
            "images": self.images,
            "scored": self.scored,
            "real": self.real,
            "fake": self.fake,
            "target_fpr": self.target_fpr,
            "target_fnr": self.target_fnr,
            "false_positive_rate": self.false_positive_rate,
            "false_negative_rate": self.false_negative_rate,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "temperature_at_bound": self.temperature_at_bound,
            "fitted_on": dict(self.fitted_on),
            "errors": [list(error) for error in self.errors],
        }


def calibrate(
    detector,
    items: Sequence,
    *,
    target_fpr: float = 0.05,
    target_fnr: float | None = None,
    batch_size: int = 8,
    data: str | None = None,
    split: str | None = None,
    faces: FaceChoice = None,
) -> CalibrationResult:
    """Fits temperature scaling and thresholds on labelled held-out images.

    The images are scored through `Detector.iter_logits`, with the loading, JPEG draft decoding and
    face mode of `Detector.predict`, on whatever engine the detector runs (ONNX exports included), so
    the thresholds are chosen on exactly the scores ``predict`` will compare with them. In face mode the
    temperature is fitted on each image's combined score (its most-fake face by default), as predicted.

    Args:
        detector: The `Detector` whose checkpoint is calibrated; its current calibration is ignored
            (the fit starts from raw logits).
        items: Labelled images (``.path`` and ``.label`` "real"/"fake"), from a validation split.
        target_fpr: Largest share of real images the fake threshold may call fake.
        target_fnr: Largest share of fake images the real threshold may call real; None (default)
            puts both thresholds at the same score, with no "uncertain" band.
        batch_size: Images per model call.
        data: The data the items came from, recorded in ``fitted_on``.
        split: Their split, recorded in ``fitted_on``; `evaluate` refuses to report on it.
        faces: Face mode, as for `Detector.predict` (None: as the checkpoint says).

    Returns:
        The fitted calibration and how it does on these images.

    Raises:
        CalibrationError: A target is out of range, or fewer than one real and one fake image could
            be read.
    """
    for name, value in (("target FPR", target_fpr), ("target FNR", target_fnr)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise CalibrationError(f"{name} must be between 0 and 1, got {value}")
    items = list(items)
    options = detector.resolve_faces(faces)
    aggregation = options.aggregation if options is not None else FaceAggregation()
    scored = list(
        detector.iter_logits([item.path for item in items], batch_size=batch_size, faces=options or False)
    )
    errors = [(item.path, result.error) for item, result in zip(items, scored, strict=True) if not result.ok]
    kept = [(item, result) for item, result in zip(items, scored, strict=True) if result.ok]
    labels = np.array([item.label for item, _ in kept], dtype=object)
    is_fake = labels == "fake"
    real, fake = int((~is_fake).sum()), int(is_fake.sum())
    if not real or not fake:
        where = f"{data} ({split} split)" if data else "the calibration images"
        raise CalibrationError(
            f"{where}: calibration needs real and fake images that can be read; got {real} real and "
            f"{fake} fake ({len(errors)} unreadable). Pass a validation split with both classes."
        )
    fake_ids = detector.roles.fake_ids
    logits = np.concatenate([result.logits for _, result in kept])  # (crops, C)
    faces_layout = {
        "counts": [len(result.logits) for _, result in kept],
        "areas": [area for _, result in kept for area in _crop_areas(result)],
        "strategy": aggregation.strategy,
    }
    temperature = compute_temperature(logits, is_fake, fake_ids, **faces_layout)

    def predicted(calibration: Calibration) -> list:
        # What `predict` gives with this calibration: the same records, the same rule.
        scorer = replace(detector.scorer, calibration=calibration)
        return [scorer.predict(result, aggregation) for _, result in kept]

    before = np.array([prediction.fake_score for prediction in predicted(Calibration())])  # (N,)
    fitted = predicted(Calibration(temperature=temperature))
    after = np.array([prediction.fake_score for prediction in fitted])  # (N,)
    # The domain each image is scored in (the model's probe; None for a model without domains).
    domains = np.array([prediction.domain for prediction in fitted])
    sources = np.array([getattr(item, "source", None) for item, _ in kept], dtype=object)
    fake_threshold = compute_threshold(labels, after, target_fpr=target_fpr, sources=sources)
    real_threshold = fake_threshold
    if target_fnr is not None:
        # A real threshold above the fake one would mean no uncertain band is needed: the fake
        # threshold alone already misses no more fakes than the target allows.
        real_threshold = min(
            compute_threshold_at_fnr(labels, after, positive="fake", target_fnr=target_fnr), fake_threshold
        )
    thresholds = Thresholds(real=real_threshold, fake=fake_threshold)
    domain_thresholds = _fit_domain_thresholds(
        detector.domains or (), domains, labels, after, target_fpr, target_fnr, sources
    )
    low, high = TEMPERATURE_BOUNDS
    # The items' own split names are already normalised ("validation" -> "val"); the argument is only
    # the fallback for records without one.
    splits = sorted({item.split for item in items if getattr(item, "split", None)})
    fitted_on = {
        "data": os.path.abspath(data) if data and os.path.exists(data) else data,
        "split": splits[0] if len(splits) == 1 else (splits or split),
        "images": real + fake,
        "target_fpr": target_fpr,
        "target_fnr": target_fnr,
        "rule": THRESHOLD_RULE,
        "scored_with": {
            **detector.describe_scoring(),
            "faces": None if options is None else {**options.to_config(), "strategy": aggregation.strategy},
        },
    }
    if domain_thresholds:
        fitted_on["domains"] = {
            "rule": "each domain's thresholds fitted on the images the model sent to that domain; a "
            "domain without real images here keeps the pooled thresholds",
            "images": {str(name): int(count) for name, count in Counter(domains.tolist()).items()},
        }
    return CalibrationResult(
        calibration=Calibration(
            temperature=temperature, thresholds=thresholds, domain_thresholds=domain_thresholds
        ),
        images=len(items),
        scored=real + fake,
        real=real,
        fake=fake,
        target_fpr=target_fpr,
        target_fnr=target_fnr,
        false_positive_rate=compute_false_positive_rate(
            labels, after, positive="fake", threshold=thresholds.fake
        ),
        false_negative_rate=compute_false_negative_rate(
            labels, after, positive="fake", threshold=thresholds.real
        ),
        nll_before=compute_role_nll(logits, is_fake, fake_ids, 1.0, **faces_layout),
        nll_after=compute_role_nll(logits, is_fake, fake_ids, temperature, **faces_layout),
        ece_before=compute_ece(labels, before, positive="fake"),
        ece_after=compute_ece(labels, after, positive="fake"),
        temperature_at_bound=bool(
            np.isclose(temperature, low, rtol=1e-3) or np.isclose(temperature, high, rtol=1e-3)
        ),
        fitted_on=fitted_on,
        errors=tuple(errors),
        scores=tuple((item.path, float(score)) for (item, _), score in zip(kept, after, strict=True)),
    )


def _fit_domain_thresholds(
    names: Sequence[str],
    domains: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    target_fpr,
    target_fnr,
    sources: np.ndarray | None = None,
) -> dict[str, Thresholds]:
    """Per domain of a model with domains (``names``), the thresholds of the same rule as the pooled
    ones, fitted on the images scored in that domain (``domains``); a domain with no real image keeps
    the pooled ones."""
    fitted = {}
    for domain in names:
        mine = domains == domain
        if not (labels[mine] == "real").any():
            continue
        fake = compute_threshold(
            labels[mine],
            scores[mine],
            target_fpr=target_fpr,
            sources=None if sources is None else sources[mine],
        )
        real = fake
        if target_fnr is not None and (labels[mine] == "fake").any():
            real = min(
                compute_threshold_at_fnr(labels[mine], scores[mine], positive="fake", target_fnr=target_fnr),
                fake,
            )
        fitted[domain] = Thresholds(real=real, fake=fake)
    return fitted


def _crop_areas(result) -> list[float]:
    """The face box area of each row of an image's logits (1 for a whole image)."""
    if not result.boxes:
        return [1.0] * len(result.logits)
    return [float(box.area) for box in result.boxes]


def _checkpoint_folder(model: str | os.PathLike, revision: str | None) -> Path:
    from deepfake_detector.modeling.checkpoints import resolve_checkpoint

    return resolve_checkpoint(model, revision=revision, local_files_only=True).folder


def check_calibration_target(model: str | os.PathLike, output_folder: str | os.PathLike | None) -> None:
    """Fails early, before any scoring, when `save_calibration` could not write where asked.

    Raises:
        CalibrationError: ``model`` is not a local folder and no ``output_folder`` was given, or
            ``output_folder`` already holds files.
    """
    if output_folder is None:
        if not Path(os.fspath(model)).expanduser().is_dir():
            raise CalibrationError(
                f"--model {os.fspath(model)!r} is not a local folder, so its config.json can't be updated in "
                "place; pass --output-model DIR to write a calibrated copy"
            )
        return
    target = Path(output_folder).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CalibrationError(
            f"--output-model {os.fspath(output_folder)!r} already exists and is not an empty folder; "
            "choose a new folder, or leave out --output-model to calibrate the model in place"
        )


def save_calibration(
    result: CalibrationResult,
    model: str | os.PathLike,
    *,
    output_folder: str | os.PathLike | None = None,
    revision: str | None = None,
) -> Path:
    """Writes the calibration into a checkpoint's ``config.json``, in place or in a copy.

    Args:
        result: What `calibrate` fitted.
        model: The checkpoint folder (or a hub id already in the local cache, with ``output_folder``).
        output_folder: Copy the checkpoint's files here first and calibrate the copy; None writes into
            ``model`` itself. Sub-folders (training checkpoints, logs) are not copied.
        revision: Hub revision, when ``model`` is a hub id.

    Returns:
        The folder whose ``config.json`` now holds the calibration.

    Raises:
        CalibrationError: See `check_calibration_target`.
    """
    check_calibration_target(model, output_folder)
    source = Path(os.fspath(model)).expanduser()
    if output_folder is None:
        target = source
    else:
        source = source if source.is_dir() else _checkpoint_folder(model, revision)
        target = Path(output_folder).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copy2(path, target / path.name)  # follows the hub cache's symlinks
    # Everything else the checkpoint stores (face settings, backbone) is kept; the stored video rules go,
    # as they were fitted on clip scores of the old calibration.
    save_settings(target, load_settings(target).with_image_calibration(result.calibration, result.fitted_on))
    return target


def compute_video_thresholds(
    labels, scores, domains, *, names: Sequence[str] = (), target_fpr: float
) -> tuple[Thresholds | None, dict[str, Thresholds]]:
    """The video rules of `Calibration` (``video_thresholds``, ``video_domain_thresholds``), fitted on
    labelled clips' aggregated scores by the rule of the image thresholds: the lowest fake threshold
    that calls at most ``target_fpr`` of the real clips fake.

    A model with domains (``names``) gets a rule per domain that has real clips here, and no pooled
    one: a clip of another domain keeps its domain's image rule, rather than one fitted on clips it
    is not like. A model without domains gets one pooled rule.

    Args:
        labels: "real" or "fake" per clip.
        scores: Each clip's fake score, as ``predict`` gives it (`VideoPrediction.fake_score`).
        domains: Each clip's domain (`VideoPrediction.domain`); None entries for a model without them.
        names: The model's domains (`Detector.domains`); empty for a model without domains.
        target_fpr: Largest share of real clips the threshold may call fake.

    Raises:
        CalibrationError: No real clip to fit on.
    """
    labels = np.asarray(labels, dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    if not (labels == "real").any():
        raise CalibrationError("a video threshold needs real clips to fit on; got none")
    if names:
        return None, _fit_domain_thresholds(
            names, np.asarray(domains, dtype=object), labels, scores, target_fpr, None
        )
    return Thresholds.single(compute_threshold(labels, scores, target_fpr=target_fpr)), {}


def save_video_thresholds(
    folder: str | os.PathLike,
    pooled: Thresholds | None,
    per_domain: dict[str, Thresholds],
    fitted_on: dict,
) -> Path:
    """Writes video rules (`compute_video_thresholds`) into a checkpoint folder's ``config.json``, under
    its stored settings (`StoredSettings.with_video_rules`), with what they were fitted on; the image
    calibration is left as it is.

    Returns:
        The ``config.json`` written.
    """
    if pooled is None and not per_domain:
        raise CalibrationError("no video threshold to store: no domain had real clips")
    return save_settings(folder, load_settings(folder).with_video_rules(pooled, per_domain, fitted_on))
