"""jaxkp against dlib on the same validation images, with the same metric.

Needs a benchmark environment with dlib (not in requirements.txt):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r requirements.txt dlib-bin face-recognition-models
    .venv-bench/bin/python benchmarks/compare_dlib.py heatmap-300w=checkpoints heatmap-haar=runs/heatmap-haar \
        --data-dir ../shared/data/ibug-300w-train ../shared/data/youtube-faces-keypoints

Every method runs end to end on each data folder's validation split (the one
held out by the run named in --split-from, by default the first listed): its
own face detector, then its keypoints, in original-image pixels. Where a
method finds several faces, the one nearest the true keypoints' centre is
scored, if it holds that centre (else the face counts as missed). Figures are
given over each method's detected images and over the images every method
detected.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from jaxkp import metrics  # noqa: E402
from jaxkp.checkpoint import read_config  # noqa: E402
from jaxkp.weights import load_model  # noqa: E402
from train import data  # noqa: E402
from train.evaluate import predict_end_to_end, validation_part  # noqa: E402


def dlib_predictions(dataset: data.Dataset) -> tuple[np.ndarray, np.ndarray, float]:
    """dlib's HOG face detector and its 68-point ERT shape predictor; also ms per face (predictor only)."""
    import dlib

    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    detector = dlib.get_frontal_face_detector()
    predicted = np.zeros_like(dataset.keypoints, dtype=np.float64)
    detected = np.zeros(len(dataset), bool)
    seconds = []
    for index, (image, truth) in enumerate(zip(dataset.images, dataset.keypoints)):
        faces = list(detector(image, 1))
        if not faces:
            continue
        centres = np.array([[(f.left() + f.right()) / 2, (f.top() + f.bottom()) / 2] for f in faces])
        face = faces[int(np.argmin(np.linalg.norm(centres - truth.mean(axis=0), axis=1)))]
        centre = truth.mean(axis=0)
        if not (face.left() <= centre[0] <= face.right() and face.top() <= centre[1] <= face.bottom()):
            continue  # a box elsewhere is not a detection of this face
        start = time.perf_counter()
        shape = predictor(image, face)
        seconds.append(time.perf_counter() - start)
        # dlib's part coordinates are pixel indices; jaxkp's are continuous (pixel i spans [i, i+1)).
        predicted[index] = [[shape.part(i).x + 0.5, shape.part(i).y + 0.5] for i in range(68)]
        detected[index] = True
    return predicted, detected, 1000 * float(np.median(seconds))


def row(name: str, predicted: np.ndarray, detected: np.ndarray, truth: np.ndarray, subset: np.ndarray) -> str:
    own = metrics.summarize(predicted[detected], truth[detected])
    common = metrics.summarize(predicted[subset], truth[subset])
    return (f"| {name} | {detected.mean():.3f} | {own['nme_mean']:.4f} | {own['nme_median']:.4f} | "
            f"{own['failure_rate_0.08']:.3f} | {own['failure_rate_0.10']:.3f} | {common['nme_mean']:.4f} | "
            f"{common['nme_median']:.4f} | {common['failure_rate_0.08']:.3f} | {common['failure_rate_0.10']:.3f} |")


def compare(data_dir: Path, runs: dict[str, str], split_from: str, dlib: bool) -> None:
    dataset = data.load_dataset(data_dir, "training")
    dataset = validation_part(dataset, data_dir, read_config(split_from)["train_config"])
    results = {}
    for name, path in runs.items():
        predicted, detected, _ = predict_end_to_end(load_model(path), dataset)
        results[f"jaxkp {name}"] = (predicted, detected)
    if dlib:
        predicted, detected, ms_per_face = dlib_predictions(dataset)
        results["dlib HOG + ERT"] = (predicted, detected)
    common = np.logical_and.reduce([detected for _, detected in results.values()])

    print(f"\n{data_dir.name}: {len(dataset)} validation images held out by {split_from}; "
          f"{common.sum()} detected by every method")
    print("| method | detection rate | NME mean | NME median | fail >0.08 | fail >0.10 "
          "| common: NME mean | NME median | fail >0.08 | fail >0.10 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (predicted, detected) in results.items():
        print(row(name, predicted, detected, dataset.keypoints, common))
    if dlib:
        print(f"dlib shape predictor: {ms_per_face:.2f} ms per face (median, one CPU thread)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("runs", nargs="+", metavar="NAME=WEIGHTS", help="jaxkp weights to compare, by name")
    parser.add_argument("--split-from", metavar="WEIGHTS", help="the run whose validation split to score "
                                                                "(default: the first listed)")
    parser.add_argument("--no-dlib", action="store_true", help="compare jaxkp runs only")
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.runs)
    for data_dir in args.data_dir:
        compare(data_dir, runs, args.split_from or next(iter(runs.values())), not args.no_dlib)


if __name__ == "__main__":
    main()
