"""`python -m train.face_gate`: train the proposal gate (jaxkp.gate) for a set of weights.

The gate learns the face score's crops (train.face_score), as the app's default
detector proposes them, at 48x48:
- faces: each labelled face by the proposals that find it (jaxkp.detect.holds), and
  by three boxes placed on its keypoints with the training jitter and a turn of up to
  35 degrees (a turned source's 25 degrees and the face's own lean);
- non-faces: the proposals away from the labelled face, up to six random boxes away
  from it, and six boxes on it at sizes no detector box of it has.
Every crop is also read by the keypoint network, and one it scores 0.3 or more
(the least the second look's rescue reads) counts as a face: it may be an
unlabelled face in the background, and the gate must pass what the full read
would keep. A tenth of the training people (CALIBRATION_FRACTION) is held back
from the gate's training; its threshold passes TARGET_RECALL of their crops that a
full read keeps or looks at again (face score 0.3 or more; on the photos it learnt, a
network is surer than on new ones, so the threshold is not set there). The figures on the
weights' validation split are printed and written with it. The gate is written
beside the weights (gate.safetensors) and described in their config.json
("face_gate"); `--dry-run` writes nothing.

    python -m train.face_gate --data-dir ../shared/data/ibug-300w-train \\
        ../shared/data/youtube-faces-keypoints
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxkp import metrics
from jaxkp.checkpoint import CONFIG_FILE, WeightsError, write_json
from jaxkp.detect import FaceDetector
from jaxkp.gate import GateNet, ProposalGate, gate_patches
from jaxkp.inference import SECOND_LOOK_MIN_SCORE, KeypointModel
from train import data
from train.evaluate import holdout_of, load_run, split_parts
from train.face_score import made_crops, proposal_crops

# Faces the threshold passes, measured on the calibration photos' crops: the gate only
# saves time, so it errs on the side of reading.
TARGET_RECALL = 0.998
MAX_TURN = 35.0
EXTRA_MADE_CROPS = 2
MAX_SHIFT = 2
# Share of the training photos (by person) held back to set the threshold: on the photos
# it learnt, a network is surer than on new ones, and a threshold set there drops faces.
CALIBRATION_FRACTION = 0.1


@dataclass
class GateCrops:
    """Every crop of a set of photos: the gate's patches, labels and where each came from."""

    patches: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) 1: a face (labelled, or one the keypoint network takes for a face)
    proposed: np.ndarray  # (N,) bool: a detector proposal (not a made box)
    photos: np.ndarray  # (N,) index of the photo in its data set
    scores: np.ndarray  # (N,) the keypoint network's face score of the crop

    def take(self, keep: np.ndarray) -> GateCrops:
        return GateCrops(self.patches[keep], self.labels[keep], self.proposed[keep], self.photos[keep],
                         self.scores[keep])

    @property
    def read_on(self) -> np.ndarray:
        """The crops a full read would keep or look at again (face score >= 0.3): the ones
        the gate must pass."""
        return self.scores >= SECOND_LOOK_MIN_SCORE


