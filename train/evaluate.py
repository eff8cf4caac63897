"""`python -m train.evaluate`: score weights on any folder in the data layout.

Prints NME (mean point error over the outer-eye-corner distance) mean and
median, failure rates at NME > 0.08 and > 0.10, and the RMS point error in
pixels; writes a grid of images with the truth in green and the predictions
in magenta. By default each image is shown to the network as its training
validated it: whole (the reference recipe's evaluation transform), or, for
the detector-framed recipes, framed by its Haar box (by a box placed on its
keypoints where the detector finds none, or always for a recipe that trained
on placed boxes). With `--end-to-end` the face is found by the Haar detector
and framed as the app frames it; then the detection rate is printed and the
metrics cover the detected images only. `--split training --val-only` scores the
validation split (by person, or by photo for a recipe that says so) of the run
that made the weights. Each data folder is scored on its own, with the NME and
signed mean offset of each face region (jaw, brows, nose, eyes, mouth), so a
mark-up convention shift shows at a glance; `--markup NAME` scores weights that
learnt several data sets in that data set's mark-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxkp import draw, geometry, metrics
from jaxkp.checkpoint import WeightsError, read_config, write_atomic
from jaxkp.detect import TRAINING_SOURCES, FaceDetector, holds, nearest_face_boxes
from jaxkp.inference import FaceKeypointPipeline, KeypointModel
from jaxkp.weights import load_model, resolve_weights
from train import data


def framed_inputs(model: KeypointModel, dataset: data.Dataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each image framed as the model's training validated: the network inputs
    (N, 224, 224) and the image-to-input matrices."""
    framing = geometry.framing_of(model.config.get("train_config", {}))
    if framing != "whole-image":
        if framing == "haar-box":
            boxes = nearest_face_boxes(FaceDetector(TRAINING_SOURCES), dataset.images, dataset.keypoints)
            dataset = data.Dataset(dataset.names, dataset.images, dataset.keypoints, boxes)
        matrices = [data.face_framing_matrix(dataset, i, model.crop) for i in range(len(dataset))]
    else:
        matrices = [geometry.full_image_matrix(image) for image in dataset.images]
    return np.stack([geometry.warp_to_input(image, m) for image, m in zip(dataset.images, matrices)]), matrices


@dataclass
class FramedReading:
    """What the network read from a data set's images, each framed as its training validated."""

    keypoints: np.ndarray  # (N, 68, 2) image pixels
    evidence: np.ndarray  # (N, E) KeypointModel.readout's
    spread: np.ndarray  # (N, 68) heatmap spreads, normalised units ((N, 0) without heatmaps)
    unit_pixels: np.ndarray  # (N,) image pixels per normalised unit (geometry.image_pixels_per_unit)


def read_framed(model: KeypointModel, dataset: data.Dataset, markup: str | None = None) -> FramedReading:
    """The model's reading of every image framed as its training validated, its keypoints
    in `markup` (default: the one the model answers in)."""
    patches, matrices = framed_inputs(model, dataset)
    normalised, evidence, spread = model.readout(patches)
    if markup is not None:
        normalised = normalised - model.markup_offset + model.markup_offset_for(markup)
    keypoints = np.stack([geometry.keypoints_to_image(points, m) for points, m in zip(normalised, matrices)])
    return FramedReading(keypoints, evidence, spread, np.array([geometry.image_pixels_per_unit(m) for m in matrices]))


