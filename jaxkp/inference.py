"""From a photo to faces and keypoints: loading, detection, framing, the network.

One result format everywhere (API, CLI, Python), in original-image pixels,
faces ordered largest first:

    {"image": {"width": W, "height": H},
     "faces": [{"box": [x, y, w, h], "keypoints": [[x0, y0], ..., [x67, y67]]}]}
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import jax
import numpy as np
from flax import nnx
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxkp import data
from jaxkp.model import INPUT_SIZE

# Photos larger than this are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
# Detection runs on a copy whose longer side is at most this; boxes map back.
DETECTION_MAX_SIDE = 1024
MAX_FACES = 20
# Fixed batch sizes: any face count pads up to one of these, so no new shape recompiles.
BATCH_SIZES = (1, 2, 4, 8, 16, 32)

# Haar box -> the region the network sees, as (left, top, width, height) in units
# of the box. The reference network learnt whole training images, so its crop is
# framed as they are: measured by `python -m train.framing --every 2`, relative to
# the detected box (x, y, w, h) they start at x - 0.49 w, y - 0.58 h and span
# 2.01 w by 2.25 h (medians). A network trained on detector-framed crops names its
# own crop in config.json ("crop").
TRAINING_IMAGE_CROP = (-0.49, -0.58, 2.01, 2.25)
HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS = 1.1, 5


class ImageError(ValueError):
    """A file that cannot be used as a photo; the message says why."""


def load_photo(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """Any photo -> RGB uint8 array, EXIF orientation applied.

    Accepts a path, encoded bytes, a PIL image or an array (grayscale, RGB,
    RGBA; uint8 or 16-bit). Raises ImageError for a non-image, a truncated
    file, a decompression bomb or an empty image.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            with warnings.catch_warnings():
                # Our own pixel limit below refuses bombs with a clearer message.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except FileNotFoundError:
            raise ImageError(f"file not found: {source}") from None
        except UnidentifiedImageError:
            raise ImageError(_describe_unreadable(source)) from None
        except Image.DecompressionBombError as error:
            raise ImageError(f"image too large: {error}") from None
        except OSError as error:
            raise ImageError(f"cannot read image: {error}") from None
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"image is empty ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {MAX_PIXELS // 1_000_000} megapixels)")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image is truncated or corrupt: {error}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    return np.asarray(image.convert("RGB"))


