"""Does a faster engine or precision keep the answers? ROC-AUC of two runs on the same labelled images,
with a paired bootstrap interval of the difference, and how many verdicts change.

    deepfake-detector evaluate --data ../shared/data/faces/manifest.csv --split test \
        --precision fp32 --engine torch --out runs/eval/faces-fp32
    deepfake-detector evaluate --data ../shared/data/faces/manifest.csv --split test \
        --out runs/eval/faces-auto
    .venv/bin/python benchmarks/precision_auc.py runs/eval/faces-fp32 runs/eval/faces-auto

The first folder is the reference (``--precision fp32 --engine torch``: the transformers pipeline's
exact scores), the second the candidate (the defaults). Both are ``evaluate`` outputs over the same
images; rows are matched by ``path``, and an image that failed in either run is left out (and
counted). The interval resamples images, keeping each image's pair of scores together (stratified by
class, 1,000 resamples, `compute_bootstrap_intervals`), so it measures the change the candidate makes,
not the sampling noise of the split. A verdict is each row's own (``predicted``, at its domain's
threshold). One-class sources (the face swaps) have no ROC-AUC and count only in the verdicts.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from deepfake_detector.evaluation.metrics import compute_bootstrap_intervals, compute_roc_auc


def load_rows(folder: Path) -> dict[str, dict]:
    """``predictions.csv`` of an evaluate output folder, by image path (``source`` is the collection)."""
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def compare(reference: dict[str, dict], candidate: dict[str, dict]) -> str:
    """One Markdown table row: images, ROC-AUC of each run, their difference with its interval, and
    verdicts that differ."""
    shared = sorted(set(reference) & set(candidate))
    good = [s for s in shared if not reference[s]["error"] and not candidate[s]["error"]]
    labels = np.array([reference[s]["label"] for s in good], dtype=object)
    ref_scores = np.array([float(reference[s]["fake_score"]) for s in good])
    scores = np.array([float(candidate[s]["fake_score"]) for s in good])
    changed = sum(reference[s]["predicted"] != candidate[s]["predicted"] for s in good)
    failed = len(shared) - len(good)
    verdicts = f"{changed} of {len(good)} ({changed / max(len(good), 1):.2%})"
    if len(set(labels)) < 2:
        return f"| {len(good)} | n/a | n/a | n/a | {verdicts} | {failed} |"

    def difference(is_fake, ref, aligned):
        return {
            "diff": compute_roc_auc(is_fake, aligned, positive=True)
            - compute_roc_auc(is_fake, ref, positive=True)
        }

    low, high = compute_bootstrap_intervals(
        labels, ref_scores, difference, positive="fake", n_resamples=1000, seed=0, aligned=scores
    )["diff"]
    ref_auc = compute_roc_auc(labels, ref_scores, positive="fake")
    auc = compute_roc_auc(labels, scores, positive="fake")
    return (
        f"| {len(good)} | {ref_auc:.4f} | {auc:.4f} | {auc - ref_auc:+.4f} [{low:+.4f}, {high:+.4f}] | "
        f"{verdicts} | {failed} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="evaluate output folder of the reference run (fp32)")
    parser.add_argument("candidate", type=Path, help="evaluate output folder of the candidate run")
    parser.add_argument("--by", default="source", help="also compare per value of this column (%(default)s)")
    args = parser.parse_args(argv)
    reference, candidate = load_rows(args.reference), load_rows(args.candidate)
    print(f"reference {args.reference}, candidate {args.candidate}")
    print(
        "| images | group | ROC-AUC reference | ROC-AUC candidate | difference [95% paired] "
        "| verdicts changed | failed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")

    def row(group: str, keep) -> None:
        ref = {s: r for s, r in reference.items() if keep(r)}
        cells = compare(ref, candidate).split(" | ", 1)
        print(f"{cells[0]} | {group} | {cells[1]}")

    row("all", lambda r: True)
    for value in sorted({r.get(args.by, "") for r in reference.values()}):
        row(f"{args.by}: {value}", lambda r, value=value: r.get(args.by, "") == value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
