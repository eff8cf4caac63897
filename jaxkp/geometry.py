"""Framing: from a face box to the network's 224x224 input, and back.

The one home of the rules that decide what the network sees: the crop around
a detector box, the box the Haar detector would place on a face's keypoints,
the 2x3 affine matrix from photo pixels to input pixels, its inverse, and the
warp. Training, evaluation, the app and the tracker all frame through here, so
a face is shown to the network the same way everywhere.

Pixel coordinates are continuous (pixel i spans [i, i+1)), as cv2.resize
places them; network outputs are normalised to [-1, 1] about the input centre.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from jaxkp.model import INPUT_SIZE

Region = tuple[float, float, float, float]  # x, y, w, h in pixels, or in units of a box

# How a recipe frames each face for the network (its config's `framing`):
# "whole-image": the whole training image, randomly cropped before the rescale
#   (the reference recipe; its images are already framed around one face);
# "keypoint-box": the crop around a box placed on the keypoints as the Haar
#   detector places it (with the recipe's jitter);
# "haar-box": the crop around the Haar box found on the face (detected once per
#   run), a placed box where the detector finds none.
FRAMINGS = ("whole-image", "keypoint-box", "haar-box")

# Haar box -> the region the network sees, as (left, top, width, height) in units
# of the box. The reference network learnt whole training images, so its crop is
# framed as they are: measured by `python -m train.framing --every 2`, relative to
# the detected box (x, y, w, h) they start at x - 0.49 w, y - 0.58 h and span
# 2.01 w by 2.25 h (medians). A network trained on detector-framed crops names its
# own crop in config.json ("crop").
TRAINING_IMAGE_CROP: Region = (-0.49, -0.58, 2.01, 2.25)


def framing_of(train_config: dict[str, Any]) -> str:
    """A saved training config's framing; configs written before the `framing` field
    said it through `augmentation` (none: whole image) and `haar_boxes`."""
    if "framing" in train_config:
        return train_config["framing"]
    if not train_config.get("augmentation"):
        return "whole-image"
    return "haar-box" if train_config.get("haar_boxes") else "keypoint-box"


def crop_box(face_box: np.ndarray | Region, crop: Region = TRAINING_IMAGE_CROP) -> Region:
    """The region (x, y, w, h) around a face box that the network is shown."""
    x, y, w, h = face_box
    left, top, width, height = crop
    return (x + left * w, y + top * h, width * w, height * h)


def box_to_input(box: Region) -> np.ndarray:
    """Affine matrix that stretches box (x, y, w, h) onto the 224x224 input."""
    x, y, w, h = box
    sx, sy = INPUT_SIZE / w, INPUT_SIZE / h
    return np.array([[sx, 0.0, -x * sx], [0.0, sy, -y * sy]], np.float64)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Maps (..., 2) points through a 2x3 affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def shrink_by(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` resized (INTER_AREA) to `scale` of its side, never below one pixel a side:
    a strip a few pixels thin keeps its pixel while its length shrinks."""
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    if min(height, width) * scale >= 1:
        return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


