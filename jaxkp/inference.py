"""From a photo to faces and keypoints: loading, the network, the pipeline.

One result format everywhere (API, CLI, Python), in original-image pixels,
faces ordered largest first:

    {"image": {"width": W, "height": H},
     "faces": [{"box": [x, y, w, h], "score": s, "keypoints": [[x0, y0], ..., [x67, y67]],
                "uncertainty": [u0, ..., u67], "pose": {"yaw": a, "pitch": b, "roll": c}}]}

`score` in [0, 1] is the network's confidence that the box holds a face (null
for weights without a face score); faces under the pipeline's `min_score` are
left out. `uncertainty` holds each keypoint's expected error in the photo's pixels
(68 floats; null for weights without that model; jaxkp.uncertainty). `pose` is
the head's pose in degrees (jaxkp.pose has the conventions).
"""

from __future__ import annotations

import functools
import io
import math
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import jax
import numpy as np
from flax import nnx
from PIL import Image, UnidentifiedImageError
from pillow_heif import register_heif_opener

from jaxkp.detect import FaceDetector, Faces, overlap
from jaxkp.gate import ProposalGate
from jaxkp.geometry import (
    DETECTOR_BOX_MEDIAN,
    MIRROR,
    TRAINING_IMAGE_CROP,
    box_framing_matrix,
    detector_box,
    image_pixels_per_unit,
    keypoints_to_image,
    upright_framings,
    warp_to_input,
)
from jaxkp.model import INPUT_SIZE, NUM_KEYPOINTS
from jaxkp.pose import head_pose
from jaxkp.uncertainty import PointUncertainty

register_heif_opener()  # iPhone photos (HEIC/HEIF), EXIF orientation included

# Photos larger than this are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
# And photos longer than this on a side: a decoder keeps a row pointer per row (a
# 1x64,000,000 PNG of 124 KB took 2.2 GB and 12 s), and no face is found in such a
# line of pixels anyway.
MAX_SIDE = 1_000_000
# And JPEGs of more scans than this: the decoder walks every block of the photo once a
# scan, reduced or not, and nothing else bounds their number (a 718 KB progressive JPEG
# of 4,000 scans took 34 s of a core). A progressive JPEG has about 10.
MAX_JPEG_SCANS = 100
# What Pillow calls a file that its JPEG decoder reads: a camera's multi-picture file (an
# APP2 "MPF" segment, then JPEG frames) opens as "MPO", and must meet the same scan limit
# and be decoded reduced like any JPEG (a raw-HTTP review found it skipping both).
JPEG_FORMATS = ("JPEG", "MPO")
# The formats a photo may come in (Pillow's openers; JPEG's also opens MPO files, and HEIF,
# iPhones' HEIC, is pillow_heif's).
# Pillow opens some forty more, and each is one more decoder a stranger's file reaches:
# a raw-HTTP review found a JPEG wrapped in a BLP texture skipping the scan limit (a 368 KB
# file: 8.5 s and 1.3 GB) and a 1 KB JPEG 2000 header costing 3.8 s and 1.2 GB. The rest
# are refused before any decoder runs.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "HEIF")
PHOTO_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, PPM/PGM or HEIC"
# TIFF may hold JPEG-compressed strips, decoded by libjpeg past the scan limit: refused.
TIFF_JPEG_COMPRESSIONS = ("jpeg", "tiff_jpeg")
# Layouts within the allowed formats whose decoding costs seconds for a small file (the
# fifth raw-HTTP review): Pillow decodes RLE BMPs in Python (a 33 KB 8000x8000 RLE8 BMP
# took 8.6 s), walks a TIFF strip by strip (a 4 MB TIFF of 1,000,000 one-row strips:
# 5.7 s) and a PNG chunk by chunk (2,000,000 empty chunks: 5.5 s). A photo has no RLE, a
# 12 MP TIFF a few thousand strips, a PNG some thousand chunks at most.
BMP_RLE_COMPRESSIONS = (1, 2)
MAX_TIFF_STRIPS = 65_536
MAX_PNG_CHUNKS = 50_000
# And (the sixth review): Pillow makes one Python object per value of a TIFF tag or an EXIF
# block (3,000,000 rationals, 24 MB: 7 s and 700 MB in a TIFF, a PNG's eXIf or a WebP's
# EXIF), and joins a GIF's comments in quadratic time (1,000,000 of them, 5 MB: 18.5 s). A
# TIFF tag holds one value per strip at most, a photo's EXIF tens of KB, a GIF a few
# extension blocks before its first image.
MAX_TIFF_TAG_VALUES = MAX_TIFF_STRIPS
MAX_EXIF_BYTES = 1_000_000
MAX_GIF_EXTENSION_BLOCKS = 1_000
# A JPEG's segments before its image (a photo has tens: APPn, DQT, DHT, SOF), and a
# binary PPM's header (a few numbers and perhaps a comment).
MAX_JPEG_HEADER_STEPS = 1_000
MAX_PPM_HEADER_BYTES = 4_096
# All of a TIFF's first directory's values together (a 12 MP TIFF's strip tables, colour
# map, ICC profile and XMP are a few MB): 2,500 tags sharing one 512 KB block took 7.5 s
# and 2.7 GB.
MAX_TIFF_TAG_BYTES = 16_000_000
TIFF_SUB_DIRECTORIES = (34665, 34853)  # the EXIF and GPS directories, which Pillow's TIFF reader also reads
TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                   16: 8, 17: 8, 18: 8}  # each value's bytes, by the entry's type
TIFF_PREFIXES = (b"II*\0", b"MM\0*", b"II\0*", b"MM*\0")  # Pillow opens the last two, byte order by the first two
# Larger photos are decoded reduced (JPEG: at decode time) to at most this many
# pixels; results are still given in the original photo's pixels. A 12 MP phone
# photo stays whole, and a face the detector can find keeps enough pixels.
WORKING_MAX_PIXELS = 12_000_000
MAX_FACES = 20
# The network reads at most this many proposals per photo (largest first): it
# bounds the cost of a photo full of false proposals.
MAX_PROPOSALS = 32
# Two faces whose keypoints' boxes overlap this much are one face found twice.
DUPLICATE_OVERLAP = 0.5
# A face whose eyes lean more than this many degrees from the turn it was shown at
# is read a second time, levelled (`second_look`). Under it a second look gains
# little, and an upright face, the common case, costs one network pass only.
SECOND_LOOK_MIN_TURN = 5.0
# With `second_look`, a proposal the first look scores between these and the threshold
# (a face framed badly, or no face) is read again levelled, and kept only when the
# second look is this sure: a second framing centres whatever the network took for a
# face, so it lifts false proposals' scores too, and needs the stricter bar. Measured
# on composites and the validation photos (README, "Finding faces").
SECOND_LOOK_MIN_SCORE = 0.3
SECOND_LOOK_SURE = 0.98
# Fixed batch sizes: any face count is read in calls of these sizes (batch_plan), so no
# new shape recompiles.
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
# What one network call costs beyond its faces, in faces: a face costs 3.3 ms in a batch
# of 8 and a lone face 6.1 ms on an idle 2-core machine (docs/results.md), so a call
# costs about 0.9 faces more. Padding a batch costs nearly a whole face per empty slot
# (docs/speed-profile.md, "Padding"), so 5 faces go as 4 + 1 rather than 8.
CALL_COST_IN_FACES = 0.9


