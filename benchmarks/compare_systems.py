"""jaxkp, dlib and MediaPipe Face Mesh side by side, end to end, on any data folder.

Each system runs its whole pipeline on every image: its own face finding, then its
points, in the image's pixels. Where a system finds several faces, the labelled
face is the one whose box holds its keypoints' centre and is of its size
(jaxkp.detect.holds) and, of those, the nearest: the rule of
train.evaluate.predict_end_to_end, for all three alike (a system with no such
face missed it). Printed per system: the detection rate; NME mean and median
(mean point error over the outer-eye-corner distance, points 36 and 45); NME by
face region (jaw, brows, nose, eyes, mouth); the share of faces with NME > 0.08;
and the median and mean wall time per image of the whole pipeline. A second
table scores every system on the images all of them detected.

The systems:
- jaxkp: the app's pipeline (Haar proposals, network, face score, second look)
  on the grayscale image; every fixed batch shape is compiled before timing.
- dlib: the HOG frontal face detector (one upsampling, dlib's usual call) and
  the 68-point ERT shape predictor on each face found, grayscale image. Its
  model learnt the iBUG 300-W data, which holds the photos of ibug-300w-train:
  on those its figures flatter it.
- MediaPipe: the Face Mesh solution (static image mode, up to 20 faces, its own
  BlazeFace detector) on the RGB image, its 468 mesh vertices taken to the
  68-point scheme by MESH_TO_68 (how it was made: see there); its face box is
  the extent of its mesh.

Timing: decoding is excluded (each system gets the decoded image in the form
it reads: gray for jaxkp and dlib, RGB for MediaPipe). The systems take turns
image by image, the order rotated each image, so machine load falls on all
alike; each first runs once, untimed, on the first image. The one-minute load
average at start and end is printed with the times. jaxkp and MediaPipe may use
both cores, dlib uses one.

Needs a benchmark environment with dlib and MediaPipe (not in requirements.txt).
MediaPipe 0.10.21 is the last release that ships the Face Mesh solution with its
models (later ones need a model file from the internet); its declared pins
(numpy<2, opencv-contrib-python, which is OpenCV 5 by now and replaces the Haar
cascades jaxkp needs) are wrong for this environment, so it goes in without its
dependencies, and they are installed by hand (it runs with numpy 2):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r requirements.txt dlib-bin face-recognition-models
    .venv-bench/bin/pip install --no-deps mediapipe==0.10.21
    .venv-bench/bin/pip install absl-py attrs flatbuffers matplotlib "protobuf>=4.25.3,<5" sounddevice sentencepiece

A system that cannot be imported is skipped with a message saying why.

The validation splits of the shipped weights' run (as train_config in
checkpoints/config.json holds them), each data folder on its own:

    nice -n 10 .venv-bench/bin/python benchmarks/compare_systems.py --split training --val-only \\
        --data-dir ../shared/data/ibug-300w-train ../shared/data/youtube-faces-keypoints

A test folder in the same layout (test/ and test_frames_keypoints.csv), the first
100 images, figures also as JSON:

    nice -n 10 .venv-bench/bin/python benchmarks/compare_systems.py --split test --data-dir PATH \\
        --limit 100 --json compare.json

Several jaxkp weights (each its own row; the validation split is the first's
unless --split-from names another):

    .venv-bench/bin/python benchmarks/compare_systems.py --split training --val-only \\
        --weights shipped=checkpoints long=runs/heatmap-300w-long --data-dir ../shared/data/ibug-300w-train

Recompute MESH_TO_68 (on 100 photos of the 300-W folder that the split-from
run trained on; --limit to change the count) and print it to paste here:

    .venv-bench/bin/python benchmarks/compare_systems.py --derive-mapping --data-dir ../shared/data/ibug-300w-train
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# MediaPipe's C++ side logs every graph it builds to stderr; only its errors are of use here.
os.environ.setdefault("GLOG_minloglevel", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from jaxkp import metrics  # noqa: E402
from jaxkp.checkpoint import WeightsError, read_config, write_atomic  # noqa: E402
from jaxkp.detect import holds  # noqa: E402
from jaxkp.inference import BATCH_SIZES, MAX_FACES, FaceKeypointPipeline  # noqa: E402
from jaxkp.model import INPUT_SIZE, NUM_KEYPOINTS  # noqa: E402
from jaxkp.weights import BUNDLED_WEIGHTS, ENV_VAR, load_model, resolve_weights  # noqa: E402
from train import data  # noqa: E402
from train.evaluate import validation_part  # noqa: E402

SYSTEMS = ("jaxkp", "dlib", "mediapipe")
FAILURE_THRESHOLD = 0.08
MESH_VERTICES = 468
# Photos `--derive-mapping` looks at by default.
DERIVE_PHOTOS = 100

# The Face Mesh vertex standing for each of the 68 points (0-based, iBUG/300-W order).
# Derived with --derive-mapping on 100 photos of ibug-300w-train that the shipped
# weights' run trained on (none of its validation photos), spread evenly through them;
# Face Mesh found 99 of their labelled faces. For each point: the vertex whose distance
# to the labelled point, over the outer-eye-corner distance, is least on average over
# those faces (the mapped points' NME there: 0.0511). Run it again to check or renew.
MESH_TO_68 = (
    # jaw 0-16
    127, 227, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 447, 356,
    # brows 17-26
    70, 63, 105, 66, 55, 336, 296, 334, 293, 300,
    # nose 27-35
    168, 197, 195, 4, 75, 97, 2, 326, 305,
    # eyes 36-47
    7, 159, 158, 155, 153, 144, 382, 385, 387, 249, 373, 380,
    # mouth 48-67
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 62, 38, 13, 268, 308, 317, 14, 87,
)


class Unavailable(RuntimeError):
    """A system that cannot run in this environment; the message says why."""


@dataclass
class Found:
    """The faces one system found in one image, in that image's pixels."""

    boxes: np.ndarray  # (K, 4) x, y, width, height
    keypoints: np.ndarray  # (K, 68, 2)


