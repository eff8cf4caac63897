import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from jaxkp import geometry, load_pipeline
from jaxkp.detect import Faces, nearest_face_boxes
from jaxkp.examples import compose_faces
from jaxkp.gate import GATE_BATCHES
from jaxkp.geometry import MIRROR, TRAINING_IMAGE_CROP
from jaxkp.inference import BATCH_SIZES, PHOTO_FORMATS, ImageError, batch_plan, load_photo, read_photo
from photos import (
    ASTRONAUT,
    BAD_FILES,
    CAMERA,
    exif_rotated_astronaut,
    five_faces,
    save,
    shared_exif_png,
    sixteen_bit_astronaut,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline()


def test_result_format_and_keypoints_on_the_face(pipeline):
    result = pipeline(ASTRONAUT)
    assert result["image"] == {"width": 512, "height": 512}
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    assert set(face) >= {"box", "keypoints"} and len(face["box"]) == 4
    points = np.asarray(face["keypoints"])
    assert points.shape == (68, 2)
    x, y, w, h = face["box"]
    # The dots land on the face: eyes in the box's upper half, mouth below the eyes,
    # nose between; the right-eye points (36-41, image left) left of the left-eye points.
    eyes = points[36:48]
    assert np.all((eyes[:, 0] > x) & (eyes[:, 0] < x + w) & (eyes[:, 1] > y) & (eyes[:, 1] < y + 0.65 * h))
    assert points[48:68, 1].mean() > points[27:36, 1].mean() > eyes[:, 1].mean()
    assert points[36:42, 0].mean() < points[42:48, 0].mean()
    assert np.all((points > [x - 0.3 * w, y - 0.3 * h]) & (points < [x + 1.3 * w, y + 1.5 * h]))


def test_the_network_sees_the_crop_its_config_names(pipeline):
    gray = cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY)
    faces = pipeline.find_faces(gray).faces
    assert pipeline.model.crop == tuple(pipeline.model.config.get("crop", TRAINING_IMAGE_CROP))
    matrix = geometry.box_framing_matrix(faces.boxes[0], pipeline.model.crop, faces.angles[0])
    expected = geometry.keypoints_to_image(pipeline.model(geometry.warp_to_input(gray, matrix)[None])[0], matrix)
    np.testing.assert_allclose(pipeline(ASTRONAUT)["faces"][0]["keypoints"], expected, atol=0.006)


def test_faces_are_ordered_largest_first(pipeline, tmp_path):
    result = pipeline(five_faces(tmp_path / "five.png"))
    areas = [face["box"][2] * face["box"][3] for face in result["faces"]]
    assert len(areas) == 5 and areas == sorted(areas, reverse=True)


def test_no_face_gives_empty_list(pipeline):
    result = pipeline(CAMERA)
    assert result == {"image": {"width": 512, "height": 512}, "faces": []}


def test_a_compiled_pipeline_compiles_nothing_more_for_photos():
    """compile() (what the app runs at start) compiles every batch shape of the network
    and of the gate, so photos of one face and of many then compile nothing."""
    pipeline = load_pipeline()
    pipeline.compile()
    shapes = pipeline.model._forward._cache_size(), pipeline.model.gate._logits._cache_size()
    assert shapes == (len(BATCH_SIZES), len(GATE_BATCHES))
    for count in (1, 3, 7):
        assert len(pipeline(compose_faces(count, (960, 720)))["faces"]) == count
    assert (pipeline.model._forward._cache_size(), pipeline.model.gate._logits._cache_size()) == shapes


def test_exif_orientation_is_honoured(pipeline, tmp_path):
    upright = pipeline(ASTRONAUT)
    rotated = pipeline(exif_rotated_astronaut(tmp_path / "sideways.jpg"))
    assert rotated["image"] == upright["image"]
    assert len(rotated["faces"]) == 1
    np.testing.assert_allclose(rotated["faces"][0]["box"], upright["faces"][0]["box"], atol=12)


