"""Image scoring: image inputs in, one `InputLogits` per input out, in input order.

Each input is decoded (``io.images``) and looked at by the provenance stage (`InputLoader`). Whole
images are then preprocessed in worker threads and batched through the engine (`iter_image_logits`);
face mode cuts the faces and batches the crops (`iter_face_logits`). An input that can't be read or
preprocessed, or whose batch fails in the model, becomes its own row's error and never stops the
others. The scoring rule comes later (`Scorer.predict`), so that predictions and calibration see the
same numbers; `Detector.iter_logits` picks the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from deepfake_detector.errors import DetectorError, ImageLoadError
from deepfake_detector.faces.crops import FaceCrops, FaceOptions, cut_faces
from deepfake_detector.inference.faces import iter_crop_outputs
from deepfake_detector.inference.prefetch import map_ordered
from deepfake_detector.inference.scorer import InputLogits
from deepfake_detector.io.images import describe_source, try_decode_image
from deepfake_detector.io.inputs import InputProblem
from deepfake_detector.provenance import Finding, ProvenanceOptions, ProvenanceRecord
from deepfake_detector.provenance.records import clip_text

if TYPE_CHECKING:
    from PIL import Image

    from deepfake_detector.inference.engines import Engine
    from deepfake_detector.inference.preprocessing import ImagePreprocessor
    from deepfake_detector.scoring import ModelOutputs


@dataclass(frozen=True)
class InputLoader:
    """Decodes one input and runs the provenance stage on it, the first step of every image mode.

    Attributes:
        max_pixels: Decompression-bomb limit: images with more pixels are refused.
        provenance: The provenance stage (C2PA, metadata, watermark); None: off.
    """

    max_pixels: int
    provenance: ProvenanceOptions | None = None

    def __call__(
        self, index: int, item, *, draft_size: tuple[int, int] | None = None
    ) -> tuple[str | int, object, ProvenanceRecord | None]:
        """One input decoded: (source, RGB image or the error, what the provenance stage found)."""
        if isinstance(item, InputProblem):
            return item.source, ImageLoadError(item.error), None
        source = describe_source(item, index)
        name = str(source) if isinstance(source, str) else f"input {index}"
        decoded = try_decode_image(item, name=name, max_pixels=self.max_pixels, draft_size=draft_size)
        if isinstance(decoded, Exception):
            return source, decoded, None
        record = None
        if self.provenance is not None:
            try:
                record = self.provenance.inspect_image(decoded)
            except Exception as error:  # the checks' own guards failed: keep the row, say so
                problem = Finding(
                    "provenance", "provenance_error", clip_text(f"{type(error).__name__}: {error}")
                )
                record = ProvenanceRecord((problem,))
        return source, decoded.rgb, record


def iter_image_logits(
    images: Iterable,
    *,
    load: InputLoader,
    preprocessor: ImagePreprocessor,
    engine: Engine,
    draft_size: tuple[int, int] | None,
    batch_size: int,
    workers: int,
) -> Iterator[InputLogits]:
    """Whole images, ``batch_size`` per model call, in input order.

    ``workers`` threads (0: none) read and preprocess the next inputs while the engine scores the
    current batch, at most two batches ahead, so memory stays flat however many inputs there are.
    ``draft_size`` is the size large JPEGs may be decoded down to (`Detector.draft_size_for`).
    """

    def prepare(
        indexed: tuple[int, object],
    ) -> tuple[str | int, np.ndarray | Exception, ProvenanceRecord | None]:
        """Reads and preprocesses one input, in a worker thread; a failure becomes its row's error."""
        index, item = indexed
        source, image, record = load(index, item, draft_size=draft_size)
        if isinstance(image, Exception):
            return source, image, record
        try:
            return source, preprocessor(image), record  # (3, H, W)
        except Exception as error:  # an odd image must fail alone, not take its batch with it
            problem = ImageLoadError(f"{source}: cannot preprocess ({type(error).__name__}: {error})")
            return source, problem, record

    prepared = map_ordered(prepare, enumerate(images), workers=workers, window=2 * batch_size)
    while batch := list(islice(prepared, batch_size)):
        yield from compute_batch_logits(engine, batch)


def compute_batch_logits(engine: Engine, loaded: list[tuple]) -> list[InputLogits]:
    """One batch of preprocessed inputs through the engine; the inputs that failed to load, and all of
    them when the model fails, carry their error."""
    good = [pixels for _, pixels, _ in loaded if not isinstance(pixels, Exception)]
    failure = None
    if good:
        try:
            outputs = engine.compute_outputs(np.stack(good))  # B rows
        except (RuntimeError, ValueError, DetectorError) as error:
            failure = DetectorError(f"model failed: {error}")
    results = []
    position = 0
    for source, pixels, record in loaded:
        if isinstance(pixels, Exception) or failure is not None:
            error = pixels if isinstance(pixels, Exception) else failure
            results.append(InputLogits(source, None, error=str(error), provenance=record))
        else:
            row = outputs.rows(position, position + 1)  # (1, C) and (1, domains)
            results.append(
                InputLogits(source, row.logits, provenance=record, domain_logits=row.domain_logits)
            )
            position += 1
    return results


def iter_face_logits(
    images: Iterable,
    options: FaceOptions,
    *,
    load: InputLoader,
    compute_outputs: Callable[[Sequence[Image.Image]], ModelOutputs],
    draft_size: tuple[int, int] | None,
    batch_size: int,
) -> Iterator[InputLogits]:
    """Face mode: the crops of each input's faces (the whole image when it has none), about
    ``batch_size`` crops per call of ``compute_outputs``, in input order (`iter_crop_outputs`)."""
    face_detector = options.build_detector()  # before any input: a missing backend is a usage error

    def prepared() -> Iterator[tuple[tuple, FaceCrops | Exception]]:
        for index, item in enumerate(images):
            source, image, record = load(index, item, draft_size=draft_size)
            if isinstance(image, Exception):
                yield (source, record), image
                continue
            try:
                yield (source, record), cut_faces(face_detector, image, options)
            except (RuntimeError, ValueError, DetectorError) as error:
                yield (source, record), DetectorError(f"{source}: face detection failed: {error}")

    scored = iter_crop_outputs(compute_outputs, prepared(), batch_size=batch_size)
    for (source, record), crops, outputs in scored:
        if isinstance(crops, Exception):
            yield InputLogits(source, None, error=str(crops), provenance=record)
        else:
            yield InputLogits(
                source,
                outputs.logits,
                crops.boxes,
                crops.crop_boxes,
                provenance=record,
                domain_logits=outputs.domain_logits,
            )
