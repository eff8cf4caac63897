"""Real and adversarial photo files for the inference and app tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from jaxkp.examples import compose_faces, example_paths
from jaxkp.inference import load_photo

ASTRONAUT, CAMERA = example_paths()


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def exif_rotated_astronaut(path: Path) -> Path:
    """The portrait stored sideways, with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    upright = Image.fromarray(load_photo(ASTRONAUT))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(stored, path, format="JPEG", exif=exif.tobytes())


def sixteen_bit_astronaut(path: Path) -> Path:
    gray = cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    cv2.imwrite(str(path), gray)
    return path


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(load_photo(ASTRONAUT)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def decompression_bomb(path: Path) -> Path:
    """A 12000x12000 PNG of a few kilobytes: 144 megapixels once decoded."""
    return save(Image.new("1", (12000, 12000)), path, format="PNG")


def zero_size_png(path: Path) -> Path:
    """A PNG whose header declares 0x0 pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def not_an_image(path: Path) -> Path:
    path.write_text("these are not the pixels you are looking for")
    return path


def five_faces(path: Path) -> Path:
    return save(Image.fromarray(compose_faces(5)), path, format="PNG")


BAD_FILES = {
    "not_an_image.png": (not_an_image, "not an image"),
    "truncated.jpg": (truncated_jpeg, "truncated"),
    "bomb.png": (decompression_bomb, "too large"),
    "zero.png": (zero_size_png, "empty"),
}
