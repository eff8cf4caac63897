"""Labelled multi-face photos for measuring face finding, built from data at hand.

Each composite is a face-free background (scikit-image's sample photos: brick,
grass, coffee, a cat, a rocket, coins, text, ...; real textures and objects, so
false detections are real ones) with 1 to 6 labelled faces pasted on it at
random sizes, in-plane angles, mirrorings and places, without overlap. Every
face on a composite is labelled, which single-face data sets cannot promise,
so boxes that match no label are false detections.

The faces come from whatever data set is given, normally the validation split
(people the network never saw). `python -m train.composites --data-dir DATA
--out DIR` writes them in the data layout (one CSV row per face, several rows
per photo), so any tool can be scored on the same photos.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from jaxkp.examples import skimage_data_dir
from jaxkp.geometry import apply_affine
from train import data
from train.data import FLIP_PERMUTATION

# scikit-image's sample photos with no human face in them (astronaut.png and
# camera.png have one; lfw_subset is faces).
BACKGROUNDS = ("brick.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png", "color.png",
               "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
               "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")
SIZE = (640, 480)
MAX_FACES = 6
# A face's keypoint box spans this many pixels (its geometric mean side), log-uniform.
FACE_SIDE_RANGE = (40.0, 170.0)
MAX_ANGLE = 30.0


@dataclass
class Composite:
    image: np.ndarray  # (480, 640) uint8 gray
    keypoints: np.ndarray  # (F, 68, 2) every face's keypoints, image pixels


def load_backgrounds() -> list[np.ndarray]:
    directory = skimage_data_dir()
    return [cv2.imread(str(directory / name), cv2.IMREAD_GRAYSCALE) for name in BACKGROUNDS]


def background(backgrounds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random part of a random background, stretched to SIZE, maybe mirrored."""
    image = backgrounds[rng.integers(len(backgrounds))]
    height, width = image.shape
    share = rng.uniform(0.5, 1.0)
    crop_w, crop_h = int(width * share), int(height * share)
    x, y = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    canvas = cv2.resize(image[y : y + crop_h, x : x + crop_w], SIZE, interpolation=cv2.INTER_AREA)
    return canvas[:, ::-1].copy() if rng.random() < 0.5 else canvas


def paste_face(canvas: np.ndarray, image: np.ndarray, points: np.ndarray, rng: np.random.Generator,
               taken: list[np.ndarray]) -> np.ndarray | None:
    """Pastes the face of (image, points) into `canvas` (in place) at a random size,
    angle and place clear of the `taken` regions; returns its keypoints there, or
    None when it found no free place."""
    low, high = points.min(axis=0), points.max(axis=0)
    side = float(np.sqrt(np.prod(high - low)))
    centre = (low + high) / 2 - [0, 0.1 * side]  # a little up: the forehead belongs to the face
    target_side = float(np.exp(rng.uniform(*np.log(FACE_SIDE_RANGE))))
    scale, angle = target_side / side, rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    mirrored = rng.random() < 0.5
    radius = 0.85 * target_side  # the pasted region's half-size (face, brow and some hair)
    height, width = canvas.shape
    for _ in range(50):
        place = rng.uniform([radius, radius], [width - radius, height - radius])
        region = np.array([*(place - radius), *(place + radius)])
        if all(region[2] < t[0] or t[2] < region[0] or region[3] < t[1] or t[3] < region[1] for t in taken):
            break
    else:
        return None
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    if mirrored:  # turned and scaled, then mirrored about the face's centre
        matrix = np.array([[-1.0, 0, 2 * centre[0]], [0, 1, 0]]) @ np.vstack([matrix, [0, 0, 1]])
    matrix[:, 2] += place - apply_affine(matrix, centre)
    face = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    # A soft ellipse: the face and its surround blend into the background.
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (int(place[0]), int(place[1])), (int(0.75 * radius), int(0.95 * radius)), float(-angle),
                0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.08 * radius)
    canvas[:] = np.clip(canvas * (1 - mask) + face * mask, 0, 255).astype(np.uint8)
    taken.append(region)
    moved = apply_affine(matrix, points)
    return moved[FLIP_PERMUTATION] if mirrored else moved


def make_composites(faces: data.Dataset, count: int, seed: int = 0) -> list[Composite]:
    """`count` composites with faces drawn from `faces` (each used about equally often)."""
    rng = np.random.default_rng(seed)
    backgrounds = load_backgrounds()
    order = iter(np.concatenate([rng.permutation(len(faces)) for _ in range(count * MAX_FACES // len(faces) + 2)]))
    composites = []
    for _ in range(count):
        canvas, taken, labels = background(backgrounds, rng), [], []
        for _ in range(rng.integers(1, MAX_FACES + 1)):
            index = next(order)
            points = paste_face(canvas, faces.images[index], faces.keypoints[index], rng, taken)
            if points is not None:
                labels.append(points)
        composites.append(Composite(canvas, np.stack(labels)))
    return composites


def write_composites(composites: list[Composite], out: Path, split: str = "training") -> None:
    """The data layout: `<out>/<split>/composite_NNNN.png` and one CSV row per face."""
    (out / split).mkdir(parents=True, exist_ok=True)
    with open(out / f"{split}_frames_keypoints.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([""] + [str(i) for i in range(136)])
        for index, composite in enumerate(composites):
            name = f"composite_{index:04d}.png"
            cv2.imwrite(str(out / split / name), composite.image)
            for points in composite.keypoints:
                writer.writerow([name] + [f"{v:.2f}" for v in points.reshape(-1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True, help="where the faces come from")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faces = data.Dataset.concatenate([data.load_dataset(d) for d in args.data_dir])
    composites = make_composites(faces, args.count, args.seed)
    write_composites(composites, args.out)
    print(f"{len(composites)} composites, {sum(len(c.keypoints) for c in composites)} faces, in {args.out}")


if __name__ == "__main__":
    main()
