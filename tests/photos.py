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


# A large head (its box about 0.3 of the short side) and a small one (about 0.07) on a
# 900x600 photo, and their centres.
HEAD_CENTRES = {"large": (230.0, 300.0), "small": (692.75, 301.75)}


def large_and_small_heads() -> np.ndarray:
    head = load_photo(ASTRONAUT)[20:250, 130:320]  # about twice the cascade's box
    photo = np.full((600, 900, 3), 235, np.uint8)
    large = cv2.resize(head, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_AREA)
    small = cv2.resize(head, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)
    photo[70:70 + large.shape[0], 40:40 + large.shape[1]] = large
    photo[250:250 + small.shape[0], 650:650 + small.shape[1]] = small
    return photo


def heads_found(boxes: np.ndarray) -> dict[str, np.ndarray]:
    """The box nearest each head of large_and_small_heads, for the heads some box centres on."""
    found = {}
    for name, centre in HEAD_CENTRES.items():
        distances = [np.hypot(*(box[:2] + box[2:] / 2 - centre)) for box in boxes]
        if distances and min(distances) < boxes[int(np.argmin(distances))][2] / 3:
            found[name] = np.asarray(boxes[int(np.argmin(distances))])
    return found


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(load_photo(ASTRONAUT)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def decompression_bomb(path: Path) -> Path:
    """A 12000x12000 PNG of a few kilobytes: 144 megapixels once decoded."""
    return save(Image.new("1", (12000, 12000)), path, format="PNG")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height gray pixels, and no pixel data to speak of."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def zero_size_png(path: Path) -> Path:
    """A PNG whose header declares 0x0 pixels."""
    return png_declaring(path, 0, 0)


def line_of_pixels_png(path: Path) -> Path:
    """A PNG declaring 1x2,000,000 pixels (2 megapixels; a decoder keeps a pointer per row:
    1x64,000,000 once took 2.2 GB)."""
    return png_declaring(path, 1, 2_000_000)


# Damaged headers on which Pillow raises other than OSError (found by fuzzing the app's reader):
def unknown_dds(path: Path) -> Path:
    """A DDS with an unknown FourCC (NotImplementedError)."""
    path.write_bytes(b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
                     + struct.pack("<2I", 32, 4) + b"ZZZZ" + b"\0" * 104)
    return path


def pgm_past_16_bits(path: Path) -> Path:
    """A PGM whose maximum value needs 32 bits (ValueError), named as a JPEG."""
    path.write_bytes(b"P5 4 4 4294967295\n" + b"\xff" * 64)
    return path


def many_scans_jpeg(path: Path, repeats: int = 150) -> Path:
    """A valid progressive JPEG whose first AC scan is repeated: the decoder walks every
    block again for each (4,000 repeats on 8000x8000 px, 718 KB, took 34 s of a core)."""
    buffer = io.BytesIO()
    Image.new("L", (256, 256), 128).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    segments, at = [], 2  # (marker, start, end) of each segment after SOI
    while data[at + 1] != 0xD9:
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if data[at + 1] == 0xDA:  # a scan's coded data runs to the next marker (not 0xFF00, not a restart)
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        segments.append((data[at + 1], at, end))
        at = end
    scans = [index for index, (marker, _, _) in enumerate(segments) if marker == 0xDA]
    first_ac = scans[1]  # the first scan is the DC one
    start = segments[first_ac - 1][1] if segments[first_ac - 1][0] == 0xC4 else segments[first_ac][1]
    path.write_bytes(data[:at] + data[start : segments[first_ac][2]] * repeats + data[at:])
    return path


def mpo_of(first: bytes, second: bytes) -> bytes:
    """Two JPEGs as one MPO (a camera's multi-picture file): an APP2 "MPF" segment after the
    first's start marker lists both frames; the second follows the first. Pillow opens it
    as format "MPO", not "JPEG", and decodes the first frame with the JPEG decoder."""
    entries_at = 8 + 2 + 3 * 12 + 4  # after the TIFF header, the IFD and the next-IFD offset
    segment_length = 2 + 4 + entries_at + 2 * 16
    first_size = len(first) + 2 + segment_length  # the APP2 marker and segment join the first frame
    tiff_at = 2 + 2 + 2 + 4  # SOI, APP2 marker, its length, "MPF\0": where offsets count from
    entries = (struct.pack("<IIIHH", 0x20030000, first_size, 0, 0, 0)
               + struct.pack("<IIIHH", 0x00020002, len(second), first_size - tiff_at, 0, 0))
    ifd = (struct.pack("<H", 3) + struct.pack("<HHI4s", 0xB000, 7, 4, b"0100")
           + struct.pack("<HHII", 0xB001, 4, 1, 2) + struct.pack("<HHII", 0xB002, 7, 32, entries_at)
           + struct.pack("<I", 0))
    body = b"MPF\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd + entries
    assert len(body) + 2 == segment_length
    return first[:2] + b"\xff\xe2" + struct.pack(">H", segment_length) + body + first[2:] + second


def many_scans_mpo(path: Path) -> Path:
    """many_scans_jpeg's file as the first frame of an MPO (it once skipped the scan limit,
    which only looked at files Pillow calls JPEG)."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 90).save(buffer, format="JPEG")
    path.write_bytes(mpo_of(many_scans_jpeg(path).read_bytes(), buffer.getvalue()))
    return path


def jpeg_in_blp(path: Path) -> Path:
    """many_scans_jpeg's file wrapped in a BLP1 texture header (a game format Pillow opens,
    decoding the JPEG inside with libjpeg): it once skipped the scan limit, 8.5 s for 368 KB."""
    jpeg = many_scans_jpeg(path).read_bytes()
    offsets, lengths = [160] + [0] * 15, [len(jpeg)] + [0] * 15
    header = b"BLP1" + struct.pack("<iIIIiI", 0, 0, 256, 256, 5, 0)
    path.write_bytes(header + struct.pack("<16I", *offsets) + struct.pack("<16I", *lengths)
                     + struct.pack("<I", 0) + jpeg)
    return path


def jpeg_tiff(path: Path) -> Path:
    """The astronaut as a TIFF of JPEG-compressed pixels (libjpeg, past the scan limit)."""
    return save(Image.open(ASTRONAUT).convert("RGB"), path, format="TIFF", compression="jpeg")


def rle_bmp(path: Path) -> Path:
    """An 8000x8000 RLE8 BMP of 16 KB: each row one end-of-line code (Pillow's RLE decoder,
    written in Python, took 8.6 s on such a file)."""
    width = height = 8000
    pixels = b"\0\0" * height + b"\0\1"
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    palette = bytes(range(256)) * 4
    offset = 14 + len(header) + len(palette)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + palette + pixels)
    return path


def many_strips_tiff(path: Path) -> Path:
    """A 1x70,000 TIFF of one-row strips: 70,000 strips for 70 KB of pixels."""
    return save(Image.new("L", (1, 70_000), 128), path, format="TIFF", tiffinfo={278: 1})


def odd_header_tiff(path: Path) -> Path:
    """many_strips_tiff's file with the byte-order mark Pillow also takes ("MM*\\0", said
    to be invalid), which once slipped past a check that knew only the valid two."""
    many_strips_tiff(path)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\0"
    data[2:4] = b"\0*"  # "II\0*": Pillow reads it little-endian all the same
    path.write_bytes(bytes(data))
    return path


def gif_with_before_its_image(path: Path, inserted: bytes) -> Path:
    """An 8x8 GIF with `inserted` between its header (and colour table) and its image."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="GIF")
    data = buffer.getvalue()
    start = data.index(b"\x2c", 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0))
    path.write_bytes(data[:start] + inserted + data[start:])
    return path