def gate_crops(model: KeypointModel, dataset: data.Dataset, detector: FaceDetector, seed: int) -> GateCrops:
    """The crops of every photo of `dataset` (see the module doc). Each is read by the
    keypoint network too: a crop it scores SECOND_LOOK_MIN_SCORE or more is a face for the
    gate (an unlabelled face in the background, or a labelled one framed oddly), so the
    gate learns to pass what the full read would keep or look at again."""
    rng = np.random.default_rng(seed)
    patches, labels, proposed, photos, face_scores = [], [], [], [], []
    for index, (image, points) in enumerate(zip(dataset.images, dataset.keypoints)):
        faces, non_faces = proposal_crops(points, detector(image))
        made_faces, made_non_faces = made_crops(image.shape, points, rng, MAX_TURN)
        for _ in range(EXTRA_MADE_CROPS):  # more of both: the photo's background is the best non-face
            more_faces, more_non_faces = made_crops(image.shape, points, rng, MAX_TURN)
            made_faces, made_non_faces = made_faces + more_faces, made_non_faces + more_non_faces
        crops = faces + non_faces + made_faces + made_non_faces
        boxes = np.array([box for box, _ in crops]).reshape(-1, 4)
        angles = np.array([angle for _, angle in crops])
        scores = model.read_faces(image, boxes, angles).scores
        is_face = np.array([1] * len(faces) + [0] * len(non_faces) + [1] * len(made_faces) + [0] * len(made_non_faces))
        patches.append(gate_patches(image, boxes, angles, model.crop))
        labels.append(np.maximum(is_face, scores >= SECOND_LOOK_MIN_SCORE))
        proposed.append(np.arange(len(crops)) < len(faces) + len(non_faces))
        photos.append(np.full(len(crops), index))
        face_scores.append(scores)
    return GateCrops(np.concatenate(patches), np.concatenate(labels).astype(np.int32), np.concatenate(proposed),
                     np.concatenate(photos), np.concatenate(face_scores))


def cached_crops(path: Path | None, make: Callable[[], GateCrops]) -> GateCrops:
    """`make()`'s crops, kept in `path` (.npz) and read back from there on the next run."""
    if path is not None and path.exists():
        with np.load(path) as saved:
            return GateCrops(*(saved[name] for name in ("patches", "labels", "proposed", "photos", "scores")))
    crops = make()
    if path is not None:
        np.savez(path, **dataclasses.asdict(crops))
    return crops


