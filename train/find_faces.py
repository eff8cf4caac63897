"""`python -m train.find_faces`: how well faces are found, per proposal source and after the score.

Takes folders in the data layout where every face of a photo is labelled (one
CSV row per face, several rows per photo) and prints, for each folder, for
each proposal source alone, for all sources merged, and for the app's
pipeline after the face score (and dlib's HOG detector when dlib is
installed):
- recall: labelled faces found (a box holding the face's keypoint centre, of
  its size: jaxkp.detect.holds; one box per face);
- unmatched boxes per photo: boxes that are no labelled face (false
  detections, and second boxes on one face);
- milliseconds per photo on this machine (a merged row's time is in its "after
  score" row: the detector and the network together).

"default" is the app's detector (jaxkp.detect.DEFAULT_SOURCES), "thorough" all
the sources.

`--val-only` takes each folder's validation split (people the weights never
saw); `--composites N` adds N composite photos (train.composites) built from
those faces on face-free backgrounds, where every face is labelled.

    python -m train.find_faces --data-dir ../shared/data/ibug-300w-train \\
        ../shared/data/youtube-faces-keypoints --val-only --composites 200
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
from typing import Any

import cv2
import numpy as np

from jaxkp.checkpoint import WeightsError, read_config, write_atomic
from jaxkp.detect import THOROUGH_SOURCES, FaceDetector, holds
from jaxkp.inference import FaceKeypointPipeline
from jaxkp.weights import load_model, resolve_weights
from train import data
from train.composites import make_composites
from train.evaluate import validation_part


@dataclass
class LabelledPhoto:
    image: np.ndarray  # gray uint8
    keypoints: np.ndarray  # (F, 68, 2): every face on the photo


def group_photos(dataset: data.Dataset) -> list[LabelledPhoto]:
    """One photo per image name, with all of its rows' faces."""
    photos: dict[str, LabelledPhoto] = {}
    for name, image, points in zip(dataset.names, dataset.images, dataset.keypoints):
        if name in photos:
            photos[name].keypoints = np.concatenate([photos[name].keypoints, points[None]])
        else:
            photos[name] = LabelledPhoto(image, points[None])
    return list(photos.values())


def match(boxes: np.ndarray, faces: np.ndarray) -> int:
    """How many labelled faces (F, 68, 2) get a box of their own (greedy, nearest centre first)."""
    pairs = sorted((float(np.linalg.norm(box[:2] + box[2:] / 2 - points.mean(axis=0))), b, f)
                   for b, box in enumerate(boxes) for f, points in enumerate(faces) if holds(box, points))
    used_boxes, used_faces = set(), set()
    for _, b, f in pairs:
        if b not in used_boxes and f not in used_faces:
            used_boxes.add(b)
            used_faces.add(f)
    return len(used_faces)


class Tally:
    """Recall, unmatched boxes and time of one way of finding faces."""

    def __init__(self) -> None:
        self.faces = self.found = self.boxes = self.photos = 0
        self.seconds = 0.0

    def add(self, boxes: np.ndarray, faces: np.ndarray, seconds: float = 0.0) -> None:
        found = match(boxes, faces)
        self.faces += len(faces)
        self.found += found
        self.boxes += len(boxes)
        self.photos += 1
        self.seconds += seconds

    def summary(self) -> dict[str, float]:
        return {"recall": self.found / max(self.faces, 1),
                "unmatched_per_photo": (self.boxes - self.found) / max(self.photos, 1),
                "ms_per_photo": 1000 * self.seconds / max(self.photos, 1), "faces": self.faces, "photos": self.photos}


def dlib_detector() -> Callable[[np.ndarray], np.ndarray] | None:
    """dlib's HOG + linear SVM face detector (one upsampling, its usual setting), or None without dlib."""
    try:
        import dlib
    except ImportError:
        return None
    detector = dlib.get_frontal_face_detector()

    def detect(gray: np.ndarray) -> np.ndarray:
        return np.array([[r.left(), r.top(), r.width(), r.height()] for r in detector(gray, 1)], float).reshape(-1, 4)

    return detect


