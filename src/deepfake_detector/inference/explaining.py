"""Explaining: heatmaps of where the model sees the fake, with the score and verdict `predict` gives.

The heatmap methods live in ``explain.heatmaps`` (rollout, Grad-CAM); this module runs them over
inputs. An `Explainer` holds the copy of the model they need, and each input is loaded as for
prediction (provenance stage included) and scored by the same `Scorer`, so an explanation and a
prediction give a file the same verdict. Face mode explains each face crop (`explain_faces`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from deepfake_detector.errors import DetectorError
from deepfake_detector.inference.faces import explain_faces
from deepfake_detector.results import Explanation

if TYPE_CHECKING:
    from deepfake_detector.faces.crops import FaceOptions
    from deepfake_detector.inference.image_scoring import InputLoader
    from deepfake_detector.inference.scorer import Scorer
    from deepfake_detector.modeling.labels import LabelRoles
    from deepfake_detector.provenance import ProvenanceRecord


class Explainer:
    """Token maps of one checkpoint's model, from a float32 copy of it made on first use.

    A copy (`build_explainer_model`: eager attention for a ViT, float32), because rollout needs the
    attention matrix that fast attention kernels never build, and switching the shared model would race
    with concurrent scoring.

    Args:
        model: The checkpoint's PyTorch model; None for an ONNX export, which can't be explained unless
            ``load_model`` is given.
        processor: The checkpoint's image processor.
        roles: The checkpoint's labels and which are fake (Grad-CAM contrasts fake against real).
        load_model: Loads the PyTorch model when ``model`` is None (a detector running its checkpoint's
            int8 export): called once, by the first explanation.
    """

    def __init__(
        self, model, processor, roles: LabelRoles, *, load_model: Callable[[], object] | None = None
    ) -> None:
        self.model = model
        self.processor = processor
        self.roles = roles
        self._load_model = load_model
        self._loading = threading.Lock()
        self._explainer_model = None  # the float32 copy, made by the first compute_token_map

    def _pytorch_model(self):
        with self._loading:
            if self.model is None and self._load_model is not None:
                self.model = self._load_model()
            return self.model

    def check(self, method: str) -> str:
        """The concrete method ("rollout" or "gradcam", never "auto") for this model.

        Raises:
            ExplainError: The method is unknown or does not apply to this checkpoint.
        """
        from deepfake_detector.explain.heatmaps import check_explainable

        return check_explainable(self._pytorch_model(), self.processor, method)

    def compute_token_map(self, image, method: str) -> np.ndarray:
        """The heatmap of one loaded RGB image at the model's resolution (a ViT's patch grid, a conv
        model's last feature map), (rows, cols) in [0, 1]."""
        from deepfake_detector.explain.heatmaps import build_explainer_model, compute_token_map

        if self._explainer_model is None:
            self._explainer_model = build_explainer_model(self._pytorch_model())
        return compute_token_map(
            self._explainer_model, self.processor, image, method=method, roles=self.roles
        )  # (rows, cols)


def iter_explanations(
    images: Iterable,
    *,
    method: str,
    options: FaceOptions | None,
    explainer: Explainer,
    scorer: Scorer,
    load: InputLoader,
) -> Iterator[Explanation]:
    """One `Explanation` per input, in order; an input that fails carries its ``error``.

    Args:
        images: The inputs, as for `Detector.explain`.
        method: "auto", "rollout" or "gradcam" (`Detector.explain`).
        options: Resolved face options; None explains whole images.
        explainer: The checkpoint's `Explainer`.
        scorer: The scoring function and rule predictions use.
        load: Decodes an input and runs the provenance stage, as for prediction.

    Raises:
        ExplainError: The method is unknown or does not apply to this checkpoint.
    """
    # Before any input, as it is about the model; from here on the method is concrete, never "auto".
    method = explainer.check(method)
    face_detector = options.build_detector() if options else None  # a missing backend: usage error
    for index, item in enumerate(images):
        # The provenance stage runs as for predict, so that both give a file the same verdict.
        source, image, record = load(index, item)
        if isinstance(image, Exception):
            yield explain_error(scorer, source, method, image)
            continue
        try:
            if options:
                yield explain_faces(
                    scorer,
                    lambda crop: explainer.compute_token_map(crop, method),
                    source,
                    image,
                    method,
                    options,
                    face_detector,
                    record,
                )
            else:
                yield explain_image(scorer, explainer, source, image, method, record)
        except (RuntimeError, ValueError) as error:
            yield explain_error(scorer, source, method, DetectorError(f"model failed: {error}"))


def explain_image(
    scorer: Scorer,
    explainer: Explainer,
    source: str | int,
    image,
    method: str,
    provenance: ProvenanceRecord | None,
) -> Explanation:
    """The heatmap of one whole image, with the score and verdict `Detector.predict` gives it."""
    from deepfake_detector.explain.heatmaps import compute_image_heatmap

    # The score and verdict predict() gives: the scoring model's outputs, decided by the scorer.
    (score,) = scorer.score_outputs(scorer.compute_outputs([image]))
    token_map = explainer.compute_token_map(image, method)  # (rows, cols)
    return Explanation(
        source=source,
        method=method,
        heatmap=compute_image_heatmap(token_map, image.size),  # (H, W)
        token_map=token_map,
        fake_score=score.fake_score,
        model=scorer.model,
        revision=scorer.revision,
        domain=score.domain,
        **scorer.decide(score.fake_score, score.domain, provenance),
    )


def explain_error(scorer: Scorer, source: str | int, method: str, error: Exception) -> Explanation:
    """The `Explanation` of an input that could not be explained, with its ``error``."""
    return Explanation.failed(source, method, error, model=scorer.model, revision=scorer.revision)
