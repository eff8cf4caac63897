"""Head pose from 68 keypoints: a generic 3-D face fitted to all 68 points.

    head_pose(keypoints, (width, height)) -> {"yaw": ..., "pitch": ..., "roll": ...}

Angles are in degrees, of the head in the camera's frame:

- yaw: positive when the face turns to its own left, its nose towards the image's
  right; a face seen in profile from its left side is at +90.
- pitch: positive when the face looks up (nose up, chin forward).
- roll: positive when the face leans clockwise on the screen (towards its own left
  shoulder); it is the angle of the line from the face's right eye to its left eye,
  as `jaxkp.geometry.upright_face_box` measures it (y grows downwards).

They are Euler angles of the rotation R from the face model to the camera (x right,
y down, z into the scene): R = Rz(roll) Ry(-yaw) Rx(-pitch), pitch applied first,
roll last, about the camera's axes. This order makes two symmetries exact: a photo
turned by t degrees about its centre (the principal point) turns the camera about its
optical axis, which adds t to roll and leaves yaw and pitch alone (clockwise turns add,
counter-clockwise turns, as cv2.getRotationMatrix2D's positive angles, subtract); and a
mirrored photo negates yaw and roll and keeps pitch, because the model is symmetric.

The camera is a pinhole with square pixels, the principal point at the image centre,
and a focal length of the image's longer side in pixels (a horizontal field of view
of about 53 degrees, as a phone's main camera or a 35 mm lens on a full-frame
camera). A photo's true focal length is seldom known; a wrong one changes the distance
most (not reported) and the angles some, more for faces away from the image centre
(docs/pose-align-collections.md has figures).

The 3-D model (MEAN_FACE) is the mean shape of the 300-W training mark-up (1675 faces
and their mirror images, LFPW and HELEN photos), recovered from the 2-D points alone by
rigid factorisation (Tomasi and Kanade, IJCV 1992) under scaled orthography, refined by
alternating least squares (`derive_mean_face`). It is the shape that annotators' points
are consistent with, jaw contour included, which is what a fit to those points needs.
Its frame: x to the face's left (image right), y down, z away from the viewer; origin
at the nose tip (point 30); 90 mm between the outer eye corners (points 36 and 45, an
adult's mean); "straight ahead" (zero pitch) is the mean view of the 300-W photos.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from jaxkp.geometry import MIRROR

NOSE_TIP = 30
JAW, INNER = np.arange(0, 17), np.arange(17, 68)
# Points spread less than this (root mean square, pixels) hold no pose: a face a few
# pixels across, or a degenerate input.
MIN_SPREAD_PX = 1.0
# Adult mean distance between the outer eye corners (exocanthion to exocanthion), mm.
OUTER_EYE_CORNERS_MM = 90.0

# The generic face (68, 3), mm, in the model frame (module doc). Made by
# `python -m jaxkp.pose --derive /path/to/ibug-300w-train` (derive_mean_face).
MEAN_FACE = np.array([
    -73.6, -34.4, 88.5, -73.0, -15.5, 86.2, -70.7, 3.4, 84.9, -66.7, 22.0, 83.5,
    -59.2, 39.2, 77.8, -47.6, 54.2, 68.6, -33.4, 66.8, 57.6, -17.8, 77.0, 46.7,
    0.0, 79.9, 42.8, 17.8, 77.0, 46.7, 33.4, 66.8, 57.6, 47.6, 54.2, 68.6,
    59.2, 39.2, 77.8, 66.7, 22.0, 83.5, 70.7, 3.4, 84.9, 73.0, -15.5, 86.2,
    73.6, -34.4, 88.5, -59.9, -49.7, 50.9, -50.7, -57.4, 41.2, -38.0, -59.7, 32.8,
    -24.9, -57.8, 26.1, -12.4, -53.2, 21.2, 12.4, -53.2, 21.2, 24.9, -57.8, 26.1,
    38.0, -59.7, 32.8, 50.7, -57.4, 41.2, 59.9, -49.7, 50.9, 0.0, -37.7, 22.1,
    0.0, -25.2, 15.2, 0.0, -12.8, 7.5, 0.0, 0.0, 0.0, -14.7, 8.2, 20.0,
    -7.6, 10.7, 16.8, 0.0, 13.1, 14.9, 7.6, 10.7, 16.8, 14.7, 8.2, 20.0,
    -45.0, -36.1, 45.1, -37.2, -40.8, 40.9, -27.5, -40.6, 39.2, -19.6, -34.4, 39.2,
    -28.4, -32.5, 39.4, -37.9, -32.6, 41.2, 19.6, -34.4, 39.2, 27.5, -40.6, 39.2,
    37.2, -40.8, 40.9, 45.0, -36.1, 45.1, 37.9, -32.6, 41.2, 28.4, -32.5, 39.4,
    -28.3, 31.7, 44.1, -18.1, 27.4, 29.7, -7.3, 25.2, 21.4, 0.0, 27.0, 20.4,
    7.3, 25.2, 21.4, 18.1, 27.4, 29.7, 28.3, 31.7, 44.1, 18.4, 41.6, 35.5,
    8.0, 45.9, 29.2, 0.0, 46.7, 28.1, -8.0, 45.9, 29.2, -18.4, 41.6, 35.5,
    -24.0, 32.2, 42.1, -7.4, 31.5, 24.2, 0.0, 32.3, 22.8, 7.4, 31.5, 24.2,
    24.0, 32.2, 42.1, 7.6, 36.4, 27.9, 0.0, 37.3, 26.7, -7.6, 36.4, 27.9,
]).reshape(-1, 3)


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """The assumed camera (module doc) of a photo of `image_size` = (width, height) pixels."""
    width, height = image_size
    focal = float(max(width, height))
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def fit_pose(keypoints: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (3, 3) and translation (3,) (mm) of MEAN_FACE that project closest to
    `keypoints` (68, 2) (photo pixels, continuous: pixel i spans [i, i+1)) in the
    assumed camera: least squares of the reprojection error over all 68 points.
    Raises ValueError for points no pose can fit (all in one spot, not finite)."""
    points = np.ascontiguousarray(keypoints, np.float64).reshape(-1, 1, 2)
    if points.shape[0] != len(MEAN_FACE) or not np.isfinite(points).all():
        raise ValueError(f"head pose needs {len(MEAN_FACE)} finite points, not {points.shape[0]}")
    if np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=-1).mean()) < MIN_SPREAD_PX:
        raise ValueError("the points are all in one spot")
    camera = camera_matrix(image_size)
    # SQPnP finds the global minimum of its objective without a starting guess (a plain
    # iterative start falls into the mirror-image minimum for many turned faces); it
    # refuses points spread over very little of the view (a face a few pixels across in
    # a large photo), where EPnP still works. Levenberg-Marquardt then minimises the
    # reprojection error itself.
    for method in (cv2.SOLVEPNP_SQPNP, cv2.SOLVEPNP_EPNP):
        try:
            found, rvec, tvec = cv2.solvePnP(MEAN_FACE, points, camera, None, flags=method)
        except cv2.error:
            continue
        if found and np.isfinite(rvec).all() and np.isfinite(tvec).all():
            rvec, tvec = cv2.solvePnPRefineLM(MEAN_FACE, points, camera, None, rvec, tvec)
            return cv2.Rodrigues(rvec)[0], tvec.ravel()
    raise ValueError("no head pose fits these points (are they all in one spot?)")