@dataclass
class System:
    """One pipeline under test: decoded image in, faces out."""

    name: str
    colour: bool  # reads the RGB image (else the grayscale one)
    find: Callable[[np.ndarray], Found]


def weights_folder(source: str | Path | None) -> Path:
    """resolve_weights, but a Hub id that cannot be had is an error: offline the app falls
    back on the bundled weights, and a benchmark would score them under another name."""
    folder = resolve_weights(source)
    if source is not None and folder == BUNDLED_WEIGHTS and Path(source).resolve() != BUNDLED_WEIGHTS.resolve():
        raise WeightsError(f"weights {str(source)!r} cannot be had here (no such folder, and the Hub is out of reach)")
    return folder


def jaxkp_system(name: str, weights: str | Path) -> System:
    """The app's pipeline (train.evaluate.predict_end_to_end's, image by image, so that it
    can take turns with the other systems)."""
    model = load_model(weights_folder(weights))
    pipeline = FaceKeypointPipeline.create(model)
    for size in BATCH_SIZES:  # every batch shape compiled now, so no timed image pays for a compile
        model.predict(np.zeros((size, INPUT_SIZE, INPUT_SIZE), np.uint8))

    def find(gray: np.ndarray) -> Found:
        found = pipeline.find_faces(gray)
        return Found(found.faces.boxes, found.reading.keypoints)

    return System(name, False, find)


def dlib_system() -> System:
    """dlib's HOG face detector, then its 68-point ERT shape predictor on every face found."""
    try:
        import dlib
    except ImportError as error:
        raise Unavailable(f"dlib is not installed here ({error}); make .venv-bench as the module doc says") from None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("face-recognition-models (dlib's 68-point model file) is not installed here")
    model_file = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    predictor = dlib.shape_predictor(str(model_file))
    detector = dlib.get_frontal_face_detector()

    def find(gray: np.ndarray) -> Found:
        rectangles = detector(gray, 1)  # one upsampling: faces down to about 40 px, dlib's usual call
        # dlib's box corners and parts are pixel indices; here pixel i spans [i, i+1), as jaxkp's do.
        boxes = np.array([[r.left(), r.top(), r.width(), r.height()] for r in rectangles], np.float64)
        keypoints = np.array([[(p.x + 0.5, p.y + 0.5) for p in predictor(gray, r).parts()] for r in rectangles],
                             np.float64)
        return Found(boxes.reshape(-1, 4), keypoints.reshape(-1, NUM_KEYPOINTS, 2))

    return System("dlib HOG + ERT", False, find)


