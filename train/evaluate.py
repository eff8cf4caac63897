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
person-disjoint validation split of the run that made the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxkp import data, draw, metrics
from jaxkp.checkpoint import WeightsError, read_config, write_atomic
from jaxkp.inference import FaceDetector, KeypointModel, crop_box, nearest_face_boxes
from jaxkp.weights import load_model, resolve_weights


def predict_dataset(model: KeypointModel, dataset: data.Dataset) -> np.ndarray:
    """Pixel keypoints (N, 68, 2), each image framed as the model's training validated."""
    train_config = model.config.get("train_config", {})
    if train_config.get("augmentation"):
        if train_config.get("haar_boxes"):
            boxes = nearest_face_boxes(FaceDetector(), dataset.images, dataset.keypoints)
            dataset = data.Dataset(dataset.names, dataset.images, dataset.keypoints, boxes)
        matrices = [data.face_framing_matrix(dataset, i, model.crop) for i in range(len(dataset))]
    else:
        matrices = [data.full_image_matrix(image) for image in dataset.images]
    patches = np.stack([data.warp_to_input(image, m) for image, m in zip(dataset.images, matrices)])
    normalised = model(patches)
    return np.stack([data.keypoints_to_image(points, m) for points, m in zip(normalised, matrices)])


def predict_end_to_end(model: KeypointModel, dataset: data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """What the app does: Haar box -> the model's crop -> network -> pixels.

    Returns (pixel keypoints, detected mask); where several faces are found the
    one whose box centre is nearest the true keypoints' centre is scored.
    """
    boxes = nearest_face_boxes(FaceDetector(), dataset.images, dataset.keypoints)
    detected = np.isfinite(boxes[:, 0])
    predicted = np.zeros_like(dataset.keypoints, dtype=np.float64)
    for index in np.flatnonzero(detected):
        predicted[index] = model.keypoints_in_regions(dataset.images[index], [crop_box(boxes[index], model.crop)])[0]
    return predicted, detected


def evaluate_folder(
    model: KeypointModel, dataset: data.Dataset, grid_path: Path | None = None, grid_size: int = 16,
    end_to_end: bool = False, worst: int = 5,
) -> dict[str, Any]:
    """The figures of `metrics.summarize`, plus the `worst` images by NME (the mean is sensitive to them)."""
    summary: dict[str, Any] = {}
    if end_to_end:
        predicted, detected = predict_end_to_end(model, dataset)
        summary["detection_rate"] = float(detected.mean())
    else:
        predicted, detected = predict_dataset(model, dataset), np.ones(len(dataset), dtype=bool)
    scored = np.flatnonzero(detected)
    summary |= metrics.summarize(predicted[scored], dataset.keypoints[scored])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="folder or Hub repo id (default: JAXKP_WEIGHTS, else checkpoints/)")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with SPLIT/ and SPLIT_frames_keypoints.csv")
    parser.add_argument("--split", default="test", help="'test' (default) or 'training'")
    parser.add_argument("--val-only", action="store_true",
                        help="score only the validation people of the run that made the weights")
    parser.add_argument("--end-to-end", action="store_true",
                        help="find the face with the Haar detector and crop as the app does "
                             "(default: frame each image as the training validated)")
    parser.add_argument("--grid", type=Path, help="write a PNG grid of predictions here")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--worst", type=int, default=5, help="list this many worst images by NME (default 5)")
    args = parser.parse_args(argv)
    try:
        weights_dir = resolve_weights(args.weights)
        model = load_model(weights_dir)
        dataset = data.load_dataset(args.data_dir, args.split)
        if args.val_only:
            train_config = read_config(weights_dir).get("train_config")
            if not train_config:
                raise WeightsError(f"{weights_dir}/config.json records no training split to take validation from")
            _, val_idx = data.split_by_person(dataset.names, train_config["val_fraction"], train_config["seed"])
            dataset = dataset.subset(val_idx)
        summary = evaluate_folder(model, dataset, args.grid, end_to_end=args.end_to_end, worst=args.worst)
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {"weights": str(weights_dir), "data": f"{args.data_dir}/{args.split}", **summary}
    print(json.dumps(summary, indent=2))
    if args.json:
        write_atomic(args.json, (json.dumps(summary, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
