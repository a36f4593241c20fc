"""The `Detector`: a checkpoint, its preprocessing and its label roles, turned into verdicts.

Data flows one way: inputs are loaded (``io.images``), preprocessed by the checkpoint's own image
processor, run through the model, and the logits become scores and verdicts (``scoring``).

This class is the one door users open; each of its jobs lives in its own module, and it hands them its
parts: loading a checkpoint (`deepfake_detector.inference.loading`), scoring images
(``inference.image_scoring``), explaining (``inference.explaining``) and videos (``inference.video``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields, replace
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np

from deepfake_detector.aggregation import FaceAggregation, FrameAggregation
from deepfake_detector.faces.crops import FaceChoice, FaceMode, FaceOptions, build_face_mode
from deepfake_detector.inference.config import DetectorConfig
from deepfake_detector.inference.engines import EngineChoice, TorchEngine, default_workers
from deepfake_detector.inference.explaining import Explainer, iter_explanations
from deepfake_detector.inference.image_scoring import InputLoader, iter_face_logits, iter_image_logits
from deepfake_detector.inference.loading import ModelInfo, build_model_info, load_detector_parts
from deepfake_detector.inference.preprocessing import ImagePreprocessor
from deepfake_detector.inference.scorer import InputLogits, Scorer
from deepfake_detector.io.images import DEFAULT_MAX_PIXELS, DecodedImage, ImageInput
from deepfake_detector.io.inputs import InputProblem, is_video_path
from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL
from deepfake_detector.modeling.labels import LabelRoles
from deepfake_detector.provenance import ProvenanceOptions
from deepfake_detector.results import Explanation, Prediction, VideoPrediction
from deepfake_detector.scoring import Calibration, ModelOutputs, Thresholds
from deepfake_detector.stored_settings import StoredSettings

if TYPE_CHECKING:
    from deepfake_detector.video.decode import FrameSampling

__all__ = ["DEFAULT_BATCH_SIZE", "Detector", "ModelInfo"]

DEFAULT_BATCH_SIZE = 8


class Detector:
    """Scores images as real or fake with a Hugging Face image-classification checkpoint.

    Build one with `Detector.from_pretrained`; the constructor takes already-loaded parts.
    """

    def __init__(
        self,
        model,
        processor,
        roles: LabelRoles,
        *,
        model_id: str,
        revision: str | None = None,
        calibration: Calibration | None = None,
        device: str = "cpu",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        engine=None,
        config=None,
        jpeg_draft: bool = False,
        workers: int | None = None,
        face_mode: FaceMode | None = None,
        provenance: ProvenanceOptions | None = None,
        settings: StoredSettings | None = None,
        load_explain_model=None,
    ) -> None:
        # model is None when the checkpoint is an ONNX export; then `engine` and `config` are required.
        self.model = model.to(device) if model is not None else None
        self.config = config if config is not None else model.config
        # The model step; by default the PyTorch model in fp32, the pipeline's exact answers.
        self.engine = engine if engine is not None else TorchEngine(self.model, device=device)
        self.preprocessor = ImagePreprocessor(processor, jpeg_draft=jpeg_draft)
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        self.engine_choice: EngineChoice | None = None  # why this engine and precision; from_pretrained
        self._export_info: dict | None = None  # export.json of an ONNX export folder
        self.processor = processor
        self.roles = roles
        self.model_id = model_id
        self.revision = revision
        # What the checkpoint stores (`StoredSettings`), read once; ``calibration`` and ``face_mode``
        # are it with the caller's overrides on top, and everything downstream reads those.
        self.settings = settings or StoredSettings()
        self.calibration = calibration or self.settings.calibration
        self.device = device
        self.max_pixels = max_pixels
        # Explaining runs on a float32 copy of the model (eager attention for a ViT), made by explain();
        # a detector running its checkpoint's int8 export loads the PyTorch model then
        # (``load_explain_model``, from `from_pretrained`).
        self._explainer = Explainer(self.model, processor, roles, load_model=load_explain_model)
        # Face mode when a call leaves ``faces`` out, and the face settings whenever a call turns it on:
        # the checkpoint's stored settings under the ``faces`` that `from_pretrained` was given.
        self.face_mode = face_mode or build_face_mode(None, self.settings.faces)
        # The provenance stage (C2PA, metadata, watermark) every predict runs first; None: off.
        self.provenance = provenance

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        thresholds: Thresholds | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_pickle: bool = False,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        precision: str = "auto",
        engine: str = "auto",
        jpeg_draft: bool | None = None,
        workers: int | None = None,
        faces: FaceChoice = None,
        provenance: bool = True,
        c2pa_trust_anchors: str | os.PathLike | None = None,
        **model_kwargs,
    ) -> Detector:
        """Loads the bundled model (default), a local folder, a hub id, or an alias such as ``seed-v2``.

        Args:
            name_or_path: A bundled model (``clip-b16-v2``, the default, whose backbone is fetched
                into the cache on first use; ``clip-b16-v1``, the face-only model before it; or
                ``compact-v1``), a folder written by
                ``save_pretrained``, a Hugging Face hub id, or an alias (``seed-v2``).
            revision: Hub branch, tag or commit.
            device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
            thresholds: Decision thresholds; by default those stored in the checkpoint's config by
                ``calibrate`` (``deepfake_detector.thresholds``), else 0.5/0.5. The stored
                temperature is always applied, and so are stored face settings
                (``deepfake_detector.faces``, written by ``train`` with face crops): they make face
                mode the default (``face_options``).
            max_pixels: Decompression-bomb limit: images with more pixels are refused.
            allow_pickle: Accept pickle-only (``pytorch_model.bin``) checkpoints. Only for trusted files.
            cache_dir: Hugging Face cache folder.
            local_files_only: Do not use the network.
            precision: "auto" (bf16 on CPUs with AMX or AVX512-BF16, else fp32; for an export folder,
                its own precision), "fp32" (exact: the transformers pipeline's answers), "bf16", or
                "int8" (only for a folder exported with ``quantize="int8"``). See
                `deepfake_detector.inference.engines`.
            engine: "auto", "torch" or "onnx" (a folder written by ``export_onnx``; "auto" picks it
                for such a folder).
            jpeg_draft: Decode JPEGs far larger than the model input at a reduced scale (see
                `deepfake_detector.inference.preprocessing`): faster on camera photos, scores within
                the parity bar but not identical. None (default): on unless the run is exact
                (`EngineChoice.exact`: PyTorch in fp32, asked for or chosen by ``precision="auto"``).
            workers: Threads that decode and preprocess ahead of the model in `iter_predict`
                (0: none); default: one per CPU, at most 4.
            faces: The detector's face mode when a call leaves ``faces`` out (`face_options`): None
                (default) as the checkpoint says, ``True``/``False``, `FaceOptions`, or `FaceOverrides`
                merged over the checkpoint's settings (`resolve_face_options`).
            provenance: Run the provenance stage before the model (`deepfake_detector.provenance`):
                C2PA content credentials, generator metadata and the Stable Diffusion watermark,
                reported in every result; a valid C2PA declaration of AI generation or a
                watermark match makes the verdict "fake". False switches it off.
            c2pa_trust_anchors: A PEM file of root certificates whose C2PA signers are trusted.
            **model_kwargs: Passed to ``from_pretrained`` of the model.

        Raises:
            CheckpointError: The checkpoint can't be found, trusted or loaded, or its labels can't be
                mapped to real and fake (`LabelMappingError`).
            EngineError: ``precision`` or ``engine`` is unknown or can't run this checkpoint here.
            ProvenanceError: ``c2pa_trust_anchors`` can't be read as PEM certificates.
        """
        parts = load_detector_parts(
            name_or_path,
            revision=revision,
            device=device,
            thresholds=thresholds,
            allow_pickle=allow_pickle,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            precision=precision,
            engine=engine,
            jpeg_draft=jpeg_draft,
            faces=faces,
            provenance=provenance,
            c2pa_trust_anchors=c2pa_trust_anchors,
            **model_kwargs,
        )
        detector = cls(**parts.init_kwargs(), max_pixels=max_pixels, workers=workers)
        detector.engine_choice = parts.engine_choice
        detector._export_info = parts.export_info
        return detector

    @classmethod
    def from_config(cls, config: DetectorConfig, **overrides) -> Detector:
        """Loads the detector a `DetectorConfig` describes (what the CLI, the server and Ray actors do);
        ``overrides`` replace its fields for this load (e.g. ``device="cpu"``).

        Raises:
            CheckpointError: As `from_pretrained`.
            EngineError: As `from_pretrained`.
        """
        config = replace(config, **overrides)
        options = {item.name: getattr(config, item.name) for item in fields(config)}
        return cls.from_pretrained(options.pop("model"), **options)

    @property
    def thresholds(self) -> Thresholds:
        return self.calibration.thresholds

    @property
    def face_options(self) -> FaceOptions | None:
        """The face options a call that leaves ``faces`` out scores with; None: whole images."""
        return self.face_mode.default

    def info(self) -> ModelInfo:
        """Labels, role mapping, input preprocessing and parameter count of the loaded checkpoint."""
        return build_model_info(
            model_id=self.model_id,
            revision=self.revision,
            model=self.model,
            config=self.config,
            processor=self.processor,
            roles=self.roles,
            calibration=self.calibration,
            engine=self.engine,
            device=self.device,
            face_options=self.face_options,
            domains=self.domains,
            export_info=self._export_info,
            engine_reason=None if self.engine_choice is None else self.engine_choice.reason,
        )

    def describe_scoring(self) -> dict:
        """How this detector scores, for the provenance of evaluations and calibrations: the engine, its
        precision, and whether large JPEGs are decoded at reduced scale."""
        return {
            "engine": self.engine.name,
            "precision": self.engine.precision,
            "jpeg_draft": self.preprocessor.jpeg_draft,
        }

    @property
    def scorer(self) -> Scorer:
        """This detector's scoring function and rule, as face and video scoring take them."""
        return Scorer(
            compute_outputs=self.compute_outputs,
            roles=self.roles,
            calibration=self.calibration,
            model=self.model_id,
            revision=self.revision,
            domains=self.domains,
        )

    @property
    def input_loader(self) -> InputLoader:
        """How this detector reads an input: decoded under ``max_pixels``, then the provenance stage."""
        return InputLoader(self.max_pixels, self.provenance)

    @property
    def domains(self) -> tuple[str, ...] | None:
        """The domains the checkpoint tells apart (``config.domains``, e.g. face, general), each with
        its own head and thresholds; None for a checkpoint with one head for everything."""
        domains = getattr(self.config, "domains", None)
        return tuple(domains) if domains else None

    def resolve_faces(self, faces: FaceChoice = None) -> FaceOptions | None:
        """What a ``faces`` argument means for this detector (`FaceMode.resolve`): the options to score
        with, or None for whole images. ``True`` uses the checkpoint's face settings even when face
        mode was switched off at load.

        Every entry point (CLI, HTTP, Ray, evaluation) passes its user's choice here, or to the
        scoring methods, untouched; this is the one place the checkpoint's settings fill the gaps.
        """
        return self.face_mode.resolve(faces)

    def draft_size_for(self, *, faces: bool) -> tuple[int, int] | None:
        """The size large JPEGs may be decoded down to (None: full size), for whole-image scoring or face
        mode: the one policy every decoder (this detector's, the server's) follows. Face mode decodes
        in full: face boxes and crops are in the image's own pixels."""
        return None if faces else self.preprocessor.draft_size

    def compute_outputs(self, images: Sequence) -> ModelOutputs:
        """Runs preprocessing and the model on already-loaded RGB images.

        Args:
            images: RGB PIL images (see `deepfake_detector.io.images.load_image`).

        Returns:
            Float32 logits (B, num_labels), and the domain probe's logits for a model with domains.
        """
        pixel_values = np.stack([self.preprocessor(image) for image in images])  # (B, 3, H, W)
        return self.engine.compute_outputs(pixel_values)

    def compute_logits(self, images: Sequence) -> np.ndarray:
        """`compute_outputs`' logits alone, (B, num_labels)."""
        return self.compute_outputs(images).logits

    def predict(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        faces: FaceChoice = None,
    ):
        """Scores one image or many.

        Args:
            images: One input or a list of them: paths, encoded bytes, PIL images, NumPy arrays.
            batch_size: Images (or face crops) per model call.
            faces: Find the faces and score a crop of each (``True``, or `FaceOptions` for the detector,
                margin and how faces combine); the image's score is then its most-fake face's, and an
                image without a face is scored whole with ``no_face`` set. None (default): face mode
                when the checkpoint was trained on face crops (``face_options``); ``False`` scores
                whole images; `FaceOverrides` changes some settings and keeps the checkpoint's others
                (`resolve_faces`).

        Returns:
            A `Prediction` for a single input, else a list in input order. An input that can't be
            read gives a `Prediction` with ``error`` set; it never stops the others.
        """
        if _is_single(images):
            # No threads for one input.
            return next(self.iter_predict([images], batch_size=batch_size, workers=0, faces=faces))
        return list(self.iter_predict(images, batch_size=batch_size, faces=faces))

    def iter_predict(
        self,
        images: Iterable[ImageInput | InputProblem],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int | None = None,
        faces: FaceChoice = None,
    ) -> Iterator[Prediction]:
        """Like `predict`, but lazy: scores ``batch_size`` inputs at a time, in input order.

        ``workers`` threads (default: the detector's ``workers``; 0 for none) read and preprocess the
        next inputs while the model scores the current batch, at most two batches ahead, so memory
        stays flat however many inputs the iterable yields. ``faces`` as for `predict`.
        """
        options = self.resolve_faces(faces)
        aggregation = options.aggregation if options is not None else FaceAggregation()
        scorer = self.scorer
        # Resolved options pass through `resolve_faces` unchanged (False: whole images).
        scored_inputs = self.iter_logits(
            images, batch_size=batch_size, workers=workers, faces=options or False
        )
        for scored in scored_inputs:
            yield scorer.predict(scored, aggregation)

    def iter_logits(
        self,
        images: Iterable[ImageInput | InputProblem],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int | None = None,
        faces: FaceChoice = None,
    ) -> Iterator[InputLogits]:
        """The raw logits `iter_predict` turns into predictions, with the same loading, face mode and
        decoding, one `InputLogits` per input in order (an unreadable input carries its ``error``).

        Evaluation and calibration score through this, so that what they measure and fit is what
        `predict` gives, on every engine (ONNX exports included). Arguments as for `iter_predict`.
        """
        options = self.resolve_faces(faces)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if options is not None:
            yield from iter_face_logits(
                images,
                options,
                load=self.input_loader,
                compute_outputs=self.compute_outputs,
                draft_size=self.draft_size_for(faces=True),
                batch_size=batch_size,
            )
            return
        yield from iter_image_logits(
            images,
            load=self.input_loader,
            preprocessor=self.preprocessor,
            engine=self.engine,
            draft_size=self.draft_size_for(faces=False),
            batch_size=batch_size,
            workers=self.workers if workers is None else workers,
        )

    def explain(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        method: str = "auto",
        faces: FaceChoice = None,
    ):
        """Heatmaps of where the model sees the fake, for one image or many (ViT and conv checkpoints).

        Args:
            images: One input or a list of them, as for `predict`.
            method: "auto" (default: rollout for a ViT, Grad-CAM for a convolutional model), "rollout"
                (attention rollout: what flows into the class token; not class-specific; ViT only) or
                "gradcam" (Grad-CAM of fake against real: on the patch tokens entering a ViT's last
                block, on the output of a convolutional backbone's last stage). The explanations carry
                the concrete method, never "auto".
            faces: Find the faces and explain a crop of each, placed back onto the image at its crop box
                (zero elsewhere); with no face the whole image is explained and ``no_face`` is set.
                As for `predict`.

        Returns:
            An `Explanation` for a single input, else a list in input order. An input that can't be read
            gives an `Explanation` with ``error`` set; it never stops the others.

        Raises:
            ExplainError: The method is unknown or does not apply to this checkpoint (see
                `deepfake_detector.explain.heatmaps`).
        """
        if _is_single(images):
            return next(self.iter_explain([images], method=method, faces=faces))
        return list(self.iter_explain(images, method=method, faces=faces))

    def iter_explain(
        self,
        images: Iterable[ImageInput | InputProblem],
        *,
        method: str = "auto",
        faces: FaceChoice = None,
    ) -> Iterator[Explanation]:
        """Like `explain`, but lazy: one input at a time, in order."""
        yield from iter_explanations(
            images,
            method=method,
            options=self.resolve_faces(faces),
            explainer=self._explainer,
            scorer=self.scorer,
            load=self.input_loader,
        )

    def compute_token_map(self, image, method: str) -> np.ndarray:
        """The heatmap of one loaded RGB image at the model's resolution (a ViT's patch grid, a conv
        model's last feature map), (rows, cols) in [0, 1]."""
        return self._explainer.compute_token_map(image, method)  # (rows, cols)

    def predict_video(
        self,
        video: str | os.PathLike,
        *,
        faces: FaceChoice = None,
        sampling: FrameSampling | None = None,
        aggregation: FrameAggregation | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> VideoPrediction:
        """Scores a video file (mp4, mov, mkv, webm, avi, ...) from a sample of its frames.

        Args:
            video: Path of the video file.
            faces: Score the faces of each frame (``True`` or `FaceOptions`); a frame without a face is
                scored whole and counted. ``False`` scores whole frames. None (default): as the
                checkpoint says, as for `predict` (face crops for a checkpoint trained on them).
            sampling: Which frames: `FrameSampling` (default 32 evenly spaced in time, or
                ``every_s``).
            aggregation: How frame scores become the video's: `FrameAggregation` (default "mean";
                "median", "top_k_mean", "confident").
            batch_size: Face crops per model call.

        Returns:
            A `VideoPrediction` with per-frame timestamps, scores and face boxes. A file that can't
            be scored (missing, not a video, audio only, no decodable frame) has ``error`` set; a
            truncated or damaged one is scored from what decodes, with ``stopped_at_s`` and
            ``decode_problem`` saying where and why it stopped.
        """
        from deepfake_detector.inference.video import predict_video
        from deepfake_detector.video.decode import FrameSampling

        return predict_video(
            self.scorer,
            video,
            faces=self.resolve_faces(faces),
            sampling=sampling or FrameSampling(),
            aggregation=aggregation or FrameAggregation(),
            batch_size=batch_size,
            # C2PA: videos carry manifests too
            provenance=None if self.provenance is None else self.provenance.inspect_file(video),
        )

    def iter_predict_media(
        self,
        inputs: Iterable[str | os.PathLike | InputProblem],
        *,
        faces: FaceChoice = None,
        sampling: FrameSampling | None = None,
        aggregation: FrameAggregation | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[Prediction | VideoPrediction]:
        """Image and video files in input order: video files (by suffix) one by one as `predict_video`,
        runs of images batched as `iter_predict`. Arguments as for those (``faces`` None: as the
        checkpoint says, for images and videos alike)."""
        options = self.resolve_faces(faces)  # once, so that images and videos agree

        def is_video(item) -> bool:
            return isinstance(item, (str, os.PathLike)) and is_video_path(os.fspath(item))

        for videos, run in groupby(inputs, key=is_video):
            if videos:
                for video in run:
                    yield self.predict_video(
                        video,
                        faces=options or False,
                        sampling=sampling,
                        aggregation=aggregation,
                        batch_size=batch_size,
                    )
            else:
                yield from self.iter_predict(run, batch_size=batch_size, faces=options or False)


def _is_single(images) -> bool:
    from PIL import Image

    single = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, DecodedImage)
    return isinstance(images, single)