def face_mesh() -> Callable[[np.ndarray], np.ndarray]:
    """MediaPipe Face Mesh as a function: RGB image in, (K, 468, 2) mesh vertices in its pixels out."""
    try:
        import mediapipe
    except ImportError as error:
        raise Unavailable(f"mediapipe is not installed here ({error}); make .venv-bench as the module doc says") \
            from None
    solutions = getattr(mediapipe, "solutions", None)
    if solutions is None:
        raise Unavailable(f"mediapipe {mediapipe.__version__} has no Face Mesh solution (gone since 0.10.30, and "
                          "its successor needs a model file from the internet): install mediapipe==0.10.21 as "
                          "the module doc says")
    mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MAX_FACES, refine_landmarks=False)

    def vertices(rgb: np.ndarray) -> np.ndarray:
        faces = mesh.process(rgb).multi_face_landmarks or []
        height, width = rgb.shape[:2]
        # Normalised coordinates, 0..1 across the image: times its size gives continuous pixels.
        points = np.array([[(p.x, p.y) for p in face.landmark[:MESH_VERTICES]] for face in faces], np.float64)
        return points.reshape(-1, MESH_VERTICES, 2) * (width, height)

    return vertices


def extent(points: np.ndarray) -> np.ndarray:
    """(K, P, 2) point sets -> (K, 4) boxes x, y, width, height around each."""
    low, high = points.min(axis=1, initial=np.inf), points.max(axis=1, initial=-np.inf)
    return np.concatenate([low, high - low], axis=1).reshape(-1, 4)


def mediapipe_system(mapping: tuple[int, ...] = MESH_TO_68) -> System:
    """MediaPipe Face Mesh, its vertices taken to the 68 points by `mapping`; the face's
    box is its mesh's extent (the solution gives no detector box)."""
    vertices = face_mesh()
    table = np.asarray(mapping)

    def find(rgb: np.ndarray) -> Found:
        mesh = vertices(rgb)
        return Found(extent(mesh), mesh[:, table])

    return System("MediaPipe Face Mesh", True, find)


def labelled_face(boxes: np.ndarray, truth: np.ndarray) -> int | None:
    """Which of the found faces (boxes (K, 4)) is the labelled one (truth (68, 2)), or None:
    of the boxes that hold its centre and are of its size, the nearest (the rule of
    train.evaluate.predict_end_to_end)."""
    candidates = [index for index, box in enumerate(boxes) if holds(box, truth)]
    if not candidates:
        return None
    centres = boxes[candidates, :2] + boxes[candidates, 2:] / 2
    return candidates[int(np.argmin(np.linalg.norm(centres - truth.mean(axis=0), axis=1)))]


@dataclass
class Measured:
    """One system's answers on one data set."""

    predicted: np.ndarray  # (N, 68, 2), zeros where it missed the face
    detected: np.ndarray  # (N,) bool
    seconds: np.ndarray  # (N,) wall time of the whole pipeline per image


def load(data_dir: Path, split: str, train_config: dict[str, Any] | None, limit: int | None, colour: bool
         ) -> tuple[data.Dataset, list[np.ndarray] | None]:
    """The images to score (grayscale, as the project's loader reads them; the validation
    part of `train_config`'s run where given; the first `limit`) and, with `colour`, the
    same images as RGB."""
    if train_config is None:
        dataset = data.load_dataset(data_dir, split, limit)
    else:
        dataset = validation_part(data.load_dataset(data_dir, split), data_dir, train_config)
        dataset = dataset.subset(np.arange(min(len(dataset), limit or len(dataset))))
    if not colour:
        return dataset, None
    rgb = []
    for name in dataset.names:
        image = cv2.imread(str(data_dir / split / name), cv2.IMREAD_COLOR)
        if image is None:
            raise data.DataError(f"cannot decode image: {data_dir / split / name}")
        rgb.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return dataset, rgb


def measure(systems: list[System], dataset: data.Dataset, rgb: list[np.ndarray] | None) -> dict[str, Measured]:
    """Every system on every image, taking turns image by image."""
    count = len(dataset)
    results = {s.name: Measured(np.zeros((count, NUM_KEYPOINTS, 2)), np.zeros(count, bool), np.zeros(count))
               for s in systems}

    def image_for(system: System, index: int) -> np.ndarray:
        return rgb[index] if system.colour else dataset.images[index]

    for system in systems:  # untimed: graph set-up, first-call allocations and caches
        system.find(image_for(system, 0))
    for index in range(count):
        # The order rotates, so that no system always runs first (or right after another's cache use).
        shift = index % len(systems)
        for system in systems[shift:] + systems[:shift]:
            image = image_for(system, index)
            start = time.perf_counter()
            found = system.find(image)
            elapsed = time.perf_counter() - start
            result = results[system.name]
            result.seconds[index] = elapsed
            best = labelled_face(found.boxes, dataset.keypoints[index])
            if best is not None:
                result.predicted[index], result.detected[index] = found.keypoints[best], True
        if (index + 1) % 50 == 0 or index + 1 == count:
            print(f"  {index + 1}/{count} images", file=sys.stderr, flush=True)
    return results


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """NME mean and median, failure rates, RMS error and NME by region over these faces
    (NaN where there are none)."""
    if not len(truth):
        nan = float("nan")
        return {"images": 0, "nme_mean": nan, "nme_median": nan, "rmse_px": nan,
                **{f"failure_rate_{t:.2f}": nan for t in metrics.FAILURE_THRESHOLDS},
                "regions": {name: nan for name in metrics.REGIONS}}
    regions = metrics.region_summary(predicted, truth)
    return metrics.summarize(predicted, truth) | {"regions": {name: r["nme"] for name, r in regions.items()}}


