"""Drawing keypoints and boxes so they stay visible at any image size."""

from __future__ import annotations

import cv2
import numpy as np

from jaxkp.geometry import crop_box
from jaxkp.pose import NOSE_TIP, rotation_from_angles

# RGB colours.
GROUND_TRUTH = (0, 200, 0)
PREDICTION = (255, 0, 255)
BOX = (0, 180, 255)
# Pose axes: the face's own left, up, and forward (out of the face, towards the viewer when frontal).
POSE_AXES = {"left": (230, 40, 40), "up": (40, 200, 40), "forward": (40, 90, 255)}
# Dots by confidence (annotate's `confidence`): a point expected within SURE of the
# face's width is green, one expected off by UNSURE or more red, yellow between.
SURE, UNSURE = 0.02, 0.06
CONFIDENCE_COLOURS = ((40, 200, 40), (250, 210, 0), (230, 40, 40))
# Point groups of the 68-point scheme, drawn as polylines (closed for eyes and lips).
CONTOURS = [
    (range(0, 17), False), (range(17, 22), False), (range(22, 27), False), (range(27, 31), False),
    (range(31, 36), False), (range(36, 42), True), (range(42, 48), True), (range(48, 60), True), (range(60, 68), True),
]


def marker_size(shape: tuple[int, ...], face_size: float | None = None) -> int:
    """Dot radius: about 1/150 of the face (or 1/300 of the image), at least 1 pixel."""
    reference = face_size / 150 if face_size else max(shape[:2]) / 300
    return max(1, int(round(reference)))


def confidence_colours(uncertainty: np.ndarray, face_width: float) -> list[tuple[int, int, int]]:
    """A colour per point from its expected error (pixels) over the face's width: green
    (sure) through yellow to red (unsure), as SURE and UNSURE set."""
    share = np.clip((np.asarray(uncertainty) / max(face_width, 1.0) - SURE) / (UNSURE - SURE), 0.0, 1.0) * 2
    low, middle, high = (np.array(c, np.float64) for c in CONFIDENCE_COLOURS)
    mixed = [low + (middle - low) * t if t <= 1 else middle + (high - middle) * (t - 1) for t in share]
    return [tuple(int(v) for v in np.round(colour)) for colour in mixed]


