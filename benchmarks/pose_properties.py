"""Head pose's symmetries on real photos, end to end (face finding, keypoints, pose).

    python benchmarks/pose_properties.py --data-dir ../shared/data/ibug-300w-train --count 50 --turn 20

No pose ground truth is at hand, so this measures what must hold whatever the true
angles are: a mirrored photo negates yaw and roll and keeps pitch, and a photo turned
by t degrees about its centre shifts roll by t and keeps yaw and pitch. "vs mark-up"
compares the pose from the pipeline's points with the pose from the photo's hand
mark-up (the same model and camera): what the network's point errors cost. Each photo is
first centred on a square canvas as long as its diagonal, so the turned copies keep
every corner and the same camera (focal length and principal point: jaxkp.pose).
The face scored is the one nearest the labelled face's centre; a photo where the
pipeline misses it in any of the copies is counted and left out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from jaxkp import load_pipeline  # noqa: E402
from jaxkp.inference import load_photo  # noqa: E402
from jaxkp.pose import head_pose  # noqa: E402


def on_square_canvas(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo centred on a grey square canvas as long as its diagonal, and the 2x3 map into it."""
    height, width = rgb.shape[:2]
    side = int(np.ceil(np.hypot(width, height)))
    matrix = np.array([[1.0, 0.0, (side - width) / 2], [0.0, 1.0, (side - height) / 2]])
    canvas = cv2.warpAffine(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    return canvas, matrix


def face_near(result: dict, centre: np.ndarray) -> dict | None:
    """The face whose keypoint centre is nearest `centre`, if that face's box holds it."""
    best, distance = None, np.inf
    for face in result["faces"]:
        x, y, w, h = face["box"]
        gap = np.linalg.norm(np.mean(face["keypoints"], axis=0) - centre)
        if x <= centre[0] <= x + w and y <= centre[1] <= y + h and gap < distance:
            best, distance = face, gap
    return best


def symmetry_errors(pipeline, rgb: np.ndarray, points: np.ndarray, turn: float) -> dict[str, list[float]] | None:
    """Deviations from the two symmetries for one labelled face (points (68, 2)); None if it is missed."""
    canvas, matrix = on_square_canvas(rgb)
    side = canvas.shape[1]
    centre = np.mean(points, axis=0) @ matrix[:, :2].T + matrix[:, 2]
    upright = face_near(pipeline(canvas), centre)
    mirrored = face_near(pipeline(cv2.flip(canvas, 1)), np.array([side - centre[0], centre[1]]))
    if upright is None or mirrored is None:
        return None
    pose, flipped = upright["pose"], mirrored["pose"]
    errors = {"mirror yaw": [flipped["yaw"] + pose["yaw"]], "mirror pitch": [flipped["pitch"] - pose["pitch"]],
              "mirror roll": [flipped["roll"] + pose["roll"]]}
    for angle in (turn, -turn):
        # cv2's positive angles turn the photo counter-clockwise: roll (clockwise positive) falls by the angle.
        rotation = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        turned = cv2.warpAffine(canvas, rotation, (side, side), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
        face = face_near(pipeline(turned), rotation[:, :2] @ centre + rotation[:, 2])
        if face is None:
            return None
        errors.setdefault("turn roll", []).append(face["pose"]["roll"] - (pose["roll"] - angle))
        errors.setdefault("turn yaw", []).append(face["pose"]["yaw"] - pose["yaw"])
        errors.setdefault("turn pitch", []).append(face["pose"]["pitch"] - pose["pitch"])
    # The hand mark-up's pose, in the same camera: how far the network's points move the angles.
    marked = head_pose(points @ matrix[:, :2].T + matrix[:, 2], (side, side))
    for name in ("yaw", "pitch", "roll"):
        errors[f"vs mark-up {name}"] = [pose[name] - marked[name]]
    errors["pose"] = [pose["yaw"], pose["pitch"], pose["roll"]]
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a folder in the 300-W layout")
    parser.add_argument("--count", type=int, default=50, help="COUNT photos spread evenly over the sorted names")
    parser.add_argument("--turn", type=float, default=20.0, help="turn the photos by +- this many degrees")
    args = parser.parse_args()
    with (args.data_dir / "training_frames_keypoints.csv").open(newline="") as file:
        rows = sorted(list(csv.reader(file))[1:])
    rows = rows[:: max(1, len(rows) // args.count)][: args.count]
    pipeline = load_pipeline()
    totals: dict[str, list[float]] = {}
    missed = 0
    for row in rows:
        points = np.array([float(value) for value in row[1:]]).reshape(-1, 2)
        errors = symmetry_errors(pipeline, load_photo(args.data_dir / "training" / row[0]), points, args.turn)
        if errors is None:
            missed += 1
            continue
        for name, values in errors.items():
            totals.setdefault(name, []).extend(values)
    poses = np.array(totals.pop("pose")).reshape(-1, 3)
    print(f"{len(rows) - missed} photos scored, {missed} missed in some copy; turned by +-{args.turn:g} degrees")
    print(f"their poses: |yaw| up to {np.abs(poses[:, 0]).max():.1f}, |pitch| up to {np.abs(poses[:, 1]).max():.1f}, "
          f"|roll| up to {np.abs(poses[:, 2]).max():.1f} degrees (median |yaw| {np.median(np.abs(poses[:, 0])):.1f})")
    print(f"{'deviation (degrees)':<22}{'mean |.|':>10}{'max |.|':>10}{'mean':>10}")
    for name, values in totals.items():
        values = np.abs(values)
        print(f"{name:<22}{values.mean():>10.2f}{values.max():>10.2f}{np.mean(totals[name]):>10.2f}")


if __name__ == "__main__":
    main()