def batch_plan(count: int) -> list[int]:
    """The batch sizes (from BATCH_SIZES, largest first) that read `count` faces at the
    least cost (CALL_COST_IN_FACES per call, one per slot, padded slots included)."""
    best: list[tuple[float, list[int]]] = [(0.0, [])]
    for needed in range(1, count + 1):
        best.append(min((best[max(0, needed - size)][0] + CALL_COST_IN_FACES + size,
                         sorted(best[max(0, needed - size)][1] + [size], reverse=True)) for size in BATCH_SIZES))
    return best[count][1]

# EXIF orientations that swap width and height, and how each is undone. Only the
# orientation is read from a photo's EXIF, by _exif_orientation: Pillow's own reader
# (getexif, exif_transpose) copies each entry's data, so 1 MB of EXIF whose thousand
# entries all point at the same bytes cost 0.8 s and 1.2 GB, and a 15 KB PNG whose
# compressed text chunk held such EXIF 1.7 s and 2 GB (the seventh review).
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
ORIENTATION_TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                          6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class ImageError(ValueError):
    """A file that cannot be used as a photo; the message says why."""


@dataclass
class Photo:
    """A decoded photo, possibly reduced, and the size of the original (EXIF orientation applied)."""

    pixels: np.ndarray  # uint8, the working pixels: (h, w, 3) RGB, or (h, w) gray if read as gray
    width: int
    height: int

    @property
    def rgb(self) -> np.ndarray:
        return self.pixels if self.pixels.ndim == 3 else cv2.cvtColor(self.pixels, cv2.COLOR_GRAY2RGB)

    @property
    def gray(self) -> np.ndarray:
        return self.pixels if self.pixels.ndim == 2 else cv2.cvtColor(self.pixels, cv2.COLOR_RGB2GRAY)

    @property
    def scale(self) -> np.ndarray:
        """Original pixels per working pixel, (x, y)."""
        return np.array([self.width / self.pixels.shape[1], self.height / self.pixels.shape[0]])


def load_photo(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """Any photo -> RGB uint8 array at full size, EXIF orientation applied.

    Accepts a path, encoded bytes (JPEG, PNG, WebP, HEIC, ...), a PIL image or an
    array (grayscale, RGB, RGBA; uint8 or 16-bit). Raises ImageError for an empty
    or non-image file, a truncated file, a decompression bomb or an empty image.
    """
    return read_photo(source, max_pixels=None).rgb


def read_photo(source: str | Path | bytes | Image.Image | np.ndarray,
               max_pixels: int | None = WORKING_MAX_PIXELS, refuse_over: int = MAX_PIXELS,
               gray: bool = False) -> Photo:
    """As load_photo, but a photo over `max_pixels` is decoded reduced: a JPEG at
    1/2, 1/4 or 1/8 scale by its decoder, which never builds the full image, then
    any photo resized to fit. Memory and time follow the working size. A photo over
    `refuse_over` pixels is refused from its header, before any decoding.

    `gray`: the photo is wanted in gray only (face finding and keypoints need no
    colour), and a colour JPEG is decoded as its luma channel alone, which skips
    the decoder's colour work: a 4000x3000 JPEG took 186 ms as RGB, 49 ms so
    (docs/speed-profile.md, section 8). Other formats are made RGB and then gray."""
    if isinstance(source, np.ndarray):
        height, width = source.shape[:2]
        return _working_photo(_array_to_rgb(source, max_pixels), width, height, max_pixels, gray)
    if isinstance(source, (str, Path)):
        source = _read_file(source)  # once: the layout checks, the scan count and Pillow all read these bytes
    image = source if isinstance(source, Image.Image) else _open_image(source)
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"image is empty ({width}x{height} pixels)")
    if width * height > refuse_over:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {refuse_over / 1e6:g} megapixels)")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"image too long: {width}x{height} pixels (a side may be at most {MAX_SIDE:,} pixels)")
    if image.format in JPEG_FORMATS and not isinstance(source, Image.Image):
        scans = _jpeg_scans(source)
        if scans > MAX_JPEG_SCANS:
            raise ImageError(f"this JPEG has {scans} scans (at most {MAX_JPEG_SCANS} are read; a progressive JPEG "
                             f"has about 10)")
    try:
        if image.format in JPEG_FORMATS:
            shrink = 1.0 if max_pixels is None else min(1.0, math.sqrt(max_pixels / (width * height)))
            luma_only = gray and image.mode in ("RGB", "YCbCr")
            if shrink < 1.0 or luma_only:
                image.draft("L" if luma_only else image.mode,
                            (math.ceil(image.size[0] * shrink), math.ceil(image.size[1] * shrink)))
        image.load()  # (a PNG's eXIf may follow its pixels)
        orientation = _orientation(image)
        if orientation in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        if orientation in ORIENTATION_TRANSPOSES:
            image = image.transpose(ORIENTATION_TRANSPOSES[orientation])
        if max_pixels is not None and image.size[0] * image.size[1] > max_pixels:
            if image.mode not in REDUCIBLE_MODES and image.mode not in WIDE_MODES:
                image = image.convert("RGB")  # palette and 1-bit: their values are no intensities
            if image.mode in REDUCIBLE_MODES:
                image = image.reduce(_reduction(image.size, max_pixels))
        if image.mode in WIDE_MODES:
            pixels = _array_to_rgb(np.asarray(image), max_pixels)
        elif gray and image.mode == "L":
            pixels = np.asarray(image)
        else:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image is truncated or corrupt: {error}") from None
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow's decoders raise many kinds on damaged files
        raise ImageError(f"image is truncated or corrupt ({type(error).__name__})") from None
    return _working_photo(pixels, width, height, max_pixels, gray)