def draw_keypoints(
    rgb: np.ndarray, points: np.ndarray, colour: tuple[int, int, int] = PREDICTION,
    radius: int | None = None, lines: bool = True, dot_colours: list[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Draws (68, 2) points onto a copy of an RGB image: lines in `colour`, dots in
    `colour` or, given `dot_colours`, each in its own."""
    canvas = np.ascontiguousarray(rgb).copy()
    if radius is None:
        span = np.ptp(points, axis=0).max() if len(points) else 0
        radius = marker_size(canvas.shape, span or None)
    thickness = max(1, radius // 2)
    if lines:
        for indices, closed in CONTOURS:
            polyline = np.round(points[list(indices)]).astype(np.int32)
            cv2.polylines(canvas, [polyline], closed, colour, thickness, cv2.LINE_AA)
    for index, (x, y) in enumerate(np.round(points).astype(int)):
        dot = colour if dot_colours is None else dot_colours[index]
        cv2.circle(canvas, (int(x), int(y)), radius, dot, -1, cv2.LINE_AA)
    return canvas


def draw_box(rgb: np.ndarray, box: list[float], colour: tuple[int, int, int] = BOX) -> np.ndarray:
    canvas = np.ascontiguousarray(rgb).copy()
    x, y, w, h = (int(round(v)) for v in box)
    thickness = max(2, int(round(max(canvas.shape[:2]) / 400)))
    cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness, cv2.LINE_AA)
    return canvas


def image_grid(images: list[np.ndarray], columns: int, cell: int = 224) -> np.ndarray:
    """Tiles RGB images, each resized to cell x cell, into one image."""
    rows = -(-len(images) // columns)
    grid = np.full((rows * cell, columns * cell, 3), 255, np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * cell : (row + 1) * cell, column * cell : (column + 1) * cell] = cv2.resize(
            image, (cell, cell), interpolation=cv2.INTER_AREA
        )
    return grid


def faces_on_canvas(rgb: np.ndarray, result: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each face's box (4,) and keypoints (68, 2) in `rgb`'s pixels: `rgb` may be the
    result's photo at any size (a reduced copy for display, say)."""
    image = result["image"]
    scale = np.array([rgb.shape[1] / image["width"], rgb.shape[0] / image["height"]])
    return [(np.asarray(face["box"], np.float64) * np.tile(scale, 2), np.asarray(face["keypoints"]) * scale)
            for face in result["faces"]]


def annotate(rgb: np.ndarray, result: dict, pose_axes: bool = False, confidence: bool = False) -> np.ndarray:
    """The photo (at any size) with every face's box and keypoints drawn on it (with
    `pose_axes`, each face's pose axes: draw_pose_axes; with `confidence`, each dot
    coloured by how sure its point is, confidence_colours, where the face has an
    "uncertainty")."""
    canvas = rgb
    for (box, points), face in zip(faces_on_canvas(rgb, result), result["faces"]):
        canvas = draw_box(canvas, box)
        dots = None
        if confidence and face.get("uncertainty") is not None:
            # Both in the result's pixels: the ratio holds at any display size.
            dots = confidence_colours(np.asarray(face["uncertainty"]), float(face["box"][2]))
        canvas = draw_keypoints(canvas, points, radius=marker_size(canvas.shape, box[2]), dot_colours=dots)
    return draw_pose_axes(canvas, result) if pose_axes else canvas


def draw_pose_axes(rgb: np.ndarray, result: dict, length: float = 0.6) -> np.ndarray:
    """The photo (at any size) with each face's head pose drawn from its nose tip: three
    arrows `length` face-box widths long, red to the face's own left, green up, blue
    forward out of the face (short when the face looks at the camera). Faces without
    a "pose" are left as they are. The arrows are the pose's rotation seen straight on,
    not through the camera's perspective: a picture of the angles, not a measurement."""
    canvas = np.ascontiguousarray(rgb).copy()
    drawn = zip(faces_on_canvas(rgb, result), result["faces"])
    for (box, points), face in drawn:
        if not face.get("pose"):
            continue
        rotation = rotation_from_angles(face["pose"]["yaw"], face["pose"]["pitch"], face["pose"]["roll"])
        # Model axes (jaxkp.pose): x the face's left, y down, z into the head.
        directions = {"left": rotation[:, 0], "up": -rotation[:, 1], "forward": -rotation[:, 2]}
        origin = points[NOSE_TIP]
        thickness = max(2, int(round(box[2] / 60)))
        for name in ("forward", "up", "left") if directions["forward"][2] > 0 else ("left", "up", "forward"):
            # Axes pointing away from the viewer are drawn first, so the nearer ones stay on top.
            end = origin + length * box[2] * directions[name][:2]
            cv2.arrowedLine(canvas, tuple(int(v) for v in np.round(origin)), tuple(int(v) for v in np.round(end)),
                            POSE_AXES[name], thickness, cv2.LINE_AA, tipLength=0.15)
    return canvas


def face_crops(rgb: np.ndarray, result: dict, crop: tuple[float, float, float, float], size: int = 224
               ) -> list[np.ndarray]:
    """Each face's region as the network saw it (`crop` is the model's), size x size, with its keypoints."""
    crops = []
    for box, points in faces_on_canvas(rgb, result):
        x, y, w, h = crop_box(box, crop)
        matrix = np.array([[size / w, 0, -x * size / w], [0, size / h, -y * size / h]])
        region = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)
        crops.append(draw_keypoints(region, points @ matrix[:, :2].T + matrix[:, 2], radius=2))
    return crops
