"""`python -m train.face_score`: teach the keypoint network to say whether it sees a face.

The network's face evidence (HeatmapNet.keypoints_and_evidence: how peaked each
keypoint's heatmap is, and its coarsest features averaged) is read on crops of
the training photos, framed as the app frames them:
- faces: each labelled face by the detector boxes that find it (as the app
  would show it) and by boxes placed on its keypoints with the training jitter
  and a turn of up to 15 degrees (what the turned proposal sources leave);
- non-faces: the boxes the cascades propose (at a low neighbour count, so many)
  away from the labelled face, random boxes away from it, and boxes on it at a
  size no detector box of it has (a third of it or three times it).
A logistic regression on that evidence (the network's weights do not change)
is fitted on the training split of the weights' run and measured on its
validation split; it is written into the weights' config.json ("face_score")
with the default threshold, which jaxkp.inference applies.

    python -m train.face_score --data-dir ../shared/data/ibug-300w-train \\
        ../shared/data/youtube-faces-keypoints
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxkp import metrics
from jaxkp.checkpoint import CONFIG_FILE, WeightsError, write_json
from jaxkp.detect import FaceDetector, Faces, holds, overlap
from jaxkp.geometry import DETECTOR_BOX_MEDIAN, DETECTOR_BOX_STD, box_framing_matrix, detector_box, warp_to_input
from jaxkp.inference import FaceScore, KeypointModel
from train import data
from train.evaluate import load_run, split_parts

MAX_TURN = 15.0
# Positives kept at the default threshold, measured on the training crops.
TARGET_RECALL = 0.995


Crops = list[tuple[np.ndarray, float]]


def crops_of_photo(image: np.ndarray, points: np.ndarray, detector: FaceDetector, rng: np.random.Generator
                   ) -> tuple[Crops, Crops]:
    """(faces, non-faces) as (box in the frontal framing, angle) on one labelled photo."""
    faces, non_faces = proposal_crops(points, detector(image))
    made_faces, made_non_faces = made_crops(image.shape, points, rng)
    return faces + made_faces, non_faces + made_non_faces


def proposal_crops(points: np.ndarray, proposals: Faces) -> tuple[Crops, Crops]:
    """The proposals that hold the labelled face, and those well away from it."""
    face_box = np.array(detector_box(points, DETECTOR_BOX_MEDIAN))
    faces, non_faces = [], []
    for box, angle in zip(proposals.boxes, proposals.angles):
        if holds(box, points):
            faces.append((box, angle))
        elif overlap(box, face_box[None])[0] < 0.2:
            non_faces.append((box, angle))
    return faces, non_faces


def made_crops(shape: tuple[int, ...], points: np.ndarray, rng: np.random.Generator, max_turn: float = MAX_TURN
               ) -> tuple[Crops, Crops]:
    """A box on the labelled face with the training jitter and a turn of up to `max_turn`;
    up to two random boxes away from it, and two on it at sizes no detector box has."""
    face_box = np.array(detector_box(points, DETECTOR_BOX_MEDIAN))
    side = face_box[2]
    jitter = np.clip(rng.normal(size=4), -2, 2) * DETECTOR_BOX_STD
    faces = [(np.array(detector_box(points, DETECTOR_BOX_MEDIAN + jitter)), rng.uniform(-max_turn, max_turn))]
    non_faces = []
    height, width = shape[:2]
    for _ in range(2):  # random boxes away from the face
        for _ in range(20):
            box_side = side * rng.uniform(0.3, 1.5)
            box = np.array([rng.uniform(-box_side / 2, width - box_side / 2),
                            rng.uniform(-box_side / 2, height - box_side / 2), box_side, box_side])
            if overlap(box, face_box[None])[0] < 0.1:
                non_faces.append((box, 0.0))
                break
    centre = face_box[:2] + face_box[2:] / 2
    for factor in (rng.uniform(0.25, 0.4), rng.uniform(3.0, 4.0)):  # on the face, at a size no detector box has
        box_side = side * factor
        offset = rng.uniform(-0.3, 0.3, 2) * side
        non_faces.append((np.array([*(centre + offset - box_side / 2), box_side, box_side]), 0.0))
    return faces, non_faces


def evidence_of(model: KeypointModel, dataset: data.Dataset, detector: FaceDetector, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Evidence (N, E) and labels (N,) (1: face) of every crop of `dataset`'s photos."""
    rng = np.random.default_rng(seed)
    evidence, labels = [], []
    patches: list[np.ndarray] = []
    pending: list[int] = []

    def flush() -> None:
        if patches:
            evidence.append(model.predict(np.stack(patches))[1])
            labels.extend(pending)
            patches.clear()
            pending.clear()

    for image, points in zip(dataset.images, dataset.keypoints):
        faces, non_faces = crops_of_photo(image, points, detector, rng)
        for label, crops in ((1, faces), (0, non_faces)):
            for box, angle in crops:
                patches.append(warp_to_input(image, box_framing_matrix(box, model.crop, angle)))
                pending.append(label)
        if len(patches) >= 256:
            flush()
    flush()
    return np.concatenate(evidence), np.array(labels, np.int32)