def _working_photo(pixels: np.ndarray, width: int, height: int, max_pixels: int | None, gray: bool) -> Photo:
    """The decoded `pixels` fitted to `max_pixels` (then made gray, on the smaller copy, if asked)."""
    photo = Photo(_fit(pixels, max_pixels), width, height)
    return Photo(photo.gray, width, height) if gray else photo


# Modes whose whole-photo copy (a PNG, WebP or TIFF has no reduced decoding) is box-reduced
# in Pillow before it is made RGB and copied out: a 64-megapixel PNG otherwise costs about
# a gigabyte in copies. (Palette images are not: their values are indices.)
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F")
# More than 8 bits a value: made 8-bit by _array_to_rgb.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _reduction(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """Whole factors (x, y) that bring a photo of `size` within `max_pixels` (1, 1 if it
    is): the same both ways, except along a side too thin to take it."""
    width, height = size
    if width * height <= max_pixels:
        return 1, 1
    factor = math.ceil(math.sqrt(width * height / max_pixels))
    across, down = min(factor, width), min(factor, height)
    if across < factor:  # a strip too thin across: its length takes the rest
        down = min(height, math.ceil(math.ceil(width / across) * height / max_pixels))
    elif down < factor:
        across = min(width, math.ceil(math.ceil(height / down) * width / max_pixels))
    return across, down


def _jpeg_scans(data: bytes) -> int:
    """How many scans (start-of-scan markers) a JPEG holds, its embedded thumbnails' too:
    inside a scan's coded data a 0xFF byte is followed by 0x00 or a restart marker, never
    by 0xDA, so each 0xFF 0xDA starts a scan."""
    return data.count(b"\xff\xda")


def _read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"file not found: {path}") from None
    except OSError as error:
        raise ImageError(f"cannot read image: {error}") from None


def _open_image(data: bytes) -> Image.Image:
    refusal = _costly_layout(data)
    if refusal:
        raise ImageError(refusal)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit refuses bombs with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(_describe_unreadable(data)) from None
    except Image.DecompressionBombError:
        # Pillow's own refusal, far past MAX_PIXELS; said in this module's words.
        raise ImageError(f"image too large (limit {MAX_PIXELS / 1e6:g} megapixels)") from None
    except OSError as error:
        raise ImageError(f"cannot read image: {error}") from None
    except Exception as error:  # noqa: BLE001 - a damaged header raises ValueError, IndexError, ...
        raise ImageError(f"image is truncated or corrupt ({type(error).__name__})") from None
    if image.format == "TIFF" and image.info.get("compression") in TIFF_JPEG_COMPRESSIONS:
        raise ImageError("a TIFF of JPEG-compressed pixels is not read; save the photo as a JPEG")
    if image.format == "BMP" and image.info.get("compression") in BMP_RLE_COMPRESSIONS:
        raise ImageError("an RLE-compressed BMP is not read; save the photo as a PNG or JPEG")
    return image


def _orientation(image: Image.Image) -> int:
    """A photo's EXIF orientation (1 to 8; 1 when it has none): a TIFF's own tag, or the
    Orientation entry of the EXIF block a JPEG, PNG, WebP or HEIC carries."""
    if image.format == "TIFF":
        value = image.tag_v2.get(274, 1)
    else:
        value = _exif_orientation(image.info.get("exif"))
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _exif_orientation(exif: bytes | None) -> int:
    """The Orientation entry (0x0112, one SHORT) of an EXIF block's first directory, read
    alone (1 when absent or unreadable)."""
    if not isinstance(exif, bytes):
        return 1
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    if exif[:2] not in (b"II", b"MM"):
        return 1
    order = _byte_order(exif)
    try:
        for tag, kind, count, value in _ifd_entries(exif, order, struct.unpack_from(order + "I", exif, 4)[0], 4096):
            if tag == 0x0112 and kind == 3 and count == 1:
                return _inline_number(kind, value, order)
    except struct.error:
        return 1
    return 1


def _byte_order(data: bytes) -> str:
    """A TIFF header's (or an EXIF block's) byte order, for struct: "II" little-endian."""
    return "<" if data[:2] == b"II" else ">"


def _ifd_entries(data: bytes, order: str, offset: int, at_most: int = 65_536) -> Iterator[tuple[int, int, int, int]]:
    """The entries of the TIFF directory (IFD) at `offset`, up to `at_most`: (tag, type,
    count, value field as an unsigned int). struct.error past the data, after the
    entries read so far."""
    for index in range(min(struct.unpack_from(order + "H", data, offset)[0], at_most)):
        yield struct.unpack_from(order + "HHII", data, offset + 2 + 12 * index)


def _inline_number(kind: int, value: int, order: str) -> int:
    """A single SHORT (type 3) or LONG held in an entry's value field (a SHORT fills the
    field's first two bytes)."""
    if kind != 3:
        return value
    return value >> 16 if order == ">" else value & 0xFFFF


