"""Generated data in the YouTube-Faces layout: drawn faces with known keypoints."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def face_template() -> np.ndarray:
    """A plausible 68-point face in a unit square (x right, y down)."""
    jaw_angles = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    jaw = np.stack([0.5 + 0.45 * np.cos(jaw_angles), 0.35 + 0.6 * np.sin(jaw_angles)], -1)
    right_brow = np.stack([np.linspace(0.15, 0.42, 5), 0.30 - 0.04 * np.sin(np.linspace(0, np.pi, 5))], -1)
    left_brow = right_brow.copy()
    left_brow[:, 0] = 1.0 - right_brow[::-1, 0]
    nose_bridge = np.stack([np.full(4, 0.5), np.linspace(0.38, 0.58, 4)], -1)
    nose_base = np.stack([np.linspace(0.42, 0.58, 5), 0.63 + 0.02 * np.sin(np.linspace(0, np.pi, 5))], -1)

    def eye(cx: float) -> np.ndarray:
        angles = np.linspace(np.pi, -np.pi, 7)[:6]
        return np.stack([cx + 0.09 * np.cos(angles), 0.40 - 0.03 * np.sin(angles)], -1)

    outer = np.linspace(np.pi, -np.pi, 13)[:12]
    outer_mouth = np.stack([0.5 + 0.17 * np.cos(outer), 0.78 - 0.06 * np.sin(outer)], -1)
    inner = np.linspace(np.pi, -np.pi, 9)[:8]
    inner_mouth = np.stack([0.5 + 0.11 * np.cos(inner), 0.78 - 0.025 * np.sin(inner)], -1)
    points = np.concatenate([jaw, right_brow, left_brow, nose_bridge, nose_base, eye(0.3), eye(0.7),
                             outer_mouth, inner_mouth])
    assert points.shape == (68, 2)
    return points


def draw_face(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with a drawn face and its 68 keypoints in pixels."""
    image = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
    size = rng.uniform(0.55, 0.75) * min(width, height)
    origin = np.array([rng.uniform(0.1, 0.9) * (width - size), rng.uniform(0.1, 0.9) * (height - size)])
    points = origin + face_template() * size
    centre = tuple(int(v) for v in origin + size * np.array([0.5, 0.55]))
    cv2.ellipse(image, centre, (int(size * 0.47), int(size * 0.55)), 0, 0, 360, (190, 160, 140), -1)
    for start, stop, closed in [(0, 17, False), (17, 22, False), (22, 27, False), (27, 36, False),
                                (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]:
        cv2.polylines(image, [np.round(points[start:stop]).astype(np.int32)], closed, (30, 20, 20), 2)
    return image, points.astype(np.float32)


def write_dataset(root: Path, split: str = "training", people: int = 6, frames: int = 4, seed: int = 0) -> Path:
    """Writes root/<split>/*.jpg and root/<split>_frames_keypoints.csv; every third image is a PNG named .jpg."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    rows = []
    for person in range(people):
        for frame in range(frames):
            name = f"Person_{person:02d}_{frame:02d}.jpg"
            image, points = draw_face(rng, int(rng.integers(90, 200)), int(rng.integers(90, 200)))
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            encoded = cv2.imencode(".png" if len(rows) % 3 == 0 else ".jpg", bgr)[1]
            (root / split / name).write_bytes(encoded.tobytes())
            rows.append(name + "," + ",".join(f"{v:.1f}" for v in points.reshape(-1)))
    header = "," + ",".join(str(i) for i in range(136))
    (root / f"{split}_frames_keypoints.csv").write_text("\n".join([header, *rows]) + "\n")
    return root
