"""Example photos that jaxkp may legally show, loaded at run time from scikit-image.

`astronaut.png` is NASA's public-domain portrait of Eileen Collins; `camera.png`
(no frontal face) is CC0. Neither is copied into this project.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from jaxkp.inference import load_photo


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed; it carries jaxkp's example photos")
    return Path(spec.submodule_search_locations[0]) / "data"


def example_paths() -> list[Path]:
    """Photos for the app's examples: a portrait, and one without a frontal face."""
    return [skimage_data_dir() / "astronaut.png", skimage_data_dir() / "camera.png"]


def compose_faces(count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> np.ndarray:
    """An RGB photo of `size` holding `count` copies of the astronaut's head, at varied scales."""
    astronaut = load_photo(skimage_data_dir() / "astronaut.png")
    head = astronaut[20:250, 130:320]  # her head and shoulders, about 2x the Haar box
    width, height = size
    canvas = np.full((height, width, 3), 235, np.uint8)
    rng = np.random.default_rng(seed)
    columns = int(np.ceil(np.sqrt(count * width / height)))
    rows = int(np.ceil(count / columns))
    cell_w, cell_h = width // columns, height // rows
    for index in range(count):
        row, column = divmod(index, columns)
        scale = min(cell_w / head.shape[1], cell_h / head.shape[0]) * rng.uniform(0.8, 0.95)
        tile = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        y = row * cell_h + (cell_h - tile.shape[0]) // 2
        x = column * cell_w + (cell_w - tile.shape[1]) // 2
        canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return canvas


def moving_faces_clip(frames: int = 60, size: tuple[int, int] = (640, 480), faces: int = 2,
                      speed: float = 3.0, seed: int = 0) -> list[np.ndarray]:
    """RGB frames of `faces` copies of the astronaut's head sliding across a background
    at `speed` pixels per frame (in opposite directions), for tracking tests and benchmarks."""
    astronaut = load_photo(skimage_data_dir() / "astronaut.png")
    head = cv2.resize(astronaut[20:250, 130:320], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    width, height = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    clip = []
    for index in range(frames):
        frame = background.copy()
        for face in range(faces):
            direction = 1 if face % 2 == 0 else -1
            x = int(round(width * (face + 0.5) / faces - head.shape[1] / 2 + direction * speed * (index - frames / 2)))
            y = (height - head.shape[0]) // 2
            x = min(max(x, 0), width - head.shape[1])
            frame[y : y + head.shape[0], x : x + head.shape[1]] = head
        clip.append(frame)
    return clip
