"""Aligned face crops from 68 keypoints, for recognition or generative data sets.

Two templates, each a similarity (turn, scale, shift) from the photo to a square crop
of `size` pixels:

- "ffhq": the alignment published with the FFHQ data set (Karras, Laine and Aila,
  CVPR 2019). From the eye centres (means of points 36-41 and 42-47) and the mouth
  corners (48, 54) it builds an oriented square: its x axis is the eye-to-eye vector
  plus the eye-to-mouth vector turned a quarter turn, its half side the larger of
  2.0 times the eye distance and 1.8 times the eye-to-mouth distance, its centre
  0.1 of the eye-to-mouth vector below the eyes' midpoint. The square fills the crop.
  Where the square leaves the photo, the photo is reflected, blurred and faded
  towards its median colour with distance from its edge, as FFHQ pads.
- "arcface": the five-point template of ArcFace / InsightFace (Deng et al., CVPR 2019)
  at 112x112 pixels, scaled to `size`: eye centres, nose tip (point 30) and mouth
  corners fitted to it by least squares (Umeyama, 1991), as InsightFace's crops are.
  Outside the photo is black, as there.

Matrices are 2x3 and map photo pixels to crop pixels in continuous coordinates
(pixel i spans [i, i+1)), as keypoints are given: crop_point = M @ [x, y, 1].
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

import cv2
import numpy as np

TEMPLATES = ("ffhq", "arcface")
DEFAULT_SIZE = 256
# InsightFace's reference points in a 112x112 crop: the subject's right eye (image left),
# left eye, nose tip, right and left mouth corners.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])


def eye_centres(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centres of the subject's right eye (image left) and left eye: means of their six points."""
    return keypoints[36:42].mean(axis=0), keypoints[42:48].mean(axis=0)


def five_points(keypoints: np.ndarray) -> np.ndarray:
    """The five points the ArcFace template places, from 68: eye centres, nose tip, mouth corners."""
    right_eye, left_eye = eye_centres(keypoints)
    return np.stack([right_eye, left_eye, keypoints[30], keypoints[48], keypoints[54]])


