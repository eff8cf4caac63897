"""From a photo to faces and keypoints: loading, detection, framing, the network.

One result format everywhere (API, CLI, Python), in original-image pixels,
faces ordered largest first:

    {"image": {"width": W, "height": H},
     "faces": [{"box": [x, y, w, h], "keypoints": [[x0, y0], ..., [x67, y67]]}]}
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import jax
import numpy as np
from flax import nnx
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from jaxkp import data
from jaxkp.model import INPUT_SIZE, NUM_KEYPOINTS

register_heif_opener()  # iPhone photos (HEIC/HEIF), EXIF orientation included

# Photos larger than this are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
# Larger photos are decoded reduced (JPEG: at decode time) to at most this many
# pixels; results are still given in the original photo's pixels. A 12 MP phone
# photo stays whole, and a face the detector can find keeps enough pixels.
WORKING_MAX_PIXELS = 12_000_000
# Detection runs on a copy of at most this many pixels (its cost grows with the
# area); boxes map back. An area budget rather than a longest side keeps faces in
# a long strip (a panorama) large enough to find.
DETECTION_MAX_PIXELS = 1024 * 1024
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
# EXIF orientations that swap width and height.
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


class ImageError(ValueError):
    """A file that cannot be used as a photo; the message says why."""


@dataclass
class Photo:
    """A decoded photo, possibly reduced, and the size of the original (EXIF orientation applied)."""

    rgb: np.ndarray  # (h, w, 3) uint8, the working pixels
    width: int
    height: int

    @property
    def scale(self) -> np.ndarray:
        """Original pixels per working pixel, (x, y)."""
        return np.array([self.width / self.rgb.shape[1], self.height / self.rgb.shape[0]])


def load_photo(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """Any photo -> RGB uint8 array at full size, EXIF orientation applied.

    Accepts a path, encoded bytes (JPEG, PNG, WebP, HEIC, ...), a PIL image or an
    array (grayscale, RGB, RGBA; uint8 or 16-bit). Raises ImageError for an empty
    or non-image file, a truncated file, a decompression bomb or an empty image.
    """
    return read_photo(source, max_pixels=None).rgb


def read_photo(source: str | Path | bytes | Image.Image | np.ndarray,
               max_pixels: int | None = WORKING_MAX_PIXELS) -> Photo:
    """As load_photo, but a photo over `max_pixels` is decoded reduced: a JPEG at
    1/2, 1/4 or 1/8 scale by its decoder, which never builds the full image, then
    any photo resized to fit. Memory and time follow the working size."""
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
        height, width = rgb.shape[:2]
        return Photo(_fit(rgb, max_pixels), width, height)
    image = source if isinstance(source, Image.Image) else _open_image(source)
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"image is empty ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {MAX_PIXELS // 1_000_000} megapixels)")
    try:
        if image.getexif().get(0x0112, 1) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        if max_pixels is not None and width * height > max_pixels and image.format == "JPEG":
            shrink = math.sqrt(max_pixels / (width * height))
            image.draft(image.mode, (math.ceil(image.size[0] * shrink), math.ceil(image.size[1] * shrink)))
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image is truncated or corrupt: {error}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        rgb = _array_to_rgb(np.asarray(image))
    else:
        rgb = np.asarray(image.convert("RGB"))
    return Photo(_fit(rgb, max_pixels), width, height)


def _open_image(source: str | Path | bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit refuses bombs with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageError(f"file not found: {source}") from None
    except UnidentifiedImageError:
        raise ImageError(_describe_unreadable(source)) from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large: {error}") from None
    except OSError as error:
        raise ImageError(f"cannot read image: {error}") from None


def _fit(rgb: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """`rgb` shrunk (area-averaged) to at most `max_pixels`, or as it is."""
    height, width = rgb.shape[:2]
    if max_pixels is None or width * height <= max_pixels:
        return rgb
    shrink = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * shrink)), max(1, int(height * shrink)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


IMAGE_SIGNATURES = {
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def _describe_unreadable(source: str | Path | bytes) -> str:
    """Why PIL could not identify a file: empty, not an image at all, or a damaged one."""
    head = source[:32] if isinstance(source, bytes) else Path(source).open("rb").read(32)
    if not head:
        return "the file is empty (0 bytes)"
    kind = next((name for magic, name in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "HEIC/HEIF"
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
        scale = min(1.0, math.sqrt(DETECTION_MAX_PIXELS / gray.size))
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
    centre: (N, 4), NaN where no box holds that centre (a box elsewhere, on a
    shirt say, is not a detection of this face)."""
    nearest = np.full((len(images), 4), np.nan)
    for index, (image, points) in enumerate(zip(images, keypoints)):
        boxes = detector(image)
        if len(boxes):
            centre = points.mean(axis=0)
            box = boxes[np.argmin(np.linalg.norm(boxes[:, :2] + boxes[:, 2:] / 2 - centre, axis=1))]
            if np.all(box[:2] <= centre) and np.all(centre <= box[:2] + box[2:]):
                nearest[index] = box
    return nearest


