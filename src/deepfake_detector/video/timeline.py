"""Plot a scored video's fake score over time, with the decision thresholds."""

from __future__ import annotations

import os

from deepfake_detector.optional import require
from deepfake_detector.results import VideoPrediction, format_number

# People's lines, in colours the frames (red), thresholds (blue, green) and stop line (orange) don't use.
_TRACK_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def render_timeline(prediction: VideoPrediction, path: str | os.PathLike) -> None:
    """Writes a plot of every sampled frame's fake score against its time, to ``path`` (PNG, SVG, PDF).

    Frames with a face are filled dots, frames without one hollow; with more than one person tracked
    (`VideoPrediction.tracks`), each person's scores are a line of their own; the video's aggregated
    score is a dashed line, the thresholds that decided it (the prediction's own: ``threshold``, and
    ``uncertain_from`` with an uncertain band) dotted ones, and where decoding stopped early a vertical
    line. Numbers in the legend are rounded for people (`format_number`).

    Args:
        prediction: A scored video (``error`` unset).
        path: Output file; its suffix picks the format.

    Raises:
        ValueError: The prediction has no frames (it failed).
        MissingExtraError: matplotlib is not installed.
    """
    if not prediction.frames:
        raise ValueError(f"{prediction.source}: no scored frames to plot ({prediction.error})")
    require("matplotlib", "video")
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    figure = Figure(figsize=(9, 3.2), layout="constrained")
    axes = figure.add_subplot()
    times = [frame.timestamp_s for frame in prediction.frames]
    scores = [frame.fake_score for frame in prediction.frames]
    axes.plot(times, scores, color="0.6", linewidth=1, zorder=1)
    with_face = [(t, s) for t, s, f in zip(times, scores, prediction.frames, strict=True) if not f.no_face]
    without = [(t, s) for t, s, f in zip(times, scores, prediction.frames, strict=True) if f.no_face]
    if with_face:
        axes.scatter(*zip(*with_face, strict=True), color="tab:red", s=18, zorder=2, label="frame score")
    if without:
        axes.scatter(
            *zip(*without, strict=True),
            facecolors="none",
            edgecolors="tab:red",
            s=18,
            zorder=2,
            label="no face (scored whole)",
        )
    # With several people, a frame's dot is its most-fake face's; each person's own line shows whose.
    if prediction.tracks is not None and len(prediction.tracks) > 1:
        for number, track in enumerate(prediction.tracks):
            axes.plot(
                *zip(*track.scores_over_time, strict=True),
                color=_TRACK_COLOURS[number % len(_TRACK_COLOURS)],
                linewidth=1,
                alpha=0.8,
                zorder=1.5,
                label=f"face {track.track_id}: {format_number(track.fake_score)} ({track.verdict})",
            )
    axes.axhline(
        prediction.fake_score,
        color="black",
        linestyle="--",
        linewidth=1.2,
        label=f"video score {format_number(prediction.fake_score)} ({prediction.aggregation['strategy']})",
    )
    whose = f"{prediction.threshold_from} " if prediction.threshold_from else ""
    axes.axhline(
        prediction.threshold,
        color="tab:blue",
        linestyle=":",
        label=f"fake threshold {format_number(prediction.threshold)} ({whose}threshold)",
    )
    if prediction.uncertain_from is not None:
        axes.axhline(
            prediction.uncertain_from,
            color="tab:green",
            linestyle=":",
            label=f"uncertain from {format_number(prediction.uncertain_from)}",
        )
    if prediction.stopped_at_s is not None:
        axes.axvline(prediction.stopped_at_s, color="tab:orange", label="decoding stopped")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlim(0, max(prediction.duration_s or 0.0, times[-1]) or 1.0)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("fake score")
    axes.set_title(f"{os.path.basename(str(prediction.source))}: {prediction.verdict}", fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.savefig(path, dpi=120)