def many_comments_gif(path: Path) -> Path:
    """A GIF of 8x8 pixels after 50,000 comment blocks (Pillow joins comments in quadratic time)."""
    return gif_with_before_its_image(path, b"!\xfe\x01c\x00" * 50_000)


def large_exif_png(path: Path) -> Path:
    """A PNG whose eXIf chunk is 2 MB (Pillow makes an object per value of its tags)."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data[:-12] + png_chunk(b"eXIf", b"MM\0*" + b"\0" * 2_000_000) + data[-12:])
    return path


def shared_exif_png(path: Path, entries: int = 1000, shared_bytes: int = 400_000) -> Path:
    """A 64x32 PNG whose 400 KB EXIF block says Orientation 6 (turned a quarter), then has
    `entries` more entries that all point at the same bytes: Pillow's EXIF reader copies
    each entry's data (1,000 such entries of 1 MB cost 1.2 GB)."""
    count = entries + 1
    start = 8 + 2 + 12 * count + 4  # the shared bytes, after the header and the directory
    directory = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    directory += b"".join(struct.pack(">HHII", 0x9000 + index, 7, shared_bytes - 1, start + 1)
                          for index in range(entries))
    exif = b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", count) + directory + b"\0" * 4 + b"\0" * shared_bytes
    buffer = io.BytesIO()
    Image.new("L", (64, 32), 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data[:-12] + png_chunk(b"eXIf", exif) + data[-12:])
    return path


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="JPEG")
    return buffer.getvalue()


def many_segments_jpeg(path: Path) -> Path:
    """A 16x16 JPEG after 2,000 empty comment segments (Pillow reads each in Python: 5,000,000
    of them, 20 MB, took 4.7 s and 880 MB)."""
    data = _small_jpeg()
    path.write_bytes(data[:2] + b"\xff\xfe\x00\x02" * 2000 + data[2:])
    return path