def warp_to_input(image: np.ndarray, matrix: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Warps a grayscale image to the 224x224 input (or a `size` square) through `matrix`.

    Pixel centres follow cv2.resize's convention, so keypoints map through the
    matrix in continuous coordinates (pixel i spans [i, i+1)). A large
    shrink is done with INTER_AREA first so the input is not aliased.
    """
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 0.5:
        # Shrink to at most twice the final size, never below one pixel (a box far larger
        # than a tiny image).
        factor = min(0.5 / scale, min(image.shape[:2]))
        small = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
        actual = np.array([small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]])
        matrix = matrix.copy()
        matrix[:, :2] = matrix[:, :2] / actual[None, :]
        image = small
    # warpAffine samples at integer pixel centres; shift to continuous coordinates.
    shift_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    shift_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    full = shift_out @ np.vstack([matrix, [0, 0, 1]]) @ shift_in
    return cv2.warpAffine(
        image, full[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def normalize_keypoints(points_input: np.ndarray) -> np.ndarray:
    """Input pixels (0..224) -> [-1, 1] about the centre."""
    half = INPUT_SIZE / 2
    return (points_input - half) / half


def denormalize_keypoints(points_norm: np.ndarray) -> np.ndarray:
    half = INPUT_SIZE / 2
    return points_norm * half + half


def keypoints_to_image(points_norm: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Network output in [-1, 1] -> original-image pixels, through the inverse of `matrix`."""
    return apply_affine(invert_affine(matrix), denormalize_keypoints(points_norm))


def image_pixels_per_unit(matrix: np.ndarray) -> float:
    """How many of the image's pixels one normalised unit of the network's output spans
    (half the input's side, through the inverse of `matrix`, which scales alike both ways)."""
    return float((INPUT_SIZE / 2) / math.sqrt(abs(np.linalg.det(matrix[:2, :2]))))


def full_image_matrix(image: np.ndarray) -> np.ndarray:
    """The deterministic evaluation transform: the whole image stretched to 224x224."""
    height, width = image.shape[:2]
    return box_to_input((0.0, 0.0, float(width), float(height)))


def random_crop_matrix(image: np.ndarray, rng: np.random.Generator, min_fraction: float) -> np.ndarray:
    """Random crop (each side keeps min_fraction..1 of the image) before the rescale."""
    height, width = image.shape[:2]
    crop_w = width * rng.uniform(min_fraction, 1.0)
    crop_h = height * rng.uniform(min_fraction, 1.0)
    x = rng.uniform(0.0, width - crop_w)
    y = rng.uniform(0.0, height - crop_h)
    return box_to_input((x, y, crop_w, crop_h))


# Where the Haar box sits relative to the keypoints' bounding box (left, top,
# width, height in units of that box): median and spread, from train.framing.
DETECTOR_BOX_MEDIAN = np.array([-0.093, -0.296, 1.161, 1.206])
DETECTOR_BOX_STD = np.array([0.118, 0.084, 0.112, 0.115])


def detector_box(points: np.ndarray, offsets: np.ndarray) -> tuple[float, float, float, float]:
    """A square box placed on the keypoints as the Haar detector places it."""
    low, high = points.min(axis=0), points.max(axis=0)
    size = high - low
    left, top, width, height = offsets
    side = float(np.sqrt(width * size[0] * height * size[1]))
    return (float(low[0] + left * size[0]), float(low[1] + top * size[1]), side, side)


def detector_framing_matrix(points: np.ndarray, offsets: np.ndarray = DETECTOR_BOX_MEDIAN,
                            crop: Region | None = None) -> np.ndarray:
    """The input matrix for the crop the app would take around this face."""
    return box_framing_matrix(np.array(detector_box(points, offsets)), crop)


def box_framing_matrix(face_box: np.ndarray, crop: Region | None = None, angle: float = 0.0) -> np.ndarray:
    """The input matrix for the app's crop (`crop`, default the training-image one) around a
    face box; a face turned in the photo is first turned upright by `angle` degrees
    (counter-clockwise, as cv2.getRotationMatrix2D) about the box's centre."""
    matrix = box_to_input(crop_box(face_box, crop or TRAINING_IMAGE_CROP))
    if not angle:
        return matrix
    x, y, w, h = face_box
    turn = np.vstack([cv2.getRotationMatrix2D((float(x + w / 2), float(y + h / 2)), float(angle), 1.0), [0, 0, 1]])
    return matrix @ turn


# The subject's right eye (on the image's left) and left eye, in the 68-point scheme.
RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)


def upright_face_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The box (x, y, w, h) and turn (degrees, counter-clockwise, as box_framing_matrix
    takes them) that frame a face with these keypoints (68, 2) as the Haar detector
    frames an upright face: the turn levels its eyes, the box sits where the detector
    would place it on the levelled keypoints. Its centre is the fixed point of the turn
    about it, so box_framing_matrix(box, crop, turn) shows the face upright."""
    eye_line = points[LEFT_EYE].mean(axis=0) - points[RIGHT_EYE].mean(axis=0)
    turn = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    # cv2's counter-clockwise turn by `turn` about the origin, linear part.
    radians = math.radians(turn)
    rotation = np.array([[math.cos(radians), math.sin(radians)], [-math.sin(radians), math.cos(radians)]])
    x, y, w, h = detector_box(points @ rotation.T, DETECTOR_BOX_MEDIAN)
    # A turn about c maps p to R (p - c) + c; the box levelled about the origin has its
    # centre at R c for the c that is that turn's fixed point.
    centre = rotation.T @ np.array([x + w / 2, y + h / 2])
    return np.array([centre[0] - w / 2, centre[1] - h / 2, w, h]), turn


def upright_framings(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For faces with these keypoints (N, 68, 2): boxes (N, 4) and turns (N,) that show
    each levelled, framed as the detector frames an upright face (upright_face_box)."""
    framings = [upright_face_box(points) for points in keypoints]
    return np.array([box for box, _ in framings]).reshape(-1, 4), np.array([turn for _, turn in framings])


def rotation_about_input_centre(degrees: float) -> np.ndarray:
    centre = INPUT_SIZE / 2
    return np.vstack([cv2.getRotationMatrix2D((centre, centre), degrees, 1.0), [0, 0, 1]])


FLIP_INPUT = np.array([[-1.0, 0.0, INPUT_SIZE], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


# Index of each point's mirror image in the 68-point scheme: in a horizontally
# flipped face, point i is the original's point MIRROR[i].
MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows swap sides
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer mouth
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner mouth
)