def _costly_layout(data: bytes) -> str | None:
    """Why a photo is refused before Pillow opens it, or None. Pillow reads headers in
    Python, a marker, chunk, block or byte at a time (7 s for a PNG of 2,000,000 chunks,
    3 s for a TIFF of 1,000,000 strips, 4.7 s for a JPEG of 5,000,000 empty segments, 4 s
    for a PPM header of 20 MB of comment), and some decoders take far more memory than
    the file says (an animated WebP of 96 bytes: 1.2 GB)."""
    if data.startswith(b"\xff\xd8"):
        segments = _jpeg_header_steps(data, MAX_JPEG_HEADER_STEPS + 1)
        if segments > MAX_JPEG_HEADER_STEPS:
            return f"this JPEG has more than {MAX_JPEG_HEADER_STEPS:,} header segments or fill bytes before its image"
    elif data[:2] in (b"P1", b"P2", b"P3", b"P7"):
        return "a plain-text PPM/PGM/PBM (or a PAM) is not read; save the photo as a binary PPM, PNG or JPEG"
    elif data[:2] in (b"P4", b"P5", b"P6") and not _ppm_header_ends_within(data, MAX_PPM_HEADER_BYTES):
        return f"this PPM's header is longer than {MAX_PPM_HEADER_BYTES:,} bytes"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        chunks = _png_chunks(data, MAX_PNG_CHUNKS + 1)
        if len(chunks) > MAX_PNG_CHUNKS:
            return f"this PNG has more than {MAX_PNG_CHUNKS:,} chunks"
        if max((length for kind, length in chunks if kind == b"eXIf"), default=0) > MAX_EXIF_BYTES:
            return f"this PNG's EXIF block is over {MAX_EXIF_BYTES / 1e6:g} MB"
    elif data[:4] in (b"II+\0", b"MM\0+"):
        return "a BigTIFF is not read; save the photo as a TIFF, PNG or JPEG"
    elif data[:4] in TIFF_PREFIXES:
        directories = _tiff_directories(data)
        values, value_bytes = _tiff_values(directories)
        if values > MAX_TIFF_TAG_VALUES:
            return f"this TIFF has a tag of {values:,} values (at most {MAX_TIFF_TAG_VALUES:,} strips are read)"
        if value_bytes > MAX_TIFF_TAG_BYTES:
            return f"this TIFF's tags hold {value_bytes / 1e6:.0f} MB (at most {MAX_TIFF_TAG_BYTES / 1e6:g} MB)"
        if tile := _tiff_tile_too_large(directories[0] if directories else []):
            return f"this TIFF's tiles ({tile[0]}x{tile[1]} pixels) are far larger than its image"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        if max((length for kind, length in _riff_chunks(data) if kind == b"EXIF"), default=0) > MAX_EXIF_BYTES:
            return f"this WebP's EXIF block is over {MAX_EXIF_BYTES / 1e6:g} MB"
        if data[12:16] == b"VP8X" and len(data) >= 30 and data[20] & 0x02:  # an animation: its canvas
            width, height = int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            if width * height > WORKING_MAX_PIXELS:
                return (f"an animated WebP of {width}x{height} pixels is not read (at most "
                        f"{WORKING_MAX_PIXELS / 1e6:g} megapixels)")
    elif data[:3] == b"GIF" and _gif_extension_blocks(data, MAX_GIF_EXTENSION_BLOCKS + 1) > MAX_GIF_EXTENSION_BLOCKS:
        return f"this GIF has more than {MAX_GIF_EXTENSION_BLOCKS:,} extension blocks before its image"
    return None


def _tiff_tile_too_large(entries: list[tuple[int, int, int, int]]) -> tuple[int, int] | None:
    """A tile that a TIFF's first directory (`entries`, its numbers read inline) declares,
    if it is larger than its image needs (more than four times its area, and over a
    megapixel): libtiff decodes whole tiles, so a 16x16 image of one 24,576x24,576 tile
    took 4.9 s and 1.9 GB."""
    inline = {tag: value for tag, kind, count, value in entries if tag in (256, 257, 322, 323) and count == 1
              and kind in (3, 4)}
    if 322 not in inline or 323 not in inline:
        return None
    tile, image = inline[322] * inline[323], inline.get(256, 0) * inline.get(257, 0)
    return (inline[322], inline[323]) if tile > max(4 * image, 1 << 20) else None