def plain_pgm(path: Path) -> Path:
    """A plain-text PGM (Pillow parses each value in Python: 10 MP took 3.3 s)."""
    path.write_bytes(b"P2\n2 2\n255\n0 64 128 255\n")
    return path


def long_header_ppm(path: Path) -> Path:
    """A binary PPM whose header holds a 5,000-byte comment (read a byte at a time: 20 MB took 4 s)."""
    path.write_bytes(b"P6\n#" + b"x" * 5000 + b"\n2 2\n255\n" + bytes(12))
    return path


def stray_bytes_gif(path: Path) -> Path:
    """A GIF with 2,000 stray bytes before its image, which Pillow skips one at a time."""
    return gif_with_before_its_image(path, b"\0" * 2000)


def large_canvas_animated_webp(path: Path) -> Path:
    """The start of an animated WebP with a 7999x7999 canvas: 30 bytes (libwebp's animation
    decoder takes the whole canvas several times: 96 bytes once cost 1.2 GB)."""
    vp8x = bytes([0x02, 0, 0, 0]) + (7998).to_bytes(3, "little") * 2
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def shared_exif_directory_tiff(path: Path, entries: int = 300, shared_bytes: int = 100_000) -> Path:
    """An 8x8 gray TIFF whose EXIF directory (tag 34665) has `entries` entries that all point
    at the same bytes: Pillow's TIFF reader reads that directory too, copying each entry's
    data (2,500 entries sharing 512 KB took 1.4 GB)."""
    main = [(256, 3, 1, 8), (257, 3, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 0), (278, 3, 1, 8), (279, 4, 1, 64), (34665, 4, 1, 0)]
    main_at, exif_at = 8, 8 + 2 + 12 * len(main) + 4
    shared_at = exif_at + 2 + 12 * entries + 4
    pixels_at = shared_at + shared_bytes
    main[5], main[8] = (273, 4, 1, pixels_at), (34665, 4, 1, exif_at)
    def directory(items: list[tuple[int, int, int, int]]) -> bytes:
        return struct.pack("<H", len(items)) + b"".join(struct.pack("<HHII", *item) for item in items) + b"\0" * 4
    exif = [(0x9000 + index, 7, shared_bytes, shared_at) for index in range(entries)]
    data = b"II*\0" + struct.pack("<I", main_at) + directory(main) + directory(exif) + bytes(shared_bytes) + bytes(64)
    path.write_bytes(data)
    return path


def huge_tile_tiff(path: Path) -> Path:
    """A 16x16 TIFF declaring one 4096x4096 tile (libtiff decodes whole tiles: a 24,576-pixel
    one took 4.9 s and 1.9 GB)."""
    entries = [(256, 3, 1, 16), (257, 3, 1, 16), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (322, 3, 1, 4096), (323, 3, 1, 4096), (324, 4, 1, 0), (325, 4, 1, 256)]
    pixels_at = 8 + 2 + 12 * len(entries) + 4
    entries[7] = (324, 4, 1, pixels_at)
    directory = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + directory + b"\0" * 4 + bytes(256))
    return path


def many_chunks_png(path: Path) -> Path:
    """A small PNG with 60,000 empty private chunks before its end."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data[:-12] + png_chunk(b"prIv", b"") * 60_000 + data[-12:])
    return path


def short_header_png(path: Path) -> Path:
    """A PNG whose IHDR chunk is 4 bytes long (ValueError)."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\0\0\0\x10"))
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
    "line.png": (line_of_pixels_png, "too long"),
    "unknown.dds": (unknown_dds, "format read here"),
    "wrapped.blp": (jpeg_in_blp, "format read here"),
    "jpeg.tif": (jpeg_tiff, "JPEG-compressed"),
    "rle.bmp": (rle_bmp, "RLE-compressed"),
    "strips.tif": (many_strips_tiff, "70,000 values"),
    "odd_header.tif": (odd_header_tiff, "70,000 values"),
    "comments.gif": (many_comments_gif, "extension blocks"),
    "exif.png": (large_exif_png, "EXIF block"),
    "segments.jpg": (many_segments_jpeg, "header segments"),
    "plain.pgm": (plain_pgm, "plain-text"),
    "long_header.ppm": (long_header_ppm, "header is longer"),
    "stray.gif": (stray_bytes_gif, "extension blocks"),
    "canvas.webp": (large_canvas_animated_webp, "animated WebP"),
    "exif_directory.tif": (shared_exif_directory_tiff, "tags hold 30 MB"),
    "huge_tile.tif": (huge_tile_tiff, "tiles"),
    "chunks.png": (many_chunks_png, "more than 50,000 chunks"),
    "maxval.jpg": (pgm_past_16_bits, "corrupt"),
    "short_header.png": (short_header_png, "corrupt"),
    "scans.jpg": (many_scans_jpeg, "scans"),
    "scans_mpo.jpg": (many_scans_mpo, "scans"),
}