def _forward(graph: nnx.GraphDef, state: nnx.State, images: jax.Array) -> jax.Array:
    inputs = images.astype(jax.numpy.float32) / 127.5 - 1.0
    return nnx.merge(graph, state)(inputs)


class KeypointModel:
    """A network in eval mode behind one jitted forward per fixed batch size."""

    def __init__(self, model: nnx.Module, config: dict[str, Any] | None = None, markup: str | None = None):
        model.eval()
        self.graph, self.state = nnx.split(model)
        self.config = config or {}
        self.crop = tuple(self.config.get("crop", TRAINING_IMAGE_CROP))
        self.markup_offset = self.markup_offset_for(markup)
        self._forward = jax.jit(_forward, static_argnums=0)

    def markup_offset_for(self, markup: str | None) -> np.ndarray:
        """Offset (68, 2) in normalised units from the network's own mark-up to `markup`'s
        (a data set it learnt beside its own; config.json's "markup_offsets")."""
        offsets = self.config.get("markup_offsets", {})
        if markup is None or markup == self.config.get("markup"):
            return np.zeros((NUM_KEYPOINTS, 2), np.float32)
        if markup not in offsets:
            known = [self.config.get("markup", "its own")] + sorted(offsets)
            raise ValueError(f"these weights know no mark-up {markup!r}; they know {', '.join(known)}")
        return np.asarray(offsets[markup], np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 224, 224) or (N, 224, 224, 1) uint8 -> (N, 68, 2) normalised keypoints (in `markup`)."""
        images = np.asarray(images, np.uint8).reshape(-1, INPUT_SIZE, INPUT_SIZE, 1)
        outputs = []
        for start in range(0, len(images), BATCH_SIZES[-1]):
            chunk = images[start : start + BATCH_SIZES[-1]]
            size = next(s for s in BATCH_SIZES if s >= len(chunk))
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.uint8)])
            outputs.append(np.asarray(self._forward(self.graph, self.state, padded))[: len(chunk)])
        return np.concatenate(outputs) + self.markup_offset if outputs else np.zeros((0, 68, 2), np.float32)

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
        """`photo`: anything read_photo takes, or a Photo it made (a large photo is
        worked on reduced); the result is in the original photo's pixels."""
        photo = photo if isinstance(photo, Photo) else read_photo(photo)
        gray = cv2.cvtColor(photo.rgb, cv2.COLOR_RGB2GRAY)
        boxes = self.detector(gray, max_faces)
        keypoints = self.model.keypoints_in_regions(gray, [crop_box(box, self.model.crop) for box in boxes])
        boxes, keypoints = boxes * np.tile(photo.scale, 2), keypoints * photo.scale
        return {
            "image": {"width": photo.width, "height": photo.height},
            "faces": [
                {"box": [round(float(v), 1) for v in box], "keypoints": np.round(points, 2).tolist()}
                for box, points in zip(boxes, keypoints)
            ],
        }