def euler_angles(rotation: np.ndarray) -> dict[str, float]:
    """(yaw, pitch, roll) in degrees of a model-to-camera rotation, as the module doc defines them."""
    # R = Rz(c) Ry(a) Rx(b): R[2, 0] = -sin a, R[2, 1:] = cos a (sin b, cos b), R[:2, 0] = cos a (cos c, sin c).
    a = math.asin(float(np.clip(-rotation[2, 0], -1.0, 1.0)))
    b = math.atan2(rotation[2, 1], rotation[2, 2])
    c = math.atan2(rotation[1, 0], rotation[0, 0])
    return {"yaw": -math.degrees(a), "pitch": -math.degrees(b), "roll": math.degrees(c)}


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The model-to-camera rotation (3, 3) of angles in degrees (euler_angles' inverse)."""
    a, b, c = math.radians(-yaw), math.radians(-pitch), math.radians(roll)
    rz = np.array([[math.cos(c), -math.sin(c), 0.0], [math.sin(c), math.cos(c), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    return rz @ ry @ rx


def head_pose(keypoints: Any, image_size: tuple[int, int]) -> dict[str, float] | None:
    """{"yaw", "pitch", "roll"} in degrees (module doc) of a face's 68 keypoints in a photo
    of `image_size` = (width, height): the ORIGINAL photo's size and pixels, since the
    camera's principal point and focal length come from it. None for points no pose
    fits (all in one spot), which no face the pipeline finds has."""
    try:
        rotation, _ = fit_pose(np.asarray(keypoints, np.float64), image_size)
    except ValueError:
        return None
    return {name: round(value, 1) for name, value in euler_angles(rotation).items()}


def describe_pose(pose: dict[str, float]) -> str:
    """A caption for a face's pose, e.g. "yaw +12°, pitch -4°, roll +1°"."""
    return ", ".join(f"{name} {pose[name]:+.0f}°" for name in ("yaw", "pitch", "roll"))


def project(rotation: np.ndarray, translation: np.ndarray, image_size: tuple[int, int],
            points: np.ndarray = MEAN_FACE) -> np.ndarray:
    """3-D model points (N, 3) seen by the assumed camera at this pose: (N, 2) pixels."""
    rvec = cv2.Rodrigues(np.asarray(rotation, np.float64))[0]
    projected, _ = cv2.projectPoints(np.asarray(points, np.float64), rvec, np.asarray(translation, np.float64),
                                     camera_matrix(image_size), None)
    return projected.reshape(-1, 2)


# --- how MEAN_FACE was made ------------------------------------------------------


def _nearest_scaled_rotations(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face, the scaled orthographic camera s * R (R: 2x3, orthonormal rows) nearest an
    affine one (F, 2, 3): scales (F,) and rows (F, 2, 3)."""
    u, singular, vt = np.linalg.svd(affine, full_matrices=False)
    return singular.mean(axis=1), u @ vt


def derive_mean_face(keypoints: np.ndarray, iterations: int = 100) -> np.ndarray:
    """The mean 3-D shape (68, 3) in the model frame (module doc) of 2-D mark-ups
    (N, 68, 2) of many faces in many poses, and of their mirror images.

    Each face, centred and scaled to unit size, is a scaled orthographic view of one
    rigid shape plus the person's and expression's own differences. The rank-3
    factorisation of all views gives the shape up to an affine map, fixed by asking
    every view's two camera rows to be orthogonal and of equal length; alternating
    least squares (each view's camera given the shape, the shape given the cameras)
    then refines it. The views' cameras come from the 51 inner points (brows, eyes,
    nose, mouth) only: annotators put the jaw points (0-16) on the face's outline,
    which slides over the face as it turns, and letting them steer the cameras made
    the face a fifth deeper. Each jaw point is then the 3-D point those cameras see
    closest to where it was marked. The depth sign the views cannot tell is the one
    that puts the nose tip in front of the eyes."""
    views = np.concatenate([keypoints, keypoints[:, MIRROR] * [-1.0, 1.0]]).astype(np.float64)
    views -= views[:, INNER].mean(axis=1, keepdims=True)
    views /= np.sqrt((views[:, INNER] ** 2).sum(axis=(1, 2)) / len(INNER))[:, None, None]
    inner = views[:, INNER]
    count = len(views)
    u, singular, vt = np.linalg.svd(inner.transpose(0, 2, 1).reshape(2 * count, -1), full_matrices=False)
    motion, shape = u[:, :3] * singular[:3], vt[:3]
    # Metric upgrade: Q Q^T = L with m1 L m1 = m2 L m2 and m1 L m2 = 0 for each view's rows m1, m2.

    def quadratic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.stack([a[:, 0] * b[:, 0], a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0],
                         a[:, 0] * b[:, 2] + a[:, 2] * b[:, 0], a[:, 1] * b[:, 1],
                         a[:, 1] * b[:, 2] + a[:, 2] * b[:, 1], a[:, 2] * b[:, 2]], axis=1)

    first, second = motion[0::2], motion[1::2]
    system = np.concatenate([quadratic(first, first) - quadratic(second, second), quadratic(first, second)])
    g = np.linalg.svd(system)[2][-1]
    gram = np.array([[g[0], g[1], g[2]], [g[1], g[3], g[4]], [g[2], g[4], g[5]]])
    gram = gram if np.trace(gram) > 0 else -gram
    shape = np.linalg.solve(np.linalg.cholesky(gram), shape).T  # (51, 3)

    def best_points(cameras: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """The 3-D points (P, 3) whose views by `cameras` (F, 2, 3) are closest to `seen` (F, P, 2)."""
        normal = np.einsum("fki,fkj->ij", cameras, cameras)
        return np.einsum("fki,fjk->ji", cameras, seen) @ np.linalg.inv(normal)

    for _ in range(iterations):
        affine = np.einsum("fjk,jl->fkl", inner, shape) @ np.linalg.inv(shape.T @ shape)
        scales, rows = _nearest_scaled_rotations(affine)
        cameras = scales[:, None, None] * rows  # (F, 2, 3)
        shape = best_points(cameras, inner)
    model = np.zeros((len(MIRROR), 3))
    model[INNER] = shape
    model[JAW] = best_points(cameras, views[:, JAW])
    # Model frame: x from each right-side point to its mirror image, y the views' mean
    # downward direction (so zero pitch is the mean view), z = x cross y.
    pairs = np.flatnonzero(np.arange(len(MIRROR)) < MIRROR)
    x = (model[MIRROR[pairs]] - model[pairs]).sum(axis=0)
    x /= np.linalg.norm(x)
    y = (rows[:, 1] / np.linalg.norm(rows[:, 1], axis=1, keepdims=True)).mean(axis=0)
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    model = model @ np.stack([x, y, np.cross(x, y)]).T
    if model[NOSE_TIP, 2] > model[[36, 45], 2].mean():
        model[:, 2] *= -1  # the depth-reversed twin of the same views
    # Exactly symmetric about x = 0 (the mirrored views make it so up to rounding).
    model[:, 0] = (model[:, 0] - model[MIRROR, 0]) / 2
    model[:, 1:] = (model[:, 1:] + model[MIRROR, 1:]) / 2
    model *= OUTER_EYE_CORNERS_MM / np.linalg.norm(model[36] - model[45])
    return model - model[NOSE_TIP]


def _read_markup(folder: str) -> np.ndarray:
    import csv
    from pathlib import Path

    with (Path(folder) / "training_frames_keypoints.csv").open() as file:
        rows = list(csv.reader(file))[1:]
    return np.array([[float(value) for value in row[1:]] for row in rows]).reshape(len(rows), -1, 2)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jaxkp.pose", description="print MEAN_FACE derived from a mark-up")
    parser.add_argument("--derive", required=True, metavar="FOLDER",
                        help="a folder with training_frames_keypoints.csv (68 points per face), e.g. 300-W training")
    args = parser.parse_args(argv)
    model = np.round(derive_mean_face(_read_markup(args.derive)), 1) + 0.0  # + 0.0: no "-0.0"
    for start in range(0, len(model), 4):
        print("    " + " ".join(f"{x:.1f}, {y:.1f}, {z:.1f}," for x, y, z in model[start : start + 4]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