def predict_dataset(model: KeypointModel, dataset: data.Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel keypoints (N, 68, 2), each image framed as the model's training validated, and
    each point's expected error in pixels (N, 68) (None for weights without that model)."""
    reading = read_framed(model, dataset)
    expected = model.expected_errors(reading.evidence, reading.spread)
    return reading.keypoints, None if expected is None else expected * reading.unit_pixels[:, None]


def predict_end_to_end(model: KeypointModel, dataset: data.Dataset, second_look: bool | None = None,
                       pipeline: FaceKeypointPipeline | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the app does: proposals -> the model's crop -> network -> face score -> pixels.

    Returns (pixel keypoints, detected mask, expected point errors in pixels or None);
    where several faces are kept, the one that is the labelled face
    (jaxkp.detect.holds) nearest its centre is scored. `pipeline`: another way of
    reading `model` (default: the app's, with `second_look`).
    """
    if pipeline is None:
        pipeline = FaceKeypointPipeline.create(model)
        pipeline.second_look = second_look  # None: the weights' own setting
    detected = np.zeros(len(dataset), bool)
    predicted = np.zeros_like(dataset.keypoints, dtype=np.float64)
    expected = np.zeros(dataset.keypoints.shape[:2]) if model.uncertainty is not None else None
    for index, (image, points) in enumerate(zip(dataset.images, dataset.keypoints)):
        found = pipeline.find_faces(image)
        candidates = [i for i, box in enumerate(found.faces.boxes) if holds(box, points)]
        if candidates:
            centres = found.faces.boxes[candidates, :2] + found.faces.boxes[candidates, 2:] / 2
            best = candidates[int(np.argmin(np.linalg.norm(centres - points.mean(axis=0), axis=1)))]
            predicted[index], detected[index] = found.reading.keypoints[best], True
            if expected is not None:
                expected[index] = found.reading.uncertainty[best]
    return predicted, detected, expected


def evaluate_folder(
    model: KeypointModel, dataset: data.Dataset, grid_path: Path | None = None, grid_size: int = 16,
    end_to_end: bool = False, worst: int = 5, second_look: bool | None = None,
) -> dict[str, Any]:
    """The figures of `metrics.summarize` (and `metrics.uncertainty_summary` for weights that
    predict each point's error), plus the `worst` images by NME (the mean is sensitive to them)."""
    summary: dict[str, Any] = {}
    if end_to_end:
        predicted, detected, expected = predict_end_to_end(model, dataset, second_look)
        summary["detection_rate"] = float(detected.mean())
    else:
        predicted, expected = predict_dataset(model, dataset)
        detected = np.ones(len(dataset), dtype=bool)
    scored = np.flatnonzero(detected)
    summary |= metrics.summarize(predicted[scored], dataset.keypoints[scored])
    if expected is not None:
        summary |= metrics.uncertainty_summary(expected[scored], predicted[scored], dataset.keypoints[scored])
    summary["regions"] = metrics.region_summary(predicted[scored], dataset.keypoints[scored])
    nme = metrics.nme_per_image(predicted[scored], dataset.keypoints[scored])
    summary["worst"] = [{"image": dataset.names[scored[i]], "nme": float(nme[i])} for i in np.argsort(-nme)[:worst]]
    if grid_path is not None:
        cells = []
        for index in np.linspace(0, len(dataset) - 1, min(grid_size, len(dataset))).astype(int):
            rgb = cv2.cvtColor(dataset.images[index], cv2.COLOR_GRAY2RGB)
            rgb = draw.draw_keypoints(rgb, dataset.keypoints[index], draw.GROUND_TRUTH, lines=False)
            cells.append(draw.draw_keypoints(rgb, predicted[index], draw.PREDICTION, lines=False))
        grid = draw.image_grid(cells, columns=4)
        write_atomic(grid_path, cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))[1].tobytes())
    return summary


def holdout_of(data_dir: Path, train_config: dict[str, Any]) -> str:
    """How the run of `train_config` held out a folder of this name: "person" or "photo"."""
    return next((source.get("holdout", "person") for source in train_config.get("datasets") or ()
                 if source["name"] == Path(data_dir).name), "person")


def run_split(dataset: data.Dataset, data_dir: Path, train_config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (trained on, held out) of `dataset` as the run of `train_config` split
    it (by person or by photo, as its recipe names for a folder of this name)."""
    return data.split_by_person(dataset.names, train_config["val_fraction"], train_config["seed"],
                                holdout_of(data_dir, train_config))


def validation_part(dataset: data.Dataset, data_dir: Path, train_config: dict[str, Any]) -> data.Dataset:
    """The images of `dataset` that the run of `train_config` held out for validation."""
    return dataset.subset(run_split(dataset, data_dir, train_config)[1])


def training_part(dataset: data.Dataset, data_dir: Path, train_config: dict[str, Any], every: int = 1
                  ) -> data.Dataset:
    """The images of `dataset` that the run of `train_config` trained on (every `every`-th):
    scored unaugmented, they say whether a network underfits (its error on them near its
    validation error) or overfits."""
    return dataset.subset(run_split(dataset, data_dir, train_config)[0][::every])


def split_parts(data_dirs: list[Path], train_config: dict[str, Any], every: int = 1
                ) -> tuple[list[data.Dataset], list[data.Dataset]]:
    """Each folder's training images (every `every`-th) and validation images, as the run of
    `train_config` split them. Raises data.DataError."""
    train_parts, val_parts = [], []
    for data_dir in data_dirs:
        dataset = data.load_dataset(data_dir)
        train_idx, val_idx = run_split(dataset, data_dir, train_config)
        train_parts.append(dataset.subset(train_idx[::every]))
        val_parts.append(dataset.subset(val_idx))
    return train_parts, val_parts


def load_run(weights: str | None) -> tuple[Path, KeypointModel, dict[str, Any]]:
    """Weights whose config.json records the run that made them: their folder, the model
    and that config (its "train_config" holds the run's split). Raises WeightsError."""
    weights_dir = resolve_weights(weights)
    model = load_model(weights_dir)
    config = read_config(weights_dir)
    if not config.get("train_config"):
        raise WeightsError(f"{weights_dir}/config.json records no training split")
    return weights_dir, model, config


def format_regions(regions: dict[str, dict[str, float]]) -> str:
    rows = [f"  {'region':<6} {'NME':>7} {'dx':>8} {'dy':>8}"]
    rows += [f"  {name:<6} {r['nme']:7.4f} {r['offset_x']:+8.4f} {r['offset_y']:+8.4f}" for name, r in regions.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="folder or Hub repo id (default: JAXKP_WEIGHTS, else checkpoints/)")
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True,
                        help="folder(s) with SPLIT/ and SPLIT_frames_keypoints.csv; each is scored on its own")
    parser.add_argument("--split", default="test", help="'test' (default) or 'training'")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--val-only", action="store_true",
                      help="score only the images the run that made the weights held out for validation")
    part.add_argument("--train-only", action="store_true",
                      help="score only the images that run trained on (unaugmented: an error near the "
                           "validation error says the network underfits)")
    parser.add_argument("--every", type=int, default=1, help="with --train-only: every N-th of those images")
    parser.add_argument("--split-from", metavar="WEIGHTS",
                        help="with --val-only or --train-only: take the split of this run instead (to compare "
                             "weights on the same images)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="find the face with the Haar detector and crop as the app does "
                             "(default: frame each image as the training validated)")
    parser.add_argument("--second-look", choices=("on", "off"),
                        help="with --end-to-end: read leaning faces again, levelled (default: the weights' "
                             "config.json \"second_look\")")
    parser.add_argument("--markup", help="answer in this data set's mark-up (weights that learnt several; "
                                         "default: the network's own, which the app serves)")
    parser.add_argument("--grid", type=Path, help="write a PNG grid of predictions here (first data set)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--worst", type=int, default=5, help="list this many worst images by NME (default 5)")
    args = parser.parse_args(argv)
    results = []
    try:
        weights_dir = resolve_weights(args.weights)
        model = load_model(weights_dir, args.markup)
        for index, data_dir in enumerate(args.data_dir):
            dataset = data.load_dataset(data_dir, args.split)
            if args.val_only or args.train_only:
                split_dir = resolve_weights(args.split_from) if args.split_from else weights_dir
                train_config = read_config(split_dir).get("train_config")
                if not train_config:
                    raise WeightsError(f"{split_dir}/config.json records no training split to take it from")
                dataset = (validation_part(dataset, data_dir, train_config) if args.val_only else
                           training_part(dataset, data_dir, train_config, args.every))
            summary = evaluate_folder(model, dataset, args.grid if index == 0 else None,
                                      end_to_end=args.end_to_end, worst=args.worst,
                                      second_look=None if args.second_look is None else args.second_look == "on")
            results.append({"weights": str(weights_dir), "data": f"{data_dir}/{args.split}",
                            "markup": args.markup or model.config.get("markup", "own"), **summary})
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for summary in results:
        print(json.dumps({k: v for k, v in summary.items() if k != "regions"}, indent=2))
        print(format_regions(summary["regions"]))
    if args.json:
        write_atomic(args.json, (json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