def ffhq_quad(keypoints: np.ndarray) -> np.ndarray:
    """FFHQ's oriented square (4, 2): top-left, bottom-left, bottom-right, top-right corners."""
    right_eye, left_eye = eye_centres(keypoints)
    eye_middle, eye_to_eye = (right_eye + left_eye) / 2, left_eye - right_eye
    eye_to_mouth = (keypoints[48] + keypoints[54]) / 2 - eye_middle
    # The eye line and the face's vertical (eye to mouth, turned back a quarter turn) both
    # say which way is across the face; their sum is steadier than either.
    across = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    across *= max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth)) / np.hypot(*across)
    down = np.array([-across[1], across[0]])
    centre = eye_middle + 0.1 * eye_to_mouth
    return np.stack([centre - across - down, centre - across + down, centre + across + down, centre + across - down])


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity that maps points `source` (N, 2) closest to `target` (N, 2) in least
    squares (Umeyama's closed form, no reflection)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source / len(source))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / (centred_source**2).sum(axis=1).mean()
    return np.column_stack([scale * rotation, target_mean - scale * rotation @ source_mean])


def alignment_matrix(keypoints: Any, size: int = DEFAULT_SIZE, template: str = "ffhq") -> np.ndarray:
    """The 2x3 matrix from photo pixels to a size x size crop of `template` for a face's 68 keypoints."""
    points = np.asarray(keypoints, np.float64).reshape(68, 2)
    if template == "ffhq":
        quad = ffhq_quad(points)
        return similarity(quad, np.array([[0.0, 0.0], [0.0, size], [size, size], [size, 0.0]]))
    if template == "arcface":
        return similarity(five_points(points), ARCFACE_112 * (size / 112))
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def warp(rgb: np.ndarray, matrix: np.ndarray, size: int, border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """The size x size crop of `rgb` through `matrix` (continuous coordinates). A crop that
    shrinks the photo more than twice is taken from an area-averaged copy, not aliased."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 0.5:
        shrink = 2 * scale
        small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * shrink)), max(1, round(rgb.shape[0] * shrink))),
                           interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= np.array([small.shape[1] / rgb.shape[1], small.shape[0] / rgb.shape[0]])[None, :]
        rgb = small
    # warpAffine samples at integer pixel centres: shift into and out of continuous coordinates.
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
    return cv2.warpAffine(np.ascontiguousarray(rgb), shifted, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=border, borderValue=(0, 0, 0))


def soften_padding(crop: np.ndarray, rgb_size: tuple[int, int], matrix: np.ndarray) -> np.ndarray:
    """FFHQ's treatment of a crop that reaches past the photo: the reflected padding is
    blurred (sigma 2 % of the crop) and faded towards the photo's median colour the
    further it lies from the photo's edge, so that no sharp mirror image shows."""
    size = crop.shape[0]
    inside = warp(np.full((rgb_size[1], rgb_size[0]), 255, np.uint8), matrix, size, cv2.BORDER_CONSTANT) > 127
    if inside.all():
        return crop
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    fade = np.clip(distance / max(float(distance.max()), 1.0), 0.0, 1.0)[..., None]
    image = crop.astype(np.float32)
    blurred = cv2.GaussianBlur(image, (0, 0), 0.02 * size)
    image += (blurred - image) * np.clip(fade * 3.0, 0.0, 1.0)
    image += (np.median(image[inside], axis=0) - image) * fade
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def align_face(rgb: np.ndarray, keypoints: Any, size: int = DEFAULT_SIZE, template: str = "ffhq"
               ) -> tuple[np.ndarray, np.ndarray]:
    """A face's aligned crop (size, size, 3) of `rgb` and its 2x3 matrix photo -> crop."""
    matrix = alignment_matrix(keypoints, size, template)
    if template == "arcface":
        return warp(rgb, matrix, size, cv2.BORDER_CONSTANT), matrix
    crop = warp(rgb, matrix, size, cv2.BORDER_REFLECT_101)
    return soften_padding(crop, (rgb.shape[1], rgb.shape[0]), matrix), matrix


def aligned_faces(rgb: np.ndarray, result: dict[str, Any], size: int = DEFAULT_SIZE, template: str = "ffhq"
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop, matrix) for each face of a pipeline result, in its order (largest first).
    `rgb` is the result's photo at any size (a reduced working copy, say): crops come
    from its pixels, and matrices map the ORIGINAL photo's pixels (the result's) to the crop."""
    image = result["image"]
    scale = np.array([rgb.shape[1] / image["width"], rgb.shape[0] / image["height"]])
    aligned = []
    for face in result["faces"]:
        crop, matrix = align_face(rgb, np.asarray(face["keypoints"]) * scale, size, template)
        aligned.append((crop, np.column_stack([matrix[:, :2] * scale[None, :], matrix[:, 2]])))
    return aligned


def zip_aligned(aligned: list[tuple[np.ndarray, np.ndarray]], stem: str, template: str,
                source: str = "") -> bytes:
    """A ZIP of aligned_faces' crops, `<stem>_<face index>.png`, and aligned.json with
    their matrices, as `python -m jaxkp align` writes them (for a download button)."""
    crops, records = [], []
    for index, (crop, matrix) in enumerate(aligned):
        name = f"{stem}_{index}.png"
        crops.append((name, crop))
        records.append(crop_record(name, source, index, template, crop.shape[0], matrix))
    return crops_zip(crops, records)


def crops_zip(crops: list[tuple[str, np.ndarray]], records: list[dict[str, Any]]) -> bytes:
    """A ZIP holding each crop as a PNG under its name and the records as aligned.json."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for name, crop in crops:
            archive.writestr(name, png_bytes(crop))
        archive.writestr("aligned.json", records_json(records))
    return buffer.getvalue()


def records_json(records: list[dict[str, Any]]) -> str:
    """aligned.json's text: a list with one crop's record per line."""
    return "[\n" + ",\n".join(json.dumps(record) for record in records) + ("\n]\n" if records else "]\n")


def png_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def crop_record(name: str, source: str, face: int, template: str, size: int, matrix: np.ndarray) -> dict[str, Any]:
    """aligned.json's entry for one crop."""
    return {"file": name, "source": source, "face": face, "template": template, "size": size,
            "matrix": np.round(matrix, 6).tolist()}
