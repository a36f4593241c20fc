"""The model card's figures on the modern data, from ``evaluate`` outputs: the paired sources pooled,
the face swaps, and each source, for one model or two side by side.

    deepfake-detector evaluate --model clip-b16-v2 --data ../shared/data/modern/manifest.csv \
        --split test --out runs/eval/v2-modern
    deepfake-detector evaluate --model clip-b16-v1 --data ../shared/data/modern/manifest.csv \
        --split test --out runs/eval/v1-modern
    .venv/bin/python benchmarks/modern_figures.py runs/eval/v2-modern runs/eval/v1-modern

``evaluate`` reports every source and all images pooled; the issue's target pools the *paired* sources
(every source with real and AI images of the same topics), leaving out the one-class face swaps, which
are judged by detection rate alone. Decisions are the rows' own (``predicted``: each image at its
domain's threshold); intervals are stratified bootstrap percentiles (1,000 resamples,
`compute_binary_metrics`).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from deepfake_detector.evaluation.metrics import compute_binary_metrics

ONE_CLASS = ("inswapper_reactor",)


def load_rows(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if not row["error"]]


def describe(rows: list[dict], name: str) -> str:
    labels = np.array([row["label"] for row in rows], dtype=object)
    scores = np.array([float(row["fake_score"]) for row in rows])
    # Each row's own threshold (evaluate writes it), so the decisions are exactly predict's.
    thresholds = np.array([float(row["threshold"]) for row in rows])
    metrics = compute_binary_metrics(
        labels, scores, positive="fake", threshold=thresholds, n_resamples=1000, seed=0
    )

    def figure(key: str) -> str:
        value = getattr(metrics, key)
        if np.isnan(value):
            return "n/a"
        low, high = metrics.intervals.get(key, (np.nan, np.nan))
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"

    return (
        f"| {name} | {metrics.negatives} | {metrics.positives} | {figure('roc_auc')} | "
        f"{figure('false_positive_rate')} | {figure('recall')} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate output folders (modern test)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        rows = load_rows(folder)
        model = folder.name
        print(f"\n{model}: {len(rows)} images scored")
        print("| source | real | fake | ROC-AUC | real photos called fake | fakes caught |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(describe([row for row in rows if row["source"] not in ONE_CLASS], "paired sources pooled"))
        for source in sorted({row["source"] for row in rows}):
            print(describe([row for row in rows if row["source"] == source], source))
        domains = sorted({row["domain"] for row in rows if row["domain"]})
        for domain in domains:
            print(describe([row for row in rows if row["domain"] == domain], f"domain: {domain}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