def augment(patches: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror half the patches, move each by up to MAX_SHIFT pixels (a proposal's box is
    never exact), change brightness and contrast (inputs in [-1, 1])."""
    flip_key, move_key, gain_key, shift_key = jax.random.split(key, 4)
    batch, size = patches.shape[0], patches.shape[1]
    flip = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
    patches = jnp.where(flip, patches[:, :, ::-1], patches)
    padded = jnp.pad(patches, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT), (0, 0)), mode="edge")
    moves = jax.random.randint(move_key, (batch, 2), 0, 2 * MAX_SHIFT + 1)
    patches = jax.vmap(lambda image, move: jax.lax.dynamic_slice(image, (move[0], move[1], 0), (size, size, 1)))(
        padded, moves)
    gain = jax.random.uniform(gain_key, (batch, 1, 1, 1), minval=0.7, maxval=1.3)
    shift = jax.random.uniform(shift_key, (batch, 1, 1, 1), minval=-0.2, maxval=0.2)
    return jnp.clip(patches * gain + shift, -1.0, 1.0)


def fit(patches: np.ndarray, labels: np.ndarray, epochs: int = 30, batch_size: int = 256, seed: int = 0,
        learning_rate: float = 3e-3) -> GateNet:
    """A GateNet trained on the patches, both classes weighted equally."""
    net = GateNet(nnx.Rngs(params=seed, dropout=seed + 1))
    steps_per_epoch = len(patches) // batch_size
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    optimizer = nnx.Optimizer(net, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)
    positive_share = labels.mean()

    @nnx.jit
    def step(net: GateNet, optimizer: nnx.Optimizer, images: jax.Array, targets: jax.Array, key: jax.Array):
        images = augment(images.astype(jnp.float32)[..., None] / 127.5 - 1.0, key)
        weights = jnp.where(targets > 0, 0.5 / positive_share, 0.5 / (1 - positive_share))

        def loss_fn(net: GateNet) -> jax.Array:
            return jnp.mean(weights * optax.sigmoid_binary_cross_entropy(net(images), targets))

        loss, grads = nnx.value_and_grad(loss_fn)(net)
        optimizer.update(net, grads)
        return loss

    net.train()
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(patches))
        losses = []
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            key, step_key = jax.random.split(key)
            batch = order[start : start + batch_size]
            losses.append(step(net, optimizer, jnp.asarray(patches[batch]), jnp.asarray(labels[batch], jnp.float32),
                               step_key))
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1}: loss {float(np.mean(losses)):.4f}", flush=True)
    net.eval()
    return net


def report(gate: ProposalGate, crops: GateCrops) -> dict[str, float]:
    labels, proposed = crops.labels, crops.proposed
    scores = gate.probabilities(crops.patches)
    passed = scores >= gate.threshold
    return {"faces": int(labels.sum()), "non_faces": int((labels == 0).sum()),
            "read_on_recall": float(passed[crops.read_on].mean()),
            "proposed_read_on_recall": float(passed[crops.read_on & proposed].mean()),
            "auc": metrics.roc_auc(labels == 1, scores),
            "face_recall": float(passed[labels == 1].mean()),
            "proposed_face_recall": float(passed[(labels == 1) & proposed].mean()),
            "non_face_pass_rate": float(passed[labels == 0].mean()),
            "proposed_non_face_pass_rate": float(passed[(labels == 0) & proposed].mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.face_gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="checkpoints", help="weights folder; the gate is written into it")
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--every", type=int, default=1, help="use every N-th training photo")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="keep the crops in this folder and reuse them on the next run")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    args = parser.parse_args(argv)
    try:
        weights_dir, model, config = load_run(args.weights)
        train_config = config["train_config"]
        train_parts, val_parts = split_parts(args.data_dir, train_config, args.every)
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if model.face_score is None:
        print("error: these weights have no face score for the gate to stand before", file=sys.stderr)
        return 1
    cv2.setNumThreads(2)
    detector = FaceDetector()  # the proposals the gate will see: the app's default sources
    started = time.perf_counter()
    training = data.Dataset.concatenate(train_parts)
    train_crops = cached_crops(args.cache and args.cache / "training.npz",
                               lambda: gate_crops(model, training, detector, args.seed))
    val_crops = cached_crops(args.cache and args.cache / "validation.npz",
                             lambda: gate_crops(model, data.Dataset.concatenate(val_parts), detector, args.seed + 1))
    print(f"crops: {len(train_crops.labels)} training ({train_crops.labels.sum()} faces), {len(val_crops.labels)} "
          f"validation ({val_crops.labels.sum()} faces) in {time.perf_counter() - started:.0f} s", flush=True)
    # The calibration photos: a share of each data set's training people, held out as the run held out its own.
    calibration_photos, offset = [], 0
    for data_dir, part in zip(args.data_dir, train_parts):
        _, held = data.split_by_person(part.names, CALIBRATION_FRACTION, args.seed, holdout_of(data_dir, train_config))
        calibration_photos.append(held + offset)
        offset += len(part)
    calibration_photos = np.concatenate(calibration_photos)
    is_calibration = np.isin(train_crops.photos, calibration_photos)
    calibration, fitting = train_crops.take(is_calibration), train_crops.take(~is_calibration)
    net = fit(fitting.patches, fitting.labels, epochs=args.epochs, seed=args.seed)
    gate = ProposalGate(net, model.crop, 0.5)
    calibration_scores = gate.probabilities(calibration.patches)
    gate.threshold = float(np.quantile(calibration_scores[calibration.read_on], 1 - TARGET_RECALL))
    figures = {"training": report(gate, fitting), "calibration": report(gate, calibration),
               "validation": report(gate, val_crops)}
    print(f"threshold {gate.threshold:.5f} (passes {TARGET_RECALL:.1%} of the calibration photos' crops that a "
          f"full read keeps or looks at again)")
    print(json.dumps(figures, indent=2))
    if not args.dry_run:
        gate.info = {"figures": figures, "data": [Path(d).name for d in args.data_dir]}
        config["face_gate"] = gate.save(weights_dir)
        write_json(Path(weights_dir) / CONFIG_FILE, config)
        print(f"wrote {Path(weights_dir) / 'gate.safetensors'} and face_gate into {Path(weights_dir) / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
