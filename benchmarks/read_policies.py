"""How the pipeline reads a face, tried several ways on the same photos: NME end to end and network patches.

    python benchmarks/read_policies.py --data-dir $D/ibug-300w-train $D/youtube-faces-keypoints

Each folder's validation split of the bundled weights' run (people they never saw), scored end to end as
`python -m train.evaluate --val-only --end-to-end` scores it (each data set in its own mark-up, the labelled face
matched among the faces kept), with the shipped pipeline read these ways:

- shipped: one read of each proposal the gate passes; a face whose levelled turn is more than 5 degrees
  from the turn it was read at is read again, framed from its points (the second look);
- second look for every face (`turn > 0`), with and without flip averaging on that second read only;
- first and second read averaged, for the faces read twice (weights of the first read);
- levelled first read: each proposal first read at the turn its second look would use (an oracle: the
  shipped network's own turn from a read that is not counted), exactly or with Gaussian noise, as a proposal
  gate that also guessed each face's turn would read it.

"patches/photo" counts the 224-px inputs the network reads (a flip-averaged read is two). Scratch
measurements for issues 21 and 22 (docs/results.md, docs/speed-profile.md); nothing here changes the app.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import jaxkp.inference as inference  # noqa: E402
from jaxkp import metrics  # noqa: E402
from jaxkp.checkpoint import read_config  # noqa: E402
from jaxkp.geometry import upright_framings  # noqa: E402
from jaxkp.inference import MAX_FACES, MAX_PROPOSALS, FaceKeypointPipeline, FoundFaces  # noqa: E402
from jaxkp.weights import load_model, resolve_weights  # noqa: E402
from train import data  # noqa: E402
from train.evaluate import predict_end_to_end, validation_part  # noqa: E402


class Policy(FaceKeypointPipeline):
    """The shipped pipeline with the knobs this script turns."""

    min_turn: float = inference.SECOND_LOOK_MIN_TURN
    flip_second: bool = False
    first_weight: float = 0.0  # the first read's share in the faces read twice
    levelled_first: float | None = None  # None: as shipped; else the noise (degrees) of the oracle turn
    # None: as shipped; else the faces whose mean expected error over their box's width is over this
    # get their final read flip-averaged (one more patch: the mirror of that read's framing)
    flip_uncertain: float | None = None
    rng = np.random.default_rng(0)

    def judge(self, gray, proposals, reading, min_score=None, max_faces=MAX_FACES):  # noqa: ANN001, ANN201
        faces, kept = super().judge(gray, proposals, reading, min_score, max_faces)
        if self.flip_uncertain is None or not len(faces) or kept.uncertainty is None:
            return faces, kept
        relative = kept.uncertainty.mean(axis=1) / faces.boxes[:, 2]
        chosen = np.flatnonzero(relative > self.flip_uncertain)
        if len(chosen):
            # The model's own flip averaging at each chosen face's final framing: that read again
            # (the same points, so uncounted) and its mirror (counted: the one patch this adds).
            self.model.flip_average = True
            try:
                with uncounted(self.model):
                    averaged = self.model.read_faces(gray, faces.boxes[chosen], faces.angles[chosen]).keypoints
            finally:
                self.model.flip_average = False
            self.model.mirror_patches = getattr(self.model, "mirror_patches", 0) + len(chosen)
            kept.keypoints = kept.keypoints.copy()
            kept.keypoints[chosen] = averaged
        self.flipped = getattr(self, "flipped", 0) + len(chosen)
        self.judged = getattr(self, "judged", 0) + len(faces)
        return faces, kept

    def find_faces(self, gray: np.ndarray, max_faces: int = MAX_FACES, min_score: float | None = None) -> FoundFaces:
        if self.levelled_first is None:
            return super().find_faces(gray, max_faces, min_score)
        proposals = self.detector(gray, MAX_PROPOSALS)
        if self.gated and self.model.gate is not None:
            proposals = proposals.take(self.model.gate.passing(gray, proposals.boxes, proposals.angles))
        if len(proposals):
            with uncounted(self.model):
                _, turns = upright_framings(self.model.read_faces(gray, proposals.boxes, proposals.angles).keypoints)
            proposals.angles = turns + self.rng.normal(0.0, self.levelled_first, len(turns))
        reading = self.model.read_faces(gray, proposals.boxes, proposals.angles)
        faces, kept = self.judge(gray, proposals, reading, min_score, max_faces)
        return FoundFaces(faces, kept, proposals, reading)

    def look_again(self, gray, faces, reading):  # noqa: ANN001, ANN201 (the pipeline's own signature)
        inference.SECOND_LOOK_MIN_TURN, shipped = self.min_turn, inference.SECOND_LOOK_MIN_TURN
        self.model.flip_average = self.flip_second
        try:
            framed, again = super().look_again(gray, faces, reading)
        finally:
            inference.SECOND_LOOK_MIN_TURN, self.model.flip_average = shipped, False
        if self.first_weight:
            twice = np.any(again.keypoints != reading.keypoints, axis=(1, 2))
            again.keypoints[twice] = (self.first_weight * reading.keypoints[twice]
                                      + (1 - self.first_weight) * again.keypoints[twice])
        return framed, again


class uncounted:  # noqa: N801 (used as a statement: `with uncounted(model)`)
    """Reads inside it are not counted as patches."""

    def __init__(self, model: inference.KeypointModel):
        self.model = model

    def __enter__(self) -> None:
        self.model.counting = False

    def __exit__(self, *_: object) -> None:
        self.model.counting = True


def count_patches(model: inference.KeypointModel) -> Callable[[], int]:
    """Wraps the model's readout so it counts the 224-px inputs read; returns the counter's reader."""
    counted = {"patches": 0}
    readout = model.readout
    model.counting = True

    def counting_readout(images: np.ndarray):  # noqa: ANN202
        if model.counting:
            counted["patches"] += len(images) * (2 if model.flip_average else 1)
        return readout(images)

    model.readout = counting_readout
    return lambda: counted["patches"]


POLICIES: dict[str, dict] = {
    "shipped (second look past 5 degrees)": {},
    "second look for every face": {"min_turn": 0.0},
    "second look past 5 degrees, flip-averaged": {"flip_second": True},
    "second look for every face, flip-averaged": {"min_turn": 0.0, "flip_second": True},
    "first and second read averaged, 0.2 : 0.8": {"first_weight": 0.2},
    "first and second read averaged, 0.4 : 0.6": {"first_weight": 0.4},
    "levelled first read (oracle turn)": {"levelled_first": 0.0},
    "levelled first read (oracle turn, noise 4 degrees)": {"levelled_first": 4.0},
    "flip-averaged final read, every face": {"flip_uncertain": 0.0},
    "flip-averaged final read, uncertainty over 0.018 of the box": {"flip_uncertain": 0.018},
    "flip-averaged final read, uncertainty over 0.020 of the box": {"flip_uncertain": 0.020},
    "flip-averaged final read, uncertainty over 0.022 of the box": {"flip_uncertain": 0.022},
    "flip-averaged final read, uncertainty over 0.025 of the box": {"flip_uncertain": 0.025},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--weights", help="folder or Hub repo id (default: the bundled weights)")
    parser.add_argument("--policies", nargs="*", choices=list(POLICIES), default=list(POLICIES))
    args = parser.parse_args(argv)
    weights_dir = resolve_weights(args.weights)
    train_config = read_config(weights_dir)["train_config"]
    for data_dir in args.data_dir:
        markup = data_dir.name if data_dir.name in read_config(weights_dir).get("markup_offsets", {}) else None
        model = load_model(weights_dir, markup)
        patches = count_patches(model)
        dataset = validation_part(data.load_dataset(data_dir, "training"), data_dir, train_config)
        print(f"{data_dir.name}: {len(dataset)} validation images, mark-up {markup or 'the network own'}")
        detector = FaceKeypointPipeline.create(model).detector
        for name in args.policies:
            pipeline = Policy(model, detector)
            for knob, value in POLICIES[name].items():
                setattr(pipeline, knob, value)
            pipeline.rng = np.random.default_rng(0)
            start, mirrors = patches(), getattr(model, "mirror_patches", 0)
            predicted, detected, _ = predict_end_to_end(model, dataset, pipeline=pipeline)
            summary = metrics.summarize(predicted[detected], dataset.keypoints[detected])
            read = patches() - start + getattr(model, "mirror_patches", 0) - mirrors
            flipped = (f", faces flipped {pipeline.flipped / max(pipeline.judged, 1):.2f}"
                       if pipeline.flip_uncertain is not None else "")
            print(f"  {name:<52} detected {detected.mean():.3f}  NME {summary['nme_mean']:.4f} "
                  f"(median {summary['nme_median']:.4f}, > 0.08: {summary['failure_rate_0.08']:.3f})  "
                  f"patches/photo {read / len(dataset):.2f}{flipped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
