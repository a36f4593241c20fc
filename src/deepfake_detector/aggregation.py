"""How many fake scores become one: the faces of one image (or frame), and the frames of one video.

Pure NumPy on scores in [0, 1], so it runs on any engine's outputs and tests in milliseconds. Every
strategy is a named, pure function; `FaceAggregation` and `FrameAggregation` pick one by name and hold
its parameters, and their ``to_dict`` is what a result reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACE_STRATEGIES = ("max", "mean", "largest")
FRAME_STRATEGIES = ("mean", "median", "top_k_mean", "confident")


def _as_scores(scores) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no scores to aggregate")
    if not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
        raise ValueError("scores must be finite and in [0, 1]")
    return values


def compute_mean(scores) -> float:
    """The mean score."""
    return float(_as_scores(scores).mean())


def compute_median(scores) -> float:
    """The median score: a few outlier frames (a cut, a blurred frame) cannot move it."""
    return float(np.median(_as_scores(scores)))


def compute_max(scores) -> float:
    """The highest score."""
    return float(_as_scores(scores).max())


def compute_top_k_mean(scores, k: int) -> float:
    """The mean of the ``k`` highest scores (all of them when there are fewer).

    For a video where only some frames or one face were manipulated: the fake frames decide, and
    averaging over ``k`` of them rather than taking the single maximum tempers one bad frame.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = np.sort(_as_scores(scores))[::-1]
    return float(values[:k].mean())


def compute_confident_mean(
    scores,
    *,
    fake_threshold: float = 0.8,
    real_threshold: float = 0.2,
    min_fake_count: int = 11,
    fake_share_divisor: float = 2.5,
    real_share: float = 0.9,
) -> float:
    """The "confident strategy" of the DFDC winner (Seferbekov, 2020), with its constants as defaults.

    When many scores are confidently fake (more than ``min_fake_count`` above ``fake_threshold``, and
    more than ``len // fake_share_divisor`` of them), the result is the mean of those confident fakes;
    else when more than ``real_share`` of the scores are confidently real (below ``real_threshold``),
    the mean of those; else the plain mean. It pushes clear cases to the extremes (which the DFDC's
    log-loss rewarded) and leaves unclear ones at the mean. The defaults assume about 32 scores.

    Args:
        scores: Fake scores in [0, 1] (the winner used one per face per sampled frame).
        fake_threshold: A score above this is a confident fake.
        real_threshold: A score below this is a confident real.
        min_fake_count: Confident fakes needed, strictly more than this many.
        fake_share_divisor: Confident fakes must also exceed ``len(scores) // fake_share_divisor``.
        real_share: Share of confident reals needed, strictly more than this.
    """
    values = _as_scores(scores)
    fakes = values[values > fake_threshold]
    reals = values[values < real_threshold]
    if fakes.size > values.size // fake_share_divisor and fakes.size > min_fake_count:
        return float(fakes.mean())
    if reals.size > real_share * values.size:
        return float(reals.mean())
    return float(values.mean())


@dataclass(frozen=True)
class FaceAggregation:
    """How the fake scores of the faces in one image (or video frame) become the image's score.

    Attributes:
        strategy: "max" (default: the most-fake face; one swapped face makes a group photo fake),
            "mean" (all faces alike), or "largest" (the biggest face: the photo's main subject).
    """

    strategy: str = "max"

    def __post_init__(self) -> None:
        if self.strategy not in FACE_STRATEGIES:
            raise ValueError(
                f"unknown face strategy {self.strategy!r}; choose one of {', '.join(FACE_STRATEGIES)}"
            )

    def compute(self, scores, areas) -> float:
        """One score from the faces' ``scores`` and their box ``areas`` (same order)."""
        return compute_face_score(scores, areas, self.strategy)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy}


def compute_face_score(scores, areas, strategy: str = "max") -> float:
    """The image score from its faces' scores, by ``strategy`` (see `FaceAggregation`)."""
    values = _as_scores(scores)
    if strategy == "max":
        return compute_max(values)
    if strategy == "mean":
        return compute_mean(values)
    if strategy == "largest":
        sizes = np.asarray(areas, dtype=np.float64).reshape(-1)
        if sizes.shape != values.shape:
            raise ValueError(f"got {values.size} scores but {sizes.size} areas")
        return float(values[int(np.argmax(sizes))])
    raise ValueError(f"unknown face strategy {strategy!r}; choose one of {', '.join(FACE_STRATEGIES)}")


@dataclass(frozen=True)
class FrameAggregation:
    """How the per-frame fake scores of a video become the video's score.

    Attributes:
        strategy: "mean" (default), "median", "top_k_mean" or "confident" (the DFDC winner's rule, see
            `compute_confident_mean`).
        k: Frames averaged by "top_k_mean".
        fake_threshold: "confident": a frame above this is a confident fake.
        real_threshold: "confident": a frame below this is a confident real.
        min_fake_count: "confident": confident fakes needed (strictly more than this many).
    """

    strategy: str = "mean"
    k: int = 8
    fake_threshold: float = 0.8
    real_threshold: float = 0.2
    min_fake_count: int = 11

    def __post_init__(self) -> None:
        if self.strategy not in FRAME_STRATEGIES:
            raise ValueError(
                f"unknown frame strategy {self.strategy!r}; choose one of {', '.join(FRAME_STRATEGIES)}"
            )
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if not 0.0 <= self.real_threshold <= self.fake_threshold <= 1.0:
            raise ValueError(
                f"need 0 <= real_threshold ({self.real_threshold}) <= fake_threshold "
                f"({self.fake_threshold}) <= 1"
            )
        if self.min_fake_count < 0:
            raise ValueError(f"min_fake_count must be at least 0, got {self.min_fake_count}")

    def compute(self, scores) -> float:
        """The video score from its frames' scores."""
        if self.strategy == "mean":
            return compute_mean(scores)
        if self.strategy == "median":
            return compute_median(scores)
        if self.strategy == "top_k_mean":
            return compute_top_k_mean(scores, self.k)
        return compute_confident_mean(
            scores,
            fake_threshold=self.fake_threshold,
            real_threshold=self.real_threshold,
            min_fake_count=self.min_fake_count,
        )

    def to_dict(self) -> dict:
        """The strategy and only the parameters it uses."""
        if self.strategy == "top_k_mean":
            return {"strategy": self.strategy, "k": self.k}
        if self.strategy == "confident":
            return {
                "strategy": self.strategy,
                "fake_threshold": self.fake_threshold,
                "real_threshold": self.real_threshold,
                "min_fake_count": self.min_fake_count,
            }
        return {"strategy": self.strategy}