def score_photos(pipeline: FaceKeypointPipeline, photos: list[LabelledPhoto], min_scores: tuple[float, ...] = (),
                 thorough: FaceKeypointPipeline | None = None) -> dict[str, dict[str, float]]:
    """The tallies of every way of finding faces on `photos` (see the module doc): each of
    `thorough`'s sources alone (the pipeline's without it), then each pipeline's merged
    proposals (those its gate passes to a full read) and its faces after the score; a
    gated pipeline is also run without its gate."""
    pipelines = {"default": pipeline}
    if pipeline.gated and pipeline.model.gate is not None:  # the gate's effect, side by side
        pipelines["default, no gate"] = dataclasses.replace(pipeline, gated=False)
    pipelines |= {"thorough": thorough} if thorough else {}
    detector = (thorough or pipeline).detector
    names = [source.name for source in detector.sources]
    tallies = {name: Tally() for name in names}
    for label in pipelines:
        tallies |= {f"{label}: merged": Tally(), f"{label}: after score": Tally()}
    tallies |= {f"default: after score >= {t:g}": Tally() for t in min_scores}
    hog = dlib_detector()
    if hog is not None:
        tallies["dlib HOG"] = Tally()
    for photo in photos:
        gray = photo.image
        for index, name in enumerate(names):
            start = time.perf_counter()
            faces = detector.propose_from(index, gray)
            tallies[name].add(faces.boxes, photo.keypoints, time.perf_counter() - start)
        for label, each in pipelines.items():
            start = time.perf_counter()
            found = each.find_faces(gray)
            seconds = time.perf_counter() - start
            tallies[f"{label}: merged"].add(found.proposals.boxes, photo.keypoints)
            tallies[f"{label}: after score"].add(found.faces.boxes, photo.keypoints, seconds)
            if label == "default":
                for threshold in min_scores:
                    faces, _ = each.judge(gray, found.proposals, found.proposal_reading, threshold)
                    tallies[f"default: after score >= {threshold:g}"].add(faces.boxes, photo.keypoints)
        if hog is not None:
            start = time.perf_counter()
            boxes = hog(gray)
            tallies["dlib HOG"].add(boxes, photo.keypoints, time.perf_counter() - start)
    return {name: tally.summary() for name, tally in tallies.items()}


def format_table(title: str, figures: dict[str, dict[str, float]]) -> str:
    first = next(iter(figures.values()))
    rows = [f"{title}: {first['photos']} photos, {first['faces']} labelled faces",
            f"  {'':<32} {'recall':>7} {'unmatched/photo':>16} {'ms/photo':>9}"]
    rows += [f"  {name:<32} {f['recall']:7.3f} {f['unmatched_per_photo']:16.3f} {f['ms_per_photo']:9.1f}"
             for name, f in figures.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.find_faces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="folder or Hub repo id (default: JAXKP_WEIGHTS, else checkpoints/)")
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--split", default="training")
    parser.add_argument("--val-only", action="store_true", help="each folder's validation split of the weights' run")
    parser.add_argument("--composites", type=int, default=0, help="also score this many composites of those faces")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composites")
    parser.add_argument("--min-scores", type=float, nargs="*", default=(), help="also tally these thresholds")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    cv2.setNumThreads(2)
    results: dict[str, Any] = {}
    try:
        weights_dir = resolve_weights(args.weights)
        model = load_model(weights_dir)
        pipeline = FaceKeypointPipeline.create(model)
        thorough = FaceKeypointPipeline(model, FaceDetector(THOROUGH_SOURCES), gated=False)
        sets = []
        for data_dir in args.data_dir:
            dataset = data.load_dataset(data_dir, args.split)
            if args.val_only:
                train_config = read_config(weights_dir).get("train_config")
                if not train_config:
                    raise WeightsError(f"{weights_dir}/config.json records no training split")
                dataset = validation_part(dataset, data_dir, train_config)
            sets.append((Path(data_dir).name, dataset))
        if args.composites:
            faces = data.Dataset.concatenate([dataset for _, dataset in sets])
            composites = make_composites(faces, args.composites, args.seed)
            sets.append((f"composites of those faces (seed {args.seed})",
                         [LabelledPhoto(c.image, c.keypoints) for c in composites]))
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"weights {weights_dir}; default min_score {pipeline.threshold:g}")
    for title, dataset in sets:
        photos = dataset if isinstance(dataset, list) else group_photos(dataset)
        results[title] = score_photos(pipeline, photos, tuple(args.min_scores), thorough)
        print(format_table(title, results[title]), flush=True)
    if args.json:
        write_atomic(args.json, (json.dumps(results, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