def test_a_jpeg_read_in_gray_is_its_luma_and_finds_the_same_faces(pipeline, tmp_path):
    """The pipeline needs no colour, so a JPEG given by path is decoded as its luma channel
    alone (faster: the decoder does no colour work). That is the gray an RGB decode gives,
    up to the decoder's rounding and clipping, at the working size, and the faces and points
    are those of the RGB photo."""
    from jaxkp.inference import read_photo

    path = tmp_path / "three.jpg"
    Image.fromarray(compose_faces(3, (640, 480))).save(path, quality=92)
    luma = read_photo(path, gray=True)
    colour = read_photo(path)
    assert luma.pixels.shape == (480, 640) and luma.pixels.dtype == np.uint8 and colour.pixels.shape == (480, 640, 3)
    difference = np.abs(luma.gray.astype(int) - colour.gray)
    assert difference.mean() < 0.1 and np.mean(difference > 1) < 0.002, (difference.mean(), difference.max())
    from_path, from_rgb = pipeline(path), pipeline(colour.rgb)
    assert len(from_path["faces"]) == len(from_rgb["faces"]) == 3
    for a, b in zip(from_path["faces"], from_rgb["faces"]):
        np.testing.assert_allclose(a["box"], b["box"], atol=2)
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1.0)
    # Over the working budget, the luma is decoded reduced like the colours, the same shrink both ways.
    Image.fromarray(compose_faces(2, (4000, 3000))).save(tmp_path / "large.jpg", quality=90)
    large = read_photo(tmp_path / "large.jpg", max_pixels=3_000_000, gray=True)
    assert large.pixels.ndim == 2 and large.pixels.size <= 3_000_000 and (large.width, large.height) == (4000, 3000)
    np.testing.assert_allclose(large.scale, large.scale[0], rtol=0.01)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_are_accepted(pipeline, tmp_path, mode):
    if mode == "I;16":
        path = sixteen_bit_astronaut(tmp_path / "sixteen.png")
        assert Image.open(path).mode.startswith("I")
    else:
        path = tmp_path / f"astronaut_{mode}.png"
        Image.fromarray(load_photo(ASTRONAUT)).convert(mode).save(path)
    result = pipeline(path)
    assert len(result["faces"]) == 1


def test_large_photo_is_downscaled_for_detection_and_mapped_back(pipeline):
    small = load_photo(ASTRONAUT)
    large = cv2.resize(small, None, fx=5, fy=5, interpolation=cv2.INTER_CUBIC)  # 2560x2560
    small_face, large_face = pipeline(small)["faces"][0], pipeline(large)["faces"][0]
    np.testing.assert_allclose(np.asarray(large_face["box"]) / 5, small_face["box"], atol=8)
    interocular = np.linalg.norm(np.subtract(small_face["keypoints"][36], small_face["keypoints"][45]))
    difference = np.linalg.norm(np.asarray(large_face["keypoints"]) / 5 - small_face["keypoints"], axis=1)
    assert difference.mean() < 0.08 * interocular


def test_face_count_is_capped(pipeline, tmp_path):
    result = pipeline(five_faces(tmp_path / "five.png"), max_faces=3)
    assert len(result["faces"]) == 3


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_refused_with_a_reason(pipeline, tmp_path, name):
    make, message = BAD_FILES[name]
    with pytest.raises(ImageError, match=message):
        pipeline(make(tmp_path / name))


@pytest.mark.parametrize("form", [("PNG", {}), ("WEBP", {"lossless": True}), ("GIF", {}), ("BMP", {}),
                                  ("TIFF", {"compression": "tiff_lzw"}), ("PPM", {}), ("HEIF", {"quality": 95})])
def test_every_allowed_photo_format_reads_the_same_pixels(tmp_path, form):
    """The formats a photo may come in (PHOTO_FORMATS) decode to the photo (GIF's palette
    and HEIC's lossy coding within a few levels); every other format is refused unread."""
    name, options = form
    original = load_photo(ASTRONAUT)
    path = save(Image.fromarray(original), tmp_path / f"photo.{name.lower()}", format=name, **options)
    decoded = load_photo(path)
    assert decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original).mean() < (12 if name in ("GIF", "HEIF") else 0.01)
    assert name in PHOTO_FORMATS


