"""The comparisons behind clip-b16-v2 (its model card's Selection tables), on val only, never test.

    deepfake-detector train-head --config configs/clip-b16-v2.yaml   # fills the feature cache
    .venv/bin/python benchmarks/domain_head_selection.py

The cross-validation also reads the views ``modern/aug1``, ``modern/aug2`` and ``modern/tile0`` to
``modern/tile3``: add them to the config's ``views`` for one run to extract them (about 15 minutes on
2 cores); a view missing from the cache is skipped with a note.

1. Heads, on the val splits (`faces/` val per source, `modern/` val with its paired sources pooled):
   `clip-b16-v1` alone; one head fitted on both datasets; `clip-b16-v1`'s head with a correction; each
   of those for faces plus a general head fitted on the modern data and routed by the domain probe;
   and the shipped choice, `clip-b16-v1`'s head as it is plus a general head. Every head is fitted on
   the clean train views (plus ``--face-views``) by the recipe's own code (`training.head`).
2. The general head by 5-fold cross-validation grouped by ``group`` over `modern/` train+val
   (out-of-fold scores, paired sources pooled): regularisation, augmented views, and 224 px tiles at
   the images' own resolution (the mean of four tiles' logits).

Figures are ROC-AUC, so the heads' temperatures and thresholds do not enter.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from deepfake_detector.training.domains import label_domains
from deepfake_detector.training.frozen_features import load_features
from deepfake_detector.training.head import (
    HeadTrainingConfig,
    LinearScore,
    Standardiser,
    build_training_set,
    compute_group_weights,
    fit_domain_probe,
    fit_logistic,
    load_anchor_score,
    load_clean_split,
    load_dataset,
    select_tokens,
)

FACE_SOURCES = ("celebahq_stylegan", "ffhq_tpdne", "lfw_faceswap", "yonsei_photoshop")
ONE_CLASS = ("inswapper_reactor",)
MANIFESTS = ["../shared/data/faces/manifest.csv", "../shared/data/modern/manifest.csv"]


def select(features: np.ndarray) -> np.ndarray:
    return select_tokens(features, 12, None, True)


def auc(labels, scores) -> float:
    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")


def val_figures(datasets, standardiser, probe: LinearScore | None, face, general) -> str:
    """faces/ val per source, and modern/ val paired sources pooled, scored as the model routes."""
    cells = []
    for dataset in datasets:
        features, rows, _ = load_clean_split(dataset, "val", select, standardiser)
        to_face = probe(features) >= 0 if probe is not None else np.ones(len(rows), bool)
        scores = np.where(to_face, face(features), general(features) if general else face(features))
        labels = np.array([row.label == "fake" for row in rows])
        sources = np.array([row.source for row in rows])
        if dataset.name == "faces":
            cells += [f"{auc(labels[sources == s], scores[sources == s]):.3f}" for s in FACE_SOURCES]
        else:
            paired = ~np.isin(sources, ONE_CLASS)
            cells.append(f"{auc(labels[paired], scores[paired]):.3f}")
    return " / ".join(cells[:-1]) + f" | {cells[-1]}"


def compare_heads(datasets, config: HeadTrainingConfig, face_views: list[str]) -> None:
    data = build_training_set(datasets, ["clean", *face_views], split="train", select=select)
    standardiser = Standardiser.fit(data.features)
    standardised = standardiser(data.features)
    probe = fit_domain_probe(datasets, select, standardiser, config)
    anchor = load_anchor_score("clip-b16-v1", standardiser)
    modern = np.array([name == "modern" for name in data.datasets])
    face_rows = np.array([domain == "face" for domain in data.domains])

    def fit(rows: np.ndarray, c: float, offset: bool = False) -> LinearScore:
        groups = [group for group, keep in zip(data.groups, rows, strict=True) if keep]
        weights = compute_group_weights(groups)
        fixed = anchor(standardised[rows]) if offset else None
        fitted = LinearScore(
            *fit_logistic(
                standardised[rows], data.labels[rows], weights, inverse_regularization=c, offset=fixed
            )
        )
        return anchor.plus(fitted) if offset else fitted

    everything = np.ones(len(data.labels), bool)
    general = fit(modern, 0.003)
    joint = fit(everything, 0.003)
    corrected = fit(everything, 0.003, offset=True)
    print("\n| candidate | faces/ val: celebahq / ffhq / lfw / yonsei | modern/ val, paired pooled |")
    rows = [
        ("clip-b16-v1 alone", None, anchor, None),
        ("one head for both domains", None, joint, None),
        ("clip-b16-v1 + correction (every row), one head", None, corrected, None),
        ("one joint head for faces + a general head", probe, joint, general),
        ("clip-b16-v1 + correction (every row) + a general head", probe, corrected, general),
        *(
            (
                f"clip-b16-v1 + correction (face-domain rows, C {c:g}) + a general head",
                probe,
                fit(face_rows, c, offset=True),
                general,
            )
            for c in (0.0001, 0.0003, 0.001)
        ),
        ("clip-b16-v1 as it is + a general head (the shipped choice)", probe, anchor, general),
    ]
    for name, routing, face, other in rows:
        print(f"| {name} | {val_figures(datasets, standardiser, routing, face, other)} |")


def cross_validate_general(dataset, views: list[str], c: float, *, tiles: bool = False) -> str:
    """Out-of-fold ROC-AUC of a general head on the modern data's train+val, grouped by ``group``."""
    wanted = [f"tile{k}" for k in range(4)] if tiles else views
    cached = {}
    for view in {*wanted, "clean"}:
        features, indices = load_features(dataset.cache, view)
        if not len(indices):
            return f"skipped: view {view} is not in the cache"
        cached[view] = {int(index): row for index, row in zip(indices, select(features), strict=True)}
    pool = [index for index, row in enumerate(dataset.rows) if row.split in ("train", "val")]
    groups = [dataset.rows[index].group for index in pool]
    scores: dict[int, float] = {}
    for train, held_out in GroupKFold(5).split(pool, groups=groups):
        rows = [(view, pool[i]) for view in wanted for i in train if pool[i] in cached[view]]
        features = np.stack([cached[view][index] for view, index in rows])
        names = [f"{dataset.rows[index].source}/{dataset.rows[index].label}" for _, index in rows]
        labels = np.array([name.endswith("/fake") for name in names], dtype=int)
        standardiser = Standardiser.fit(features)
        head = LinearScore(
            *fit_logistic(
                standardiser(features), labels, compute_group_weights(names), inverse_regularization=c
            )
        )
        for i in held_out:
            index = pool[i]
            if tiles:
                scores[index] = float(
                    np.mean([head(standardiser(cached[v][index][None]))[0] for v in wanted])
                )
            elif index in cached["clean"]:
                scores[index] = float(head(standardiser(cached["clean"][index][None]))[0])
    kept = [index for index in scores if dataset.rows[index].source not in ONE_CLASS]
    labels = [dataset.rows[index].label == "fake" for index in kept]
    return f"{auc(labels, [scores[index] for index in kept]):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feature-cache", default="runs/features", help="train-head's feature_cache")
    parser.add_argument(
        "--face-views",
        nargs="*",
        default=[],
        help="more views the heads and corrections are fitted on, e.g. faces/aug1 faces/sbi1 (default: "
        "clean only)",
    )
    args = parser.parse_args(argv)
    config = HeadTrainingConfig(manifests=MANIFESTS, domains=["face", "general"])
    datasets = [load_dataset(manifest, args.feature_cache) for manifest in MANIFESTS]
    for dataset in datasets:
        dataset.domains = label_domains(
            dataset.rows, dataset.cache / "domains.json", all_faces=dataset.name == "faces"
        )
    compare_heads(datasets, config, args.face_views)
    modern = datasets[1]
    print(
        "\n| general head (grouped 5-fold CV over modern/ train+val) | out-of-fold ROC-AUC, paired pooled |"
    )
    for c in (0.001, 0.003, 0.01):
        print(f"| clean views, C {c:g} | {cross_validate_general(modern, ['clean'], c)} |")
    augmented = ["clean", "aug1", "aug2"]
    for c in (0.003, 0.01, 0.03):
        print(f"| clean + aug1 + aug2, C {c:g} | {cross_validate_general(modern, augmented, c)} |")
    print(f"| 4 native-resolution tiles, C 0.01 | {cross_validate_general(modern, [], 0.01, tiles=True)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