def report(results: dict[str, Measured], truth: np.ndarray) -> dict[str, Any]:
    """Each system's figures on the faces it found and on those every system found."""
    common = np.logical_and.reduce([m.detected for m in results.values()])
    figures = {}
    for name, m in results.items():
        figures[name] = {"detection_rate": float(m.detected.mean()),
                         **scores(m.predicted[m.detected], truth[m.detected]),
                         "ms_median": 1000 * float(np.median(m.seconds)),
                         "ms_mean": 1000 * float(m.seconds.mean()),
                         "common": scores(m.predicted[common], truth[common])}
    return {"images": int(len(truth)), "common_images": int(common.sum()), "systems": figures}


def print_tables(summary: dict[str, Any]) -> None:
    fail = f"failure_rate_{FAILURE_THRESHOLD:.2f}"
    regions = " | ".join(metrics.REGIONS)
    print(f"| system | detected | NME mean | NME median | fail > {FAILURE_THRESHOLD} | {regions} "
          "| ms median | ms mean |")
    print("| --- " * (7 + len(metrics.REGIONS)) + "|")
    for name, s in summary["systems"].items():
        by_region = " | ".join(f"{s['regions'][r]:.4f}" for r in metrics.REGIONS)
        print(f"| {name} | {s['detection_rate']:.3f} | {s['nme_mean']:.4f} | {s['nme_median']:.4f} | {s[fail]:.3f} "
              f"| {by_region} | {s['ms_median']:.1f} | {s['ms_mean']:.1f} |")
    print(f"\nOn the {summary['common_images']} images every system detected:")
    print(f"| system | NME mean | NME median | fail > {FAILURE_THRESHOLD} | {regions} |")
    print("| --- " * (4 + len(metrics.REGIONS)) + "|")
    for name, s in summary["systems"].items():
        c = s["common"]
        by_region = " | ".join(f"{c['regions'][r]:.4f}" for r in metrics.REGIONS)
        print(f"| {name} | {c['nme_mean']:.4f} | {c['nme_median']:.4f} | {c[fail]:.3f} | {by_region} |")