def test_only_the_orientation_is_read_from_a_photos_exif(tmp_path):
    """EXIF whose thousand entries share one block of bytes cost Pillow's reader a copy
    each (1.2 GB for 1 MB of EXIF); the orientation alone is read, and still applied."""
    import tracemalloc

    path = shared_exif_png(tmp_path / "shared.png")
    tracemalloc.start()
    photo = read_photo(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert photo.pixels.shape[:2] == (64, 32) and (photo.width, photo.height) == (32, 64)  # turned a quarter
    assert peak < 50e6, peak  # Pillow's own reader: 1,000 copies of 400 KB


def test_any_face_count_is_read_in_fixed_batch_shapes_without_padding_waste(pipeline):
    for count in range(1, 70):
        plan = batch_plan(count)
        assert set(plan) <= set(BATCH_SIZES) and count <= sum(plan) < count + min(plan)
    assert batch_plan(5) == [4, 1] and batch_plan(17) == [16, 1]  # not 8 and 32, nearly half of them empty
    gray = cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY)
    boxes = np.array([[177.0, 66.0, 95.0 + grow, 95.0 + grow] for grow in range(11)])
    alone = np.concatenate([pipeline.model.read_faces(gray, boxes[i : i + 1]).keypoints for i in range(len(boxes))])
    for count in (3, 5, 7, 11):  # plans [2, 1], [4, 1], [8], [8, 2, 1]: sizes 1, 2, 4 and 8 compiled
        together = pipeline.model.read_faces(gray, boxes[:count]).keypoints
        np.testing.assert_allclose(together, alone[:count], atol=0.05)  # each face read as if alone
    # The model's own jit (the graph closed over): sizes already seen do not compile again.
    compiled = pipeline.model._forward._cache_size()
    for count in (4, 6, 8, 9, 10):
        pipeline.model.read_faces(gray, boxes[:count])
    assert pipeline.model._forward._cache_size() == compiled


def test_flip_averaging_reads_a_mirrored_face_as_the_mirror_of_the_face(pipeline):
    gray = cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY)
    box = np.array([[177.0, 66.0, 95.0, 95.0]])
    patch = geometry.warp_to_input(gray, geometry.box_framing_matrix(box[0], pipeline.model.crop))[None]
    model = pipeline.model
    try:
        model.flip_average = True
        averaged, evidence, spread = model.readout(patch)
        mirrored, _, mirrored_spread = model.readout(patch[:, :, ::-1])
    finally:
        model.flip_average = False
    plain, plain_evidence, _ = model.readout(patch)
    # Equivariant by construction: the mirror's reading is this one's, mirrored.
    np.testing.assert_allclose(mirrored[0], (averaged[0] * [-1, 1])[MIRROR], atol=1e-5)
    np.testing.assert_allclose(mirrored_spread[0], spread[0, MIRROR], atol=1e-6)
    np.testing.assert_array_equal(evidence, plain_evidence)  # the face score reads the plain look
    assert 0 < np.abs(averaged - plain).max() < 0.05  # a refinement, not another answer