def _tiff_directories(data: bytes) -> list[list[tuple[int, int, int, int]]]:
    """The entries of a TIFF's first directory and of the EXIF and GPS directories it
    points to (which Pillow's reader also reads), SHORT and LONG values read inline; on a
    damaged header, what was read before the damage (Pillow names the damage)."""
    order = _byte_order(data)
    directories: list[list[tuple[int, int, int, int]]] = []
    try:
        offsets = [struct.unpack_from(order + "I", data, 4)[0]]
        for offset in offsets:
            entries: list[tuple[int, int, int, int]] = []
            directories.append(entries)
            for tag, kind, count, value in _ifd_entries(data, order, offset):
                entries.append((tag, kind, count, _inline_number(kind, value, order) if count == 1 else value))
                if tag in TIFF_SUB_DIRECTORIES and count == 1 and len(offsets) < 3 and value not in offsets:
                    offsets.append(value)
    except struct.error:
        pass
    return directories


def _tiff_values(directories: list[list[tuple[int, int, int, int]]]) -> tuple[int, int]:
    """The most values any entry of a TIFF's `directories` declares (a strip's or tile's
    offset each, for StripOffsets and TileOffsets), but a ColorMap (3 x 2**bits at most),
    and the bytes all their entries' values take (Pillow reads all three directories, and
    copies each entry's values even when they all point at the same bytes: 2,500 EXIF
    entries sharing 512 KB took 1.4 GB)."""
    declared = [entry for entries in directories for entry in entries]
    value_bytes = sum(count * TIFF_TYPE_BYTES.get(kind, 1) for _, kind, count, _ in declared)
    # Values that Pillow makes an object each: numbers, not bytes or text (a MakerNote may be 100 KB).
    numbers = (count for tag, kind, count, _ in declared if tag != 320 and kind not in (1, 2, 6, 7))
    return max(numbers, default=0), value_bytes


def _png_chunks(data: bytes, at_most: int) -> list[tuple[bytes, int]]:
    """A PNG's chunks (type, length), up to `at_most` of them (each is a length, a type, its
    data and a checksum; the walk stops at IEND, the end, or `at_most`)."""
    position, chunks = 8, []
    while position + 8 <= len(data) and len(chunks) < at_most:
        kind, length = data[position + 4 : position + 8], int.from_bytes(data[position : position + 4], "big")
        chunks.append((kind, length))
        if kind == b"IEND":
            break
        position += 12 + length
    return chunks


def _riff_chunks(data: bytes) -> list[tuple[bytes, int]]:
    """A RIFF file's (WebP's) top-level chunks: (type, length)."""
    position, chunks = 12, []
    while position + 8 <= len(data) and len(chunks) < MAX_PNG_CHUNKS:
        kind, length = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        chunks.append((kind, length))
        position += 8 + length + (length & 1)
    return chunks


def _gif_extension_blocks(data: bytes, at_most: int) -> int:
    """How many extension sub-blocks a GIF holds before its first image, counted up to
    `at_most` (after the header and colour table: 0x21, a label, then sub-blocks of a
    length byte and that many bytes up to a 0; 0x2C starts an image)."""
    if len(data) < 13:
        return 0
    position = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)  # the global colour table
    blocks = 0
    while position < len(data) and data[position] not in (0x2C, 0x3B) and blocks < at_most:
        if data[position] != 0x21:  # a stray byte: Pillow skips it, one at a time
            blocks += 1
            position += 1
            continue
        position += 2
        while position < len(data) and data[position] and blocks < at_most:
            blocks += 1
            position += 1 + data[position]
        position += 1
    return blocks


def _jpeg_header_steps(data: bytes, at_most: int) -> int:
    """How many marker segments and stray bytes a JPEG has before its first scan, counted
    up to `at_most` (Pillow reads them in Python, keeping each APP segment)."""
    position, steps = 2, 0
    while position + 4 <= len(data) and steps < at_most:
        steps += 1
        if data[position] != 0xFF:  # a stray byte (or a fill byte below): read one at a time
            position += 1
            continue
        marker = data[position + 1]
        if marker == 0xDA:
            break
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            position += 1 if marker == 0xFF else 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return steps


def _ppm_header_ends_within(data: bytes, limit: int) -> bool:
    """Whether a binary PPM/PGM/PBM's header (magic, width, height and, but for P4, the
    maximum value, each after whitespace or comments) ends within `limit` bytes (a
    damaged header within them is left for Pillow to name)."""
    end = min(len(data), limit)
    position, tokens = 2, 0
    while tokens < (2 if data[:2] == b"P4" else 3):
        while position < end and (data[position] in b" \t\r\n\x0b\x0c" or data[position] == 0x23):
            if data[position] == 0x23:  # a comment, to the line's end
                newline = data.find(b"\n", position, end)
                if newline < 0:
                    return len(data) < limit
                position = newline + 1
            else:
                position += 1
        start = position
        while position < end and data[position] in b"0123456789":
            position += 1
        if position == start:
            return position < end or len(data) < limit
        tokens += 1
    return position < limit