IMAGE_SIGNATURES = {
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def _describe_unreadable(source: str | Path | bytes) -> str:
    """Why PIL could not identify a file: not an image at all, or a damaged/empty one."""
    head = source[:32] if isinstance(source, bytes) else Path(source).open("rb").read(32)
    kind = next((name for magic, name in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)
    if kind is None:
        return "not an image file (no known image format)"
    if kind == "PNG" and len(head) >= 24:
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width == 0 or height == 0:
            return f"image is empty ({width}x{height} pixels)"
    return f"damaged {kind} file: its header cannot be read"


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise ImageError(f"image is empty (shape {array.shape})")
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        high = array.max()
        # 16-bit data may use the full range or only 12 bits of it.
        scale = 255.0 / (65535.0 if high > 4095 else max(high, 1.0)) if high > 255 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] == 4:
        return array[..., :3].copy()
    if array.ndim == 3 and array.shape[-1] == 3:
        return array
    if array.ndim == 3 and array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    raise ImageError(f"unsupported image shape {array.shape}")


class FaceDetector:
    """OpenCV's frontal-face Haar cascade, on a downscaled copy of large photos."""

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade at {path}")

    def __call__(self, gray: np.ndarray, max_faces: int = MAX_FACES) -> np.ndarray:
        """Boxes (N, 4) as x, y, w, h in `gray`'s pixels, largest first."""
        scale = min(1.0, DETECTION_MAX_SIDE / max(gray.shape))
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_side = max(24, min(small.shape) // 20)
        boxes = self.cascade.detectMultiScale(
            small, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(min_side, min_side)
        )
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / scale
        order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")
        return boxes[order][:max_faces]


def crop_box(face_box: np.ndarray, crop: tuple[float, float, float, float] = TRAINING_IMAGE_CROP
             ) -> tuple[float, float, float, float]:
    """The region (x, y, w, h) around a Haar box that the network is shown."""
    x, y, w, h = face_box
    left, top, width, height = crop
    return (x + left * w, y + top * h, width * w, height * h)


def nearest_face_boxes(detector: FaceDetector, images: list[np.ndarray], keypoints: np.ndarray) -> np.ndarray:
    """For each labelled image, the Haar box whose centre is nearest its keypoints'
    centre: (N, 4), NaN where no face is found."""
    nearest = np.full((len(images), 4), np.nan)
    for index, (image, points) in enumerate(zip(images, keypoints)):
        boxes = detector(image)
        if len(boxes):
            centres = boxes[:, :2] + boxes[:, 2:] / 2
            nearest[index] = boxes[np.argmin(np.linalg.norm(centres - points.mean(axis=0), axis=1))]
    return nearest


def _forward(graph: nnx.GraphDef, state: nnx.State, images: jax.Array) -> jax.Array:
    inputs = images.astype(jax.numpy.float32) / 127.5 - 1.0
    return nnx.merge(graph, state)(inputs)


class KeypointModel:
    """A network in eval mode behind one jitted forward per fixed batch size."""

    def __init__(self, model: nnx.Module, config: dict[str, Any] | None = None):
        model.eval()
        self.graph, self.state = nnx.split(model)
        self.config = config or {}
        self.crop = tuple(self.config.get("crop", TRAINING_IMAGE_CROP))
        self._forward = jax.jit(_forward, static_argnums=0)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 224, 224) or (N, 224, 224, 1) uint8 -> (N, 68, 2) normalised keypoints."""
        images = np.asarray(images, np.uint8).reshape(-1, INPUT_SIZE, INPUT_SIZE, 1)
        outputs = []
        for start in range(0, len(images), BATCH_SIZES[-1]):
            chunk = images[start : start + BATCH_SIZES[-1]]
            size = next(s for s in BATCH_SIZES if s >= len(chunk))
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.uint8)])
            outputs.append(np.asarray(self._forward(self.graph, self.state, padded))[: len(chunk)])
        return np.concatenate(outputs) if outputs else np.zeros((0, 68, 2), np.float32)

    def keypoints_in_regions(self, gray: np.ndarray, regions: list[tuple[float, float, float, float]]) -> np.ndarray:
        """Keypoints (N, 68, 2) in `gray`'s pixels for each region (x, y, w, h) it is shown."""
        matrices = [data.box_to_input(region) for region in regions]
        if not matrices:
            return np.zeros((0, 68, 2), np.float64)
        patches = np.stack([data.warp_to_input(gray, matrix) for matrix in matrices])
        normalised = self(patches)
        return np.stack([data.keypoints_to_image(p, m) for p, m in zip(normalised, matrices)])


@dataclass
class FaceKeypointPipeline:
    """Photo in, result dict out: detector, framing, network."""

    model: KeypointModel
    detector: FaceDetector

    @classmethod
    def create(cls, model: KeypointModel) -> FaceKeypointPipeline:
        return cls(model, FaceDetector())

    def __call__(self, photo: Any, max_faces: int = MAX_FACES) -> dict[str, Any]:
        rgb = load_photo(photo)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes = self.detector(gray, max_faces)
        keypoints = self.model.keypoints_in_regions(gray, [crop_box(box, self.model.crop) for box in boxes])
        height, width = gray.shape
        return {
            "image": {"width": int(width), "height": int(height)},
            "faces": [
                {"box": [round(float(v), 1) for v in box], "keypoints": np.round(points, 2).tolist()}
                for box, points in zip(boxes, keypoints)
            ],
        }