def fit(evidence: np.ndarray, labels: np.ndarray, l2: float = 1e-3, steps: int = 2000) -> dict[str, Any]:
    """A logistic regression on standardised evidence, classes weighted equally."""
    mean, scale = evidence.mean(axis=0), evidence.std(axis=0) + 1e-6
    x = jnp.asarray((evidence - mean) / scale)
    y = jnp.asarray(labels, jnp.float32)
    weight = jnp.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))

    def loss(params: tuple[jax.Array, jax.Array]) -> jax.Array:
        logits = x @ params[0] + params[1]
        return jnp.mean(weight * optax.sigmoid_binary_cross_entropy(logits, y)) + l2 * jnp.sum(params[0] ** 2)

    tx = optax.adam(0.05)
    params = (jnp.zeros(x.shape[1]), jnp.zeros(()))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "weights": np.asarray(params[0]).tolist(),
            "bias": float(params[1])}


def report(score: FaceScore, evidence: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    scores = score(evidence)
    return {"faces": int(labels.sum()), "non_faces": int((labels == 0).sum()),
            "auc": metrics.roc_auc(labels == 1, scores),
            "face_recall": float((scores[labels == 1] >= score.threshold).mean()),
            "non_face_pass_rate": float((scores[labels == 0] >= score.threshold).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.face_score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="checkpoints", help="weights folder; its config.json is updated")
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--every", type=int, default=1, help="use every N-th training photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    args = parser.parse_args(argv)
    try:
        weights_dir, model, config = load_run(args.weights)
        train_config = config["train_config"]
        train_parts, val_parts = split_parts(args.data_dir, train_config, args.every)
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not model.predict(np.zeros((1, 224, 224), np.uint8))[1].shape[1]:
        print(f"error: the {config.get('network')} network gives no face evidence (only heatmap networks do)",
              file=sys.stderr)
        return 1
    cv2.setNumThreads(2)
    # Many proposals: the non-faces the cascades find when they are least strict.
    detector = FaceDetector(min_neighbors=2)
    train_evidence, train_labels = evidence_of(model, data.Dataset.concatenate(train_parts), detector, args.seed)
    val_evidence, val_labels = evidence_of(model, data.Dataset.concatenate(val_parts), detector, args.seed + 1)
    head = fit(train_evidence, train_labels)
    score = FaceScore.from_config({**head, "threshold": 0.5})
    train_scores = score(train_evidence)
    score.threshold = float(np.quantile(train_scores[train_labels == 1], 1 - TARGET_RECALL))
    figures = {"training": report(score, train_evidence, train_labels),
               "validation": report(score, val_evidence, val_labels)}
    print(f"threshold {score.threshold:.4f} (keeps {TARGET_RECALL:.1%} of the training faces)")
    print(json.dumps(figures, indent=2))
    if not args.dry_run:
        config["face_score"] = {**head, "threshold": score.threshold, "evidence": "heatmap peaks + pooled features",
                                "figures": figures}
        write_json(Path(weights_dir) / CONFIG_FILE, config)
        print(f"wrote face_score into {Path(weights_dir) / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