@pytest.mark.slow
def test_predict_cli_writes_json_and_annotated_images(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    five_faces(folder / "five.png")
    (folder / "astronaut.png").write_bytes(ASTRONAUT.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = subprocess.run(
        [sys.executable, "-m", "jaxkp", "predict", str(folder), "--json", str(tmp_path / "out.json"),
         "--out", str(tmp_path / "annotated")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    records = json.loads((tmp_path / "out.json").read_text())
    assert sorted(Path(r["path"]).name for r in records) == ["astronaut.png", "five.png"]
    assert {Path(r["path"]).name: len(r["faces"]) for r in records} == {"astronaut.png": 1, "five.png": 5}
    written = sorted(p.name for p in (tmp_path / "annotated").iterdir())
    assert written == ["astronaut.annotated.png", "five.annotated.png"]


@pytest.mark.slow
def test_predict_cli_runs_every_proposal_source_when_asked(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jaxkp", "predict", str(ASTRONAUT), "--thorough", "--json", str(tmp_path / "out.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [len(record["faces"]) for record in json.loads((tmp_path / "out.json").read_text())] == [1]


@pytest.mark.slow
def test_predict_cli_fails_cleanly_on_bad_input(tmp_path):
    result = subprocess.run([sys.executable, "-m", "jaxkp", "predict", str(tmp_path / "missing.jpg")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "file not found" in result.stderr and "Traceback" not in result.stderr


def test_faces_in_a_long_strip_are_found(pipeline):
    """Detection shrinks by area, not by the longer side, so a 20000x200 panorama keeps
    its faces large enough to find (shrinking its long side to 1024 px made them 4 px)."""
    strip = compose_faces(4, size=(20000, 200))
    result = pipeline(strip)
    assert len(result["faces"]) == 4
    assert result["image"] == {"width": 20000, "height": 200}


def test_a_box_away_from_the_labelled_face_is_not_its_detection():
    points = np.tile([[100.0, 100.0]], (68, 1)) + np.random.default_rng(0).normal(0, 10, (68, 2))
    image = np.zeros((300, 300), np.uint8)

    def detector(_image):
        return Faces(boxes, np.zeros(len(boxes)), np.zeros(len(boxes), int))

    boxes = np.array([[200.0, 250.0, 40.0, 40.0]])  # a false positive on the chest
    assert np.isnan(nearest_face_boxes(detector, [image], points[None])).all()
    boxes = np.array([[200.0, 250.0, 40.0, 40.0], [60.0, 50.0, 90.0, 90.0]])
    np.testing.assert_array_equal(nearest_face_boxes(detector, [image], points[None])[0], boxes[1])


def test_large_and_thin_photos_are_worked_on_within_the_pixel_budget(tmp_path):
    """The working copy keeps to its budget whatever the photo's shape or depth: a strip
    one pixel thin (once a 1-pixel-wide copy of 28 megapixels) and a 16-bit photo (once
    made float64 whole before it was shrunk)."""
    from jaxkp.inference import read_photo

    strip = read_photo(np.full((1, 3_000_000), 200, np.uint8), max_pixels=1_000_000)
    assert strip.rgb.shape[0] == 1 and strip.rgb.shape[0] * strip.rgb.shape[1] <= 1_000_000
    assert (strip.width, strip.height) == (3_000_000, 1) and np.all(strip.rgb == 200)
    gradient = np.tile(np.linspace(0, 65535, 3000).astype(np.uint16), (2000, 1))
    path = tmp_path / "sixteen.png"
    Image.fromarray(gradient).save(path)
    for photo in (read_photo(path, max_pixels=500_000), read_photo(gradient, max_pixels=500_000)):
        assert photo.rgb.shape[0] * photo.rgb.shape[1] <= 500_000 and (photo.width, photo.height) == (3000, 2000)
        row = photo.rgb[0, :, 0].astype(int)
        assert row[0] <= 1 and row[-1] >= 254 and np.all(np.diff(row) >= 0)  # the 16-bit range, in order
    rgb = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (600, 12)))  # 3072x600 PNG, reduced in Pillow
    rgb.convert("RGB").save(tmp_path / "wide.png")
    wide = read_photo(tmp_path / "wide.png", max_pixels=400_000)
    assert wide.rgb.shape[0] * wide.rgb.shape[1] <= 400_000 and (wide.width, wide.height) == (3072, 600)
    np.testing.assert_allclose(wide.scale, wide.scale[0], rtol=0.02)  # reduced alike both ways
    square = read_photo(np.zeros((3000, 3000, 3), np.uint8), max_pixels=1_000_000)
    assert square.rgb.shape[:2] == (1000, 1000)
    for size in ((3000, 3000), (5000, 1200), (1, 900_000), (900_000, 2)):
        Image.new("L", size, 90).save(tmp_path / "reduced.png")
        photo = read_photo(tmp_path / "reduced.png", max_pixels=300_000)
        assert 100_000 < photo.rgb.shape[0] * photo.rgb.shape[1] <= 300_000, size
        if min(size) > 10:  # not a strip: the same shrink both ways
            np.testing.assert_allclose(photo.scale, photo.scale[0], rtol=0.02)