def _fit(rgb: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """`rgb` shrunk (area-averaged) to at most `max_pixels`, or as it is."""
    height, width = rgb.shape[:2]
    if max_pixels is None or width * height <= max_pixels:
        return rgb
    shrink = math.sqrt(max_pixels / (width * height))
    new_width, new_height = max(1, int(width * shrink)), max(1, int(height * shrink))
    # A strip one pixel thin keeps its pixel; its length then shrinks further, to the budget.
    new_width = min(new_width, max(1, max_pixels // new_height))
    new_height = min(new_height, max(1, max_pixels // new_width))
    return cv2.resize(rgb, (new_width, new_height), interpolation=cv2.INTER_AREA)


IMAGE_SIGNATURES = {
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def _describe_unreadable(data: bytes) -> str:
    """Why PIL could not identify a file: empty, not an image at all, or a damaged one."""
    head = data[:32]
    if not head:
        return "the file is empty (0 bytes)"
    kind = next((name for magic, name in IMAGE_SIGNATURES.items() if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "HEIC/HEIF"
    if kind is None:
        return f"not an image file in a format read here ({PHOTO_FORMAT_NAMES})"
    if kind == "PNG" and len(head) >= 24:
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width == 0 or height == 0:
            return f"image is empty ({width}x{height} pixels)"
    return f"damaged {kind} file: its header cannot be read"


def _array_to_rgb(array: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """Any array image -> RGB uint8. One of more than `max_pixels` that is not uint8 is first
    subsampled to about that size, so that its float copy is small (a 64-megapixel 16-bit
    PNG once took 1.8 GB here)."""
    if array.size == 0:
        raise ImageError(f"image is empty (shape {array.shape})")
    if array.dtype != np.uint8:
        if max_pixels is not None and array.ndim >= 2 and array.shape[0] * array.shape[1] > max_pixels:
            step = math.ceil(math.sqrt(array.shape[0] * array.shape[1] / max_pixels))
            array = array[::step, ::step]
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
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


def _forward(graph: nnx.GraphDef, state: nnx.State, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    inputs = images.astype(jax.numpy.float32) / 127.5 - 1.0
    model = nnx.merge(graph, state)
    if hasattr(model, "readout"):
        return model.readout(inputs)
    keypoints = model(inputs)
    return keypoints, jax.numpy.zeros((len(inputs), 0)), jax.numpy.zeros((len(inputs), 0))


@dataclass
class FaceScore:
    """Logistic regression on the network's face evidence (HeatmapNet.keypoints_and_evidence),
    fitted by `python -m train.face_score` and kept in config.json ("face_score")."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float  # the default min_score

    @classmethod
    def from_config(cls, values: dict[str, Any] | None) -> FaceScore | None:
        if not values:
            return None
        return cls(np.asarray(values["mean"], np.float32), np.asarray(values["scale"], np.float32),
                   np.asarray(values["weights"], np.float32), float(values["bias"]), float(values["threshold"]))

    def __call__(self, evidence: np.ndarray) -> np.ndarray:
        logits = ((evidence - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))


@dataclass
class FaceReading:
    """What the network read from the faces it was shown, in photo pixels."""

    keypoints: np.ndarray  # (N, 68, 2)
    scores: np.ndarray | None  # (N,) in [0, 1]; None for weights without a face score
    # (N, 68) each point's expected error in pixels (jaxkp.uncertainty); None for
    # weights without an uncertainty model.
    uncertainty: np.ndarray | None = None

    def take(self, indices: np.ndarray) -> FaceReading:
        return FaceReading(self.keypoints[indices], None if self.scores is None else self.scores[indices],
                           None if self.uncertainty is None else self.uncertainty[indices])

    @staticmethod
    def concatenate(readings: list[FaceReading]) -> FaceReading:
        def joined(name: str) -> np.ndarray | None:
            parts = [getattr(reading, name) for reading in readings]
            return None if any(part is None for part in parts) else np.concatenate(parts)
        return FaceReading(np.concatenate([r.keypoints for r in readings]), joined("scores"), joined("uncertainty"))


class KeypointModel:
    """A network in eval mode behind one jitted forward per fixed batch size."""

    def __init__(self, model: nnx.Module, config: dict[str, Any] | None = None, markup: str | None = None):
        model.eval()
        self.graph, self.state = nnx.split(model)
        self.config = config or {}
        self.crop = tuple(self.config.get("crop", TRAINING_IMAGE_CROP))
        self.markup_offset = self.markup_offset_for(markup)
        self.face_score = FaceScore.from_config(self.config.get("face_score"))
        self.uncertainty = PointUncertainty.from_config(self.config.get("uncertainty"))
        # The proposal gate fitted to these weights (jaxkp.gate; set by jaxkp.weights.load_model
        # from the weights' folder); None: every proposal gets a full read.
        self.gate: ProposalGate | None = None
        # Read each face and its mirror image and average the two (the mirror's points
        # swapped left for right): 2-3 % lower error for twice the network's time
        # (docs/results.md, "Flip averaging"); `thorough` pipelines turn it on.
        self.flip_average = False
        # The graph is closed over, not passed as a static argument: jit would hash it on
        # every call (0.7 ms, docs/speed-profile.md).
        self._forward = jax.jit(functools.partial(_forward, self.graph))

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

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 224, 224) or (N, 224, 224, 1) uint8 -> normalised keypoints (N, 68, 2) (in
        `markup`) and the face evidence (N, E) (E = 0 for networks without it)."""
        keypoints, evidence, _ = self.readout(images)
        return keypoints, evidence

    def readout(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """predict's keypoints and evidence, and each point's heatmap spread (N, 68) in
        normalised units ((N, 0) for networks without heatmaps)."""
        images = np.asarray(images, np.uint8).reshape(-1, INPUT_SIZE, INPUT_SIZE, 1)
        if self.flip_average and len(images):
            keypoints, evidence, spread = self._read(np.concatenate([images, images[:, :, ::-1]]))
            count = len(images)
            mirrored = keypoints[count:, MIRROR] * np.array([-1.0, 1.0], np.float32)
            # The face score was fitted on plain reads: its evidence stays the plain one.
            return ((keypoints[:count] + mirrored) / 2 + self.markup_offset, evidence[:count],
                    (spread[:count] + spread[count:, MIRROR]) / 2 if spread.shape[1] else spread[:count])
        keypoints, evidence, spread = self._read(images)
        return keypoints + self.markup_offset, evidence, spread

    def _read(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network's raw outputs (its own mark-up) for (N, 224, 224, 1) uint8 inputs."""
        keypoints, evidence, spread = [], [], []
        start = 0
        for size in batch_plan(len(images)):
            chunk = images[start : start + size]
            start, real = start + len(chunk), len(chunk)
            if real < size:
                chunk = np.concatenate([chunk, np.zeros((size - real, *chunk.shape[1:]), np.uint8)])
            outputs = self._forward(self.state, chunk)
            for gathered, output in zip((keypoints, evidence, spread), outputs):
                gathered.append(np.asarray(output)[:real])
        if not keypoints:
            return (np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros((0, 0), np.float32),
                    np.zeros((0, 0), np.float32))
        return np.concatenate(keypoints), np.concatenate(evidence), np.concatenate(spread)

    def expected_errors(self, evidence: np.ndarray, spread: np.ndarray) -> np.ndarray | None:
        """Each point's expected error (N, 68) in normalised units from readout's evidence
        and spread (jaxkp.uncertainty); None for weights without that model."""
        if self.uncertainty is None or spread.ndim != 2 or not spread.shape[1]:
            return None
        return self.uncertainty(spread, evidence[:, :NUM_KEYPOINTS])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 224, 224) or (N, 224, 224, 1) uint8 -> (N, 68, 2) normalised keypoints (in `markup`)."""
        return self.predict(images)[0]

    def read_faces(self, gray: np.ndarray, boxes: np.ndarray, angles: np.ndarray | None = None) -> FaceReading:
        """Keypoints in `gray`'s pixels and face scores for faces in boxes (N, 4) (the
        frontal-default framing), each turned upright by its angle before the network sees it."""
        angles = np.zeros(len(boxes)) if angles is None else angles
        matrices = [box_framing_matrix(box, self.crop, angle) for box, angle in zip(boxes, angles)]
        if not matrices:
            return FaceReading(np.zeros((0, NUM_KEYPOINTS, 2)), None if self.face_score is None else np.zeros(0),
                               None if self.uncertainty is None else np.zeros((0, NUM_KEYPOINTS)))
        normalised, evidence, spread = self.readout(np.stack([warp_to_input(gray, matrix) for matrix in matrices]))
        keypoints = np.stack([keypoints_to_image(p, m) for p, m in zip(normalised, matrices)])
        expected = self.expected_errors(evidence, spread)
        if expected is not None:
            expected = expected * np.array([image_pixels_per_unit(m) for m in matrices])[:, None]
        return FaceReading(keypoints, None if self.face_score is None else self.face_score(evidence), expected)


def keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """(N, 4) the boxes the frontal cascade would place on faces with these keypoints."""
    return np.array([detector_box(points, DETECTOR_BOX_MEDIAN) for points in keypoints]).reshape(-1, 4)


def without_duplicates(reading: FaceReading, order: np.ndarray) -> np.ndarray:
    """Indices (from `order`, best first) of the faces left when a face whose keypoints
    overlap a better one's is dropped: two proposals of one face give one face."""
    boxes = keypoint_boxes(reading.keypoints)
    kept: list[int] = []
    for index in order:
        if not kept or overlap(boxes[index], boxes[kept]).max() < DUPLICATE_OVERLAP:
            kept.append(int(index))
    return np.array(kept, int)


def kept_by_score(reading: FaceReading, threshold: float) -> np.ndarray:
    """Indices of the faces a threshold keeps, one per face, best score first (without
    scores, in the given order: the detector's, largest first)."""
    if reading.scores is None:
        return without_duplicates(reading, np.arange(len(reading.keypoints)))
    order = np.argsort(-reading.scores, kind="stable")
    return without_duplicates(reading, order[reading.scores[order] >= threshold])


@dataclass
class FoundFaces:
    """The faces a pipeline kept, largest first, in the working photo's pixels."""

    faces: Faces  # where the network read each face (with `second_look`, its second framing)
    reading: FaceReading
    # Before the score and the duplicate check: the detector's proposals and what the
    # network's first look read from each (for evaluation of each stage).
    proposals: Faces
    proposal_reading: FaceReading


@dataclass
class FaceKeypointPipeline:
    """Photo in, result dict out: detector, framing, network, face score."""

    model: KeypointModel
    detector: FaceDetector
    # Faces the network scores under this are left out; None: the weights' own default.
    min_score: float | None = None
    # Read leaning faces a second time, levelled (look_again); None: the weights' own
    # setting (config.json "second_look": set where it was measured to help).
    second_look: bool | None = None
    # Let the weights' proposal gate (jaxkp.gate) pick which proposals get a full read;
    # `thorough` pipelines read them all.
    gated: bool = True

    @classmethod
    def create(cls, model: KeypointModel, min_score: float | None = None) -> FaceKeypointPipeline:
        return cls(model, FaceDetector(), min_score)

    def compile(self) -> None:
        """Every fixed batch shape of the network and of its gate compiled now, so that no
        photo waits for a compile (about 0.5 s a shape on 2 cores): for a server's start."""
        for size in BATCH_SIZES:
            self.model.predict(np.zeros((size, INPUT_SIZE, INPUT_SIZE), np.uint8))
        if self.gated and self.model.gate is not None:
            self.model.gate.compile()

    @property
    def threshold(self) -> float:
        if self.min_score is not None:
            return self.min_score
        return self.model.face_score.threshold if self.model.face_score else 0.0

    @property
    def looks_twice(self) -> bool:
        if self.second_look is not None:
            return self.second_look
        return bool(self.model.config.get("second_look", False))

    def find_faces(self, gray: np.ndarray, max_faces: int = MAX_FACES, min_score: float | None = None) -> FoundFaces:
        """Proposals (those the gate passes) -> keypoints and scores -> faces over the
        threshold, one per face, largest first (with `second_look`: leaning faces read again levelled, and
        borderline proposals read again and kept when the second look is sure)."""
        proposals = self.detector(gray, MAX_PROPOSALS)
        if self.gated and self.model.gate is not None:
            proposals = proposals.take(self.model.gate.passing(gray, proposals.boxes, proposals.angles))
        reading = self.model.read_faces(gray, proposals.boxes, proposals.angles)
        faces, kept_reading = self.judge(gray, proposals, reading, min_score, max_faces)
        return FoundFaces(faces, kept_reading, proposals, reading)

    def judge(self, gray: np.ndarray, proposals: Faces, reading: FaceReading, min_score: float | None = None,
              max_faces: int = MAX_FACES) -> tuple[Faces, FaceReading]:
        """The faces kept of `proposals`, which the network's first look read as `reading`
        (FoundFaces.faces and .reading)."""
        threshold = self.threshold if min_score is None else min_score
        kept = kept_by_score(reading, threshold)
        faces = proposals.take(kept)
        kept_reading = reading.take(kept)
        if self.looks_twice:
            faces, kept_reading = self.look_again(gray, faces, kept_reading)
            faces, kept_reading = self.rescue(gray, proposals, reading, threshold, faces, kept_reading)
        order = np.argsort(-(faces.boxes[:, 2] * faces.boxes[:, 3]), kind="stable")[:max_faces]
        return faces.take(order), kept_reading.take(order)

    def rescue(self, gray: np.ndarray, proposals: Faces, reading: FaceReading, threshold: float,
               faces: Faces, kept: FaceReading) -> tuple[Faces, FaceReading]:
        """`faces` (read as `kept`) and the borderline proposals that a levelled second
        look is sure of (SECOND_LOOK_SURE), unless they are one of `faces` again."""
        if reading.scores is None:
            return faces, kept
        borderline = np.flatnonzero((reading.scores >= SECOND_LOOK_MIN_SCORE) & (reading.scores < threshold))
        if not len(borderline):
            return faces, kept
        boxes, turns = upright_framings(reading.keypoints[borderline])
        second = self.model.read_faces(gray, boxes, turns)
        sure = np.flatnonzero(second.scores >= max(SECOND_LOOK_SURE, threshold))
        sure = sure[np.argsort(-second.scores[sure], kind="stable")]
        taken, second_boxes = keypoint_boxes(kept.keypoints), keypoint_boxes(second.keypoints)
        rescued = []
        for index in sure:
            if not len(taken) or overlap(second_boxes[index], taken).max() < DUPLICATE_OVERLAP:
                rescued.append(index)
                taken = np.concatenate([taken, second_boxes[index][None]])
        if not rescued:
            return faces, kept
        found = Faces(boxes[rescued], turns[rescued], proposals.sources[borderline[rescued]])
        return Faces.concatenate([faces, found]), FaceReading.concatenate([kept, second.take(np.array(rescued))])

    def look_again(self, gray: np.ndarray, faces: Faces, reading: FaceReading) -> tuple[Faces, FaceReading]:
        """The faces that lean, read a second time levelled and framed from their first
        keypoints as the detector frames an upright face: a proposal's box, and its
        source's fixed turn, frame a leaning face only roughly. The first look's score
        stands: the score was fitted on crops as the detector frames them, and a second
        framing, which centres whatever the network took for a face, lifts false
        proposals' scores too."""
        if not len(faces):
            return faces, reading
        boxes, turns = upright_framings(reading.keypoints)
        again = np.flatnonzero(np.abs(turns - faces.angles) > SECOND_LOOK_MIN_TURN)
        if not len(again):
            return faces, reading
        second = self.model.read_faces(gray, boxes[again], turns[again])
        framed = Faces(faces.boxes.copy(), faces.angles.astype(float), faces.sources)
        framed.boxes[again], framed.angles[again] = boxes[again], turns[again]
        keypoints = reading.keypoints.copy()
        keypoints[again] = second.keypoints
        uncertainty = None
        if reading.uncertainty is not None and second.uncertainty is not None:
            uncertainty = reading.uncertainty.copy()
            uncertainty[again] = second.uncertainty
        return framed, FaceReading(keypoints, reading.scores, uncertainty)

    def __call__(self, photo: Any, max_faces: int = MAX_FACES, min_score: float | None = None) -> dict[str, Any]:
        """`photo`: anything read_photo takes, or a Photo it made (a large photo is
        worked on reduced); the result is in the original photo's pixels."""
        photo = photo if isinstance(photo, Photo) else read_photo(photo, gray=True)
        gray = photo.gray
        found = self.find_faces(gray, max_faces, min_score)
        boxes, keypoints = found.faces.boxes * np.tile(photo.scale, 2), found.reading.keypoints * photo.scale
        scores = found.reading.scores if found.reading.scores is not None else [None] * len(boxes)
        uncertainty = ([None] * len(boxes) if found.reading.uncertainty is None
                       else found.reading.uncertainty * float(np.mean(photo.scale)))
        # Pose from the keypoints in the original photo's pixels: its size places the camera.
        return {
            "image": {"width": photo.width, "height": photo.height},
            "faces": [
                {"box": [round(float(v), 1) for v in box],
                 "score": None if score is None else round(float(score), 3),
                 "keypoints": np.round(points, 2).tolist(),
                 "uncertainty": None if expected is None else np.round(expected, 2).tolist(),
                 "pose": head_pose(points, (photo.width, photo.height))}
                for box, score, points, expected in zip(boxes, scores, keypoints, uncertainty)
            ],
        }