def derive_mapping(data_dir: Path, train_config: dict[str, Any], photos: int) -> tuple[int, ...]:
    """For each of the 68 points, the mesh vertex nearest the labelled point on average (in
    outer-eye-corner distances) over `photos` photos of `data_dir` that `train_config`'s run
    trained on, spread evenly through them. Prints the table and what it scores there."""
    vertices = face_mesh()
    dataset = data.load_dataset(data_dir, "training")
    held_out = set(validation_part(dataset, data_dir, train_config).names)
    training = [i for i, name in enumerate(dataset.names) if name not in held_out]
    chosen = [training[i] for i in np.unique(np.linspace(0, len(training) - 1, photos).round().astype(int))]
    meshes, truths = [], []
    for index in chosen:
        bgr = cv2.imread(str(data_dir / "training" / dataset.names[index]), cv2.IMREAD_COLOR)
        mesh = vertices(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        best = labelled_face(extent(mesh), dataset.keypoints[index])
        if best is not None:
            meshes.append(mesh[best])
            truths.append(dataset.keypoints[index])
    if not meshes:
        raise data.DataError(f"Face Mesh found none of the {len(chosen)} labelled faces in {data_dir}")
    mesh, truth = np.stack(meshes), np.stack(truths)
    interocular = metrics.interocular(truth)
    # (photos, 68, 468): every labelled point's distance to every vertex, in eye-corner distances.
    distance = np.linalg.norm(truth[:, :, None] - mesh[:, None], axis=-1) / interocular[:, None, None]
    mean_distance = distance.mean(axis=0)
    mapping = tuple(int(v) for v in mean_distance.argmin(axis=1))

    print(f"Face Mesh matched {len(meshes)} of {len(chosen)} training photos of {data_dir.name}.")
    print("Mean distance of each point's vertex to the labelled point, in outer-eye-corner distances:")
    for region, points in metrics.REGIONS.items():
        print(f"  {region:<6} " + " ".join(f"{mean_distance[p, mapping[p]]:.3f}" for p in points))
    print(f"NME of the mapped points on these photos: {metrics.summarize(mesh[:, mapping], truth)['nme_mean']:.4f}")
    print("\nMESH_TO_68 = (")
    for region, points in metrics.REGIONS.items():
        print(f"    # {region} {points.start}-{points.stop - 1}")
        print("    " + " ".join(f"{mapping[p]}," for p in points))
    print(")")
    return mapping


def build_systems(names: list[str], weights: dict[str, str]) -> tuple[list[System], dict[str, str]]:
    """The systems that can run here, and why each of the others cannot."""
    systems, skipped = [], {}
    for name in names:
        if name == "jaxkp":
            for label, source in weights.items():
                systems.append(jaxkp_system(label, source))
            continue
        try:
            systems.append(dlib_system() if name == "dlib" else mediapipe_system())
        except Unavailable as error:
            skipped[name] = str(error)
            print(f"skipping {name}: {error}", file=sys.stderr)
    return systems, skipped


def parse_weights(items: list[str] | None) -> dict[str, str]:
    """[NAME=]WEIGHTS items -> {row label: weights}; the shipped weights without any."""
    if not items:
        return {"jaxkp": os.environ.get(ENV_VAR) or str(BUNDLED_WEIGHTS)}
    pairs = [item.split("=", 1) if "=" in item else [None, item] for item in items]
    if len(pairs) == 1 and pairs[0][0] is None:
        return {"jaxkp": pairs[0][1]}
    return {f"jaxkp {name or Path(source).name}": source for name, source in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True,
                        help="folder(s) with SPLIT/ and SPLIT_frames_keypoints.csv; each is scored on its own")
    parser.add_argument("--split", default="test", help="'test' (default) or 'training'")
    parser.add_argument("--val-only", action="store_true",
                        help="score only the images the --split-from run held out for validation")
    parser.add_argument("--weights", nargs="+", metavar="[NAME=]WEIGHTS",
                        help="jaxkp weights, one row each (default: JAXKP_WEIGHTS, else checkpoints/)")
    parser.add_argument("--split-from", metavar="WEIGHTS",
                        help="the run whose validation split --val-only scores and --derive-mapping avoids "
                             "(default: the first --weights)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                        help="which systems to run (default: all)")
    parser.add_argument("--limit", type=int, help="only the first N images of each folder (after --val-only); "
                                                  f"with --derive-mapping, the photo count (default {DERIVE_PHOTOS})")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--derive-mapping", action="store_true",
                        help="recompute MESH_TO_68 on training photos of the first --data-dir (the 300-W folder) "
                             "and print it; scores nothing")
    args = parser.parse_args(argv)
    weights = parse_weights(args.weights)

    try:
        split_dir = weights_folder(args.split_from or next(iter(weights.values())))
        train_config = read_config(split_dir).get("train_config") if args.val_only or args.derive_mapping else None
        if (args.val_only or args.derive_mapping) and not train_config:
            raise WeightsError(f"{split_dir}/config.json records no training split")
        if args.derive_mapping:
            derive_mapping(args.data_dir[0], train_config, args.limit or DERIVE_PHOTOS)
            return 0
        if args.val_only and args.split != "training":
            raise data.DataError("--val-only takes its images from the training split: add --split training")
        systems, skipped = build_systems(args.systems, weights)
        if not systems:
            raise data.DataError("no system can run here")
        colour = any(s.colour for s in systems)
        results = []
        for data_dir in args.data_dir:
            dataset, rgb = load(data_dir, args.split, train_config, args.limit, colour)
            part = f"the validation split of {split_dir}" if args.val_only else "all images"
            print(f"\n{data_dir.name}/{args.split}: {len(dataset)} images ({part})", flush=True)
            load_before = os.getloadavg()[0]
            measured = measure(systems, dataset, rgb)
            load_after = os.getloadavg()[0]
            summary = report(measured, dataset.keypoints)
            print_tables(summary)
            print(f"load average (1 min) at start and end: {load_before:.2f}, {load_after:.2f} "
                  f"({os.cpu_count()} cores)")
            results.append({"data": f"{data_dir}/{args.split}", "val_only": args.val_only,
                            "split_from": str(split_dir) if args.val_only else None,
                            "load_average": [load_before, load_after], **summary})
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        output = {"weights": weights, "skipped": skipped, "results": results}
        write_atomic(args.json, (json.dumps(output, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
