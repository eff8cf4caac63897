"""Face finding: proposal sources, their mapping back to the photo, merging, the face score,
the framing geometry, and the face-finding evaluation on composites."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from jaxkp import geometry, load_pipeline
from jaxkp.detect import THOROUGH_SOURCES, FaceDetector, Faces, holds, merge, overlap, turn_photo
from jaxkp.inference import load_photo
from photos import ASTRONAUT, heads_found, large_and_small_heads
from train import data
from train.composites import load_backgrounds, make_composites, write_composites
from train.config import Config
from train.find_faces import group_photos, match, score_photos


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline()


@pytest.fixture(scope="module")
def astronaut_gray() -> np.ndarray:
    return cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY)


def turned(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """`gray` turned about its centre (cv2's sense), and the 2x3 matrix that did it."""
    height, width = gray.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(gray, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE), matrix


# --- geometry -------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 25.0, -40.0])
def test_framing_round_trips_points_and_the_warp_agrees(angle):
    rng = np.random.default_rng(1)
    box = np.array([130.0, 80.0, 120.0, 120.0])
    matrix = geometry.box_framing_matrix(box, (-0.25, -0.1, 1.5, 1.5), angle)
    points = rng.uniform(100, 250, (68, 2))
    normalised = geometry.normalize_keypoints(geometry.apply_affine(matrix, points))
    np.testing.assert_allclose(geometry.keypoints_to_image(normalised, matrix), points, atol=1e-9)
    # A dot drawn in the photo lands in the input where the matrix sends it.
    image = np.zeros((400, 400), np.uint8)
    cv2.circle(image, (190, 150), 3, 255, -1)
    patch = geometry.warp_to_input(image, matrix).astype(np.float64)
    ys, xs = np.mgrid[: patch.shape[0], : patch.shape[1]]
    centroid = np.array([(xs * patch).sum(), (ys * patch).sum()]) / patch.sum() + 0.5
    np.testing.assert_allclose(centroid, geometry.apply_affine(matrix, np.array([190.5, 150.5])), atol=0.5)


def test_a_turned_box_shows_the_face_upright():
    """The input matrix of a face turned by `angle` undoes the turn: points on a level
    line through the box centre, turned with the face, come out level again."""
    box = np.array([100.0, 100.0, 100.0, 100.0])
    centre = box[:2] + box[2:] / 2
    level = np.array([centre - [30, 0], centre + [30, 0]])
    turn = cv2.getRotationMatrix2D(tuple(centre), -25.0, 1.0)  # the face, tilted in the photo
    tilted = geometry.apply_affine(turn, level)
    shown = geometry.apply_affine(geometry.box_framing_matrix(box, None, 25.0), tilted)
    assert abs(shown[0, 1] - shown[1, 1]) < 1e-9


@pytest.mark.parametrize("lean", [0.0, 12.0, -33.0])
def test_upright_face_box_levels_a_leaning_face_and_frames_it_as_the_detector(pipeline, astronaut_gray, lean):
    """Keypoints of a face leaning by `lean` degrees: the turn is the one that levels them,
    and the framing shows them exactly as the detector's box frames the level face."""
    # In float64: the assertions below are about the geometry, not float32 rounding (about 1e-5 px).
    level = pipeline.find_faces(astronaut_gray).reading.keypoints[0].astype(np.float64)
    leaning = geometry.apply_affine(cv2.getRotationMatrix2D((40.0, 300.0), lean, 1.0), level)
    box, turn = geometry.upright_face_box(leaning)
    level_box, level_turn = geometry.upright_face_box(level)
    assert turn - level_turn == pytest.approx(-lean, abs=1e-9)
    crop = pipeline.model.crop
    shown = geometry.apply_affine(geometry.box_framing_matrix(box, crop, turn), leaning)
    shown_level = geometry.apply_affine(geometry.box_framing_matrix(level_box, crop, level_turn), level)
    # Within 1e-4 input pixels: OpenCV's turn matrices round in their own way (6e-6 px seen at a 33° lean).
    np.testing.assert_allclose(shown, shown_level, atol=1e-4)
    eyes = shown[42:48].mean(axis=0) - shown[36:42].mean(axis=0)
    assert abs(eyes[1]) < 1e-6 * abs(eyes[0])
    # Levelled, the box sits where the detector's median box sits on the keypoints.
    input_box = geometry.detector_box(shown, geometry.DETECTOR_BOX_MEDIAN)
    expected = geometry.apply_affine(geometry.box_framing_matrix(box, crop, turn),
                                     np.array([box[:2] + box[2:] / 2]))[0]
    np.testing.assert_allclose(np.array(input_box[:2]) + np.array(input_box[2:]) / 2, expected, atol=1e-4)


def test_framing_is_named_by_the_config_and_old_configs_still_read():
    assert Config().framing == "whole-image"
    old = Config().to_dict() | {"augmentation": {"flip": True}, "haar_boxes": True}
    old.pop("framing")
    assert Config.from_dict(old).framing == "haar-box"
    old["haar_boxes"] = False
    assert Config.from_dict(old).framing == "keypoint-box"
    with pytest.raises(ValueError, match="unknown framing"):
        Config(framing="centre")


# --- proposal sources -------------------------------------------------------------


def test_a_mirrored_source_maps_its_boxes_back_exactly(astronaut_gray):
    detector = FaceDetector(("profile", "profile-mirrored"), min_neighbors=2)
    mirrored_photo = np.ascontiguousarray(astronaut_gray[:, ::-1])
    direct, _, _ = detector.cascade_boxes(0, astronaut_gray)
    back, _, _ = detector.cascade_boxes(1, mirrored_photo)
    assert len(direct)  # the profile cascade takes her face, turned a little, for a profile
    width = astronaut_gray.shape[1]
    expected = direct.copy()
    expected[:, 0] = width - direct[:, 0] - direct[:, 2]
    np.testing.assert_array_equal(np.sort(back, axis=0), np.sort(expected, axis=0))


def test_a_turned_source_maps_its_boxes_back_exactly(astronaut_gray):
    """The turned source (reduced resolution) finds the leaning face where its upright
    twin (same cascade and settings, no turn) finds it on the reduced photo turned
    upright: box centres map back through the turn exactly, the box keeps its size and
    the face its angle."""
    detector = FaceDetector(("frontal-turned+25", "frontal-turned+25"))
    resolution = detector.sources[1].resolution
    assert resolution < 1.0
    # Two neighbours: at the default, false boxes on the turned photo also come.
    detector.sources[1] = dataclasses.replace(detector.sources[1], min_neighbors=2)
    detector.sources[0] = dataclasses.replace(detector.sources[1], angle=0.0, resolution=1.0)
    photo, _ = turned(astronaut_gray, -25.0)  # the face now leans 25 degrees
    faces = detector.propose_from(1, photo)
    assert len(faces) == 1 and faces.angles[0] == 25.0
    reduced = cv2.resize(photo, None, fx=resolution, fy=resolution, interpolation=cv2.INTER_AREA)
    upright, turn = turn_photo(reduced, 25.0)
    frontal = detector.propose_from(0, upright)
    enlarge = np.array(photo.shape[::-1]) / reduced.shape[::-1]
    expected_centre = geometry.apply_affine(cv2.invertAffineTransform(turn),
                                            frontal.boxes[0, :2] + frontal.boxes[0, 2:] / 2) * enlarge
    np.testing.assert_allclose(faces.boxes[0, :2] + faces.boxes[0, 2:] / 2, expected_centre, atol=1e-6)
    np.testing.assert_allclose(faces.boxes[0, 2:], frontal.boxes[0, 2:] * enlarge)


def test_a_turned_photo_keeps_its_corners_and_the_faces_there(pipeline, astronaut_gray):
    """Turned onto a canvas of the photo's own size, a photo loses its corners; a face
    leaning 25 degrees in a corner is still proposed by the turned source, at its place."""
    photo_turned, turn = turned(astronaut_gray, -25.0)  # the face now leans 25 degrees
    points = geometry.apply_affine(turn, pipeline.find_faces(astronaut_gray).reading.keypoints[0])
    # Shift it so that the face's centre sits 75 px from the top-left corner of a 640x480 photo.
    shift = np.round(75 - points.mean(axis=0)).astype(int)
    padded = np.pad(photo_turned, 640, mode="edge")
    photo = np.ascontiguousarray(padded[640 - shift[1]: 640 - shift[1] + 480, 640 - shift[0]: 640 - shift[0] + 640])
    points = points + shift
    canvas, matrix = turn_photo(photo, 25.0)
    height, width = photo.shape
    corners = geometry.apply_affine(
        matrix, np.array([[0.0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]]))
    assert corners.min() >= -0.5 and np.all(corners.max(axis=0) <= np.array(canvas.shape[::-1]) - 0.5)
    found = FaceDetector(("frontal-turned+25",))(photo)
    assert any(holds(box, points) for box in found.boxes)


def test_one_detector_serves_two_threads_at_once(astronaut_gray):
    """The app runs two requests at once; a cascade shared between threads fails on
    images of different sizes (OpenCV's scale data is per classifier)."""
    from concurrent.futures import ThreadPoolExecutor

    detector = FaceDetector()
    photos = [astronaut_gray, cv2.resize(astronaut_gray, (700, 380)), astronaut_gray[50:400, 60:300].copy()]
    expected = [len(detector(photo)) for photo in photos]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda i: len(detector(photos[i % 3])), range(24)))
    assert counts == [expected[i % 3] for i in range(24)]


def test_a_long_strip_is_turned_onto_a_canvas_of_the_detection_budget():
    from jaxkp.detect import DETECTION_MAX_PIXELS, turned_canvas_resolution

    # Photos of ordinary proportions (1 MP copies: 4:3, 16:9, 4:1) keep the turned sources' own resolution.
    for width, height in ((1155, 866), (1333, 750), (2000, 500)):
        assert turned_canvas_resolution((height, width), 25.0) > 0.55
    assert turned_canvas_resolution((866, 1155), 0.0) == 1.0
    for height, width in ((25, 40000), (40000, 25), (3, 290000)):
        resolution = turned_canvas_resolution((height, width), 25.0)
        turned, _ = turn_photo(np.zeros((max(1, round(height * resolution)), round(width * resolution)), np.uint8),
                               25.0)
        assert turned.size <= 1.01 * DETECTION_MAX_PIXELS
    strip = np.random.default_rng(0).integers(0, 256, (12, 300000), dtype=np.uint8)
    assert len(FaceDetector()(strip)) == 0  # every source runs; nothing to find, no error


def test_the_smallest_face_setting_leaves_out_only_faces_under_it():
    """A large and a small head on one photo: by default both are proposed; looking for
    faces of at least 0.15 of the short side keeps the large one (the same box) and leaves
    the small one out. Settings that are no share of a side are refused."""
    gray = cv2.cvtColor(large_and_small_heads(), cv2.COLOR_RGB2GRAY)
    everything = heads_found(FaceDetector()(gray).boxes)
    large_only = heads_found(FaceDetector(smallest_face=0.15)(gray).boxes)
    assert set(everything) == {"large", "small"} and set(large_only) == {"large"}
    assert large_only["large"][2] >= 0.15 * gray.shape[0]
    np.testing.assert_allclose(large_only["large"], everything["large"], atol=2)
    for setting in (0.0, -0.1, 0.6, float("nan")):
        with pytest.raises(ValueError, match="share of the photo's shorter side"):
            FaceDetector(smallest_face=setting)


def test_boxes_of_one_face_merge_into_one():
    faces = Faces(np.array([[100.0, 100, 80, 80], [104, 98, 84, 84], [300, 300, 50, 50]]), np.zeros(3),
                  np.array([1, 0, 0]))
    merged = merge(faces)
    assert len(merged) == 2
    # The first source's box is kept for the face both found.
    assert [100.0 + 4, 98.0] in merged.boxes[:, :2].tolist()
    assert overlap(np.array([0.0, 0, 10, 10]), np.array([[5.0, 0, 10, 10]]))[0] == pytest.approx(1 / 3)


def test_the_box_of_most_windows_speaks_for_a_face():
    """A face the photo turned one way shows upright (many windows) and the other way
    only just (one window) keeps the first box and its turn, whatever the source order."""
    faces = Faces(np.array([[100.0, 100, 80, 80], [104, 98, 84, 84]]), np.array([25.0, -25.0]), np.array([0, 1]),
                  np.array([1, 9]))
    merged = merge(faces)
    assert len(merged) == 1 and merged.angles[0] == -25.0 and merged.windows[0] == 9


def test_no_neighbours_keeps_lone_windows_and_groups_the_rest_as_opencv_does(astronaut_gray):
    """At 0 neighbours a source keeps the cascade's lone windows too; every box OpenCV's
    grouping gives at 1 neighbour comes back the same, with its window count."""
    detector = FaceDetector(("frontal-coarse", "frontal-coarse"))
    assert detector.sources[0].min_neighbors == 0
    detector.sources[1] = dataclasses.replace(detector.sources[1], min_neighbors=1)
    photo = cv2.resize(astronaut_gray, (640, 480))
    lone, lone_windows, _ = detector.cascade_boxes(0, photo)
    grouped, grouped_windows, _ = detector.cascade_boxes(1, photo)
    assert len(grouped) and len(lone) > len(grouped) and lone_windows.min() == 1
    for box, windows in zip(grouped, grouped_windows):
        same = np.flatnonzero(np.all(lone == box, axis=1))
        assert len(same) == 1 and lone_windows[same[0]] == windows


def test_turned_and_mirrored_faces_are_found_with_their_points(pipeline, astronaut_gray):
    """The frontal cascade alone misses the face leaning 25 degrees; the pipeline finds it
    and places its points where the upright face's points land after the same turn."""
    upright = pipeline.find_faces(astronaut_gray)
    assert len(upright.faces) == 1
    for degrees in (25.0, -25.0):
        photo, turn = turned(astronaut_gray, degrees)
        expected = geometry.apply_affine(turn, upright.reading.keypoints[0])
        assert not any(holds(box, expected) for box in FaceDetector(("frontal",))(photo).boxes)
        found = pipeline.find_faces(photo)
        assert len(found.faces) == 1
        interocular = np.linalg.norm(expected[36] - expected[45])
        assert np.linalg.norm(found.reading.keypoints[0] - expected, axis=1).mean() < 0.1 * interocular
    mirrored = np.ascontiguousarray(astronaut_gray[:, ::-1])
    found = pipeline.find_faces(mirrored)
    assert len(found.faces) == 1
    expected = upright.reading.keypoints[0][data.FLIP_PERMUTATION] * [-1, 1] + [astronaut_gray.shape[1], 0]
    interocular = np.linalg.norm(expected[36] - expected[45])
    assert np.linalg.norm(found.reading.keypoints[0] - expected, axis=1).mean() < 0.1 * interocular


def test_a_second_look_reads_a_leaning_face_levelled_and_keeps_the_first_score(pipeline, astronaut_gray):
    """A face leaning 10 degrees, which the upright pass finds unlevelled: the second look
    reads it at the turn its eyes show, its points land where the upright face's points
    land after the same turn, and the first look's score stands."""
    from jaxkp.inference import FaceKeypointPipeline

    upright = pipeline.find_faces(astronaut_gray).reading.keypoints[0]
    photo, turn = turned(astronaut_gray, 10.0)
    expected = geometry.apply_affine(turn, upright)
    detector = FaceDetector(("frontal-coarse",))
    once = FaceKeypointPipeline(pipeline.model, detector, second_look=False).find_faces(photo)
    twice = FaceKeypointPipeline(pipeline.model, detector, second_look=True).find_faces(photo)
    assert len(once.faces) == len(twice.faces) == 1 and once.faces.angles[0] == 0.0
    _, level_turn = geometry.upright_face_box(upright)  # her own lean, upright photo
    assert twice.faces.angles[0] == pytest.approx(level_turn - 10.0, abs=3.0)
    assert twice.reading.scores[0] == once.reading.scores[0]
    # Its points are where the turn puts the upright face's (that a second look lowers the
    # error is a figure over many faces: README, "Finding faces").
    interocular = np.linalg.norm(expected[36] - expected[45])
    assert np.linalg.norm(twice.reading.keypoints[0] - expected, axis=1).mean() < 0.05 * interocular
    # An upright face is read once: its eyes lean less than the second look's minimum.
    assert pipeline.looks_twice
    level = pipeline.find_faces(astronaut_gray)
    assert level.faces.angles[0] == 0.0


def test_a_borderline_proposal_is_kept_when_a_levelled_second_look_is_sure(pipeline, astronaut_gray):
    """A proposal larger than the face and turned from it scores under the threshold at its
    first look; read again levelled and framed from its own keypoints, it is the face, with
    its points, and it is not added again beside the face itself."""
    from jaxkp.inference import SECOND_LOOK_MIN_SCORE, SECOND_LOOK_SURE, FaceReading

    found = pipeline.find_faces(astronaut_gray)
    face_box, face_points = found.faces.boxes[0], found.reading.keypoints[0]
    centre = face_box[:2] + face_box[2:] / 2
    # The case under test: the first such framing (1.5 to 2.5 times the face, turned 30 to
    # 45 degrees from it) that the first look scores from SECOND_LOOK_MIN_SCORE to the threshold.
    for size, angle in ((2.0, 40.0), (2.0, 35.0), (1.75, 40.0), (2.0, 45.0), (1.5, 40.0), (2.0, 30.0),
                        (2.5, 40.0), (1.75, 35.0)):
        side = size * face_box[2]
        proposal = Faces(np.array([[*(centre - side / 2), side, side]]), np.array([angle]), np.array([0]))
        first = pipeline.model.read_faces(astronaut_gray, proposal.boxes, proposal.angles)
        if SECOND_LOOK_MIN_SCORE <= first.scores[0] < pipeline.threshold:
            break
    assert SECOND_LOOK_MIN_SCORE <= first.scores[0] < pipeline.threshold, "no borderline framing to test"
    nothing = FaceReading(np.zeros((0, 68, 2)), np.zeros(0))
    faces, reading = pipeline.rescue(astronaut_gray, proposal, first, pipeline.threshold, Faces.empty(), nothing)
    assert len(faces) == 1 and reading.scores[0] >= SECOND_LOOK_SURE
    interocular = np.linalg.norm(face_points[36] - face_points[45])
    assert np.linalg.norm(reading.keypoints[0] - face_points, axis=1).mean() < 0.05 * interocular
    again, _ = pipeline.rescue(astronaut_gray, proposal, first, pipeline.threshold, found.faces, found.reading)
    assert len(again) == 1
    # Without the second look the proposal stays out.
    assert len(pipeline.judge(astronaut_gray, proposal, first)[0]) == 1
    pipeline.second_look = False
    try:
        assert len(pipeline.judge(astronaut_gray, proposal, first)[0]) == 0
    finally:
        pipeline.second_look = None


@pytest.mark.slow
def test_the_thorough_sources_find_validation_faces_the_default_misses(pipeline, real_300w_dir):
    from jaxkp import load_pipeline
    from train.evaluate import validation_part

    val = validation_part(data.load_dataset(real_300w_dir), real_300w_dir, pipeline.model.config["train_config"])
    missed = [photo for photo in group_photos(val)
              if match(pipeline.find_faces(photo.image).faces.boxes, photo.keypoints) < len(photo.keypoints)]
    assert len(missed) <= 0.05 * len(val)
    thorough = load_pipeline(thorough=True)
    assert [source.name for source in thorough.detector.sources] == list(THOROUGH_SOURCES)
    assert sum(match(thorough.find_faces(photo.image).faces.boxes, photo.keypoints) for photo in missed) >= 1


# --- the face score ----------------------------------------------------------------


def non_face_crops(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Generated non-faces: noise, blurred noise, gradients, stripes, and textures and
    objects from the face-free sample photos, each a 224x224 gray input."""
    crops = []
    backgrounds = load_backgrounds()
    for index in range(count):
        kind = index % 5
        if kind == 0:
            crop = rng.integers(0, 256, (224, 224), dtype=np.uint8)
        elif kind == 1:
            crop = cv2.GaussianBlur(rng.integers(0, 256, (224, 224), dtype=np.uint8), (0, 0), rng.uniform(2, 8))
            crop = cv2.normalize(crop, None, 0, 255, cv2.NORM_MINMAX)
        elif kind == 2:
            ramp = np.linspace(rng.uniform(0, 128), rng.uniform(128, 255), 224)
            crop = np.tile(ramp, (224, 1)).astype(np.uint8)
            crop = crop if rng.random() < 0.5 else crop.T.copy()
        elif kind == 3:
            period = rng.uniform(8, 40)
            crop = (127 + 120 * np.sin(np.arange(224) * 2 * np.pi / period))[None].repeat(224, 0).astype(np.uint8)
        else:
            image = backgrounds[rng.integers(len(backgrounds))]
            side = int(rng.uniform(0.2, 0.9) * min(image.shape))
            y, x = rng.integers(0, image.shape[0] - side + 1), rng.integers(0, image.shape[1] - side + 1)
            crop = cv2.resize(image[y : y + side, x : x + side], (224, 224), interpolation=cv2.INTER_AREA)
        crops.append(crop)
    return crops


def test_the_score_separates_generated_non_faces_from_faces(pipeline, astronaut_gray):
    model = pipeline.model
    assert model.face_score is not None, "the shipped weights carry a face score"
    rng = np.random.default_rng(0)
    face_box = pipeline.find_faces(astronaut_gray).faces.boxes[0]
    faces = []
    for _ in range(20):  # the face as detectors frame it: shifted, scaled, turned a little
        jitter = rng.normal(0, 0.05, 4) * face_box[2]
        box = face_box + [jitter[0], jitter[1], jitter[2], jitter[2]]
        matrix = geometry.box_framing_matrix(box, model.crop, rng.uniform(-10, 10))
        faces.append(geometry.warp_to_input(astronaut_gray, matrix))
    _, face_evidence = model.predict(np.stack(faces))
    _, other_evidence = model.predict(np.stack(non_face_crops(rng, 60)))
    face_scores, other_scores = model.face_score(face_evidence), model.face_score(other_evidence)
    assert np.all(face_scores >= model.face_score.threshold)
    assert np.mean(other_scores < model.face_score.threshold) >= 0.95
    assert face_scores.min() > np.median(other_scores)


def test_results_carry_scores_and_min_score_leaves_faces_out(pipeline):
    result = pipeline(ASTRONAUT)
    score = result["faces"][0]["score"]
    assert 0.0 <= score <= 1.0 and score >= pipeline.threshold
    assert pipeline(ASTRONAUT, min_score=min(1.0, score + 1e-3))["faces"] == []


def test_score_separates_faces_on_real_validation_photos(pipeline, real_300w_dir):
    from jaxkp.metrics import roc_auc
    from train.evaluate import validation_part
    from train.face_score import evidence_of

    dataset = data.load_dataset(real_300w_dir)
    val = validation_part(dataset, real_300w_dir, pipeline.model.config["train_config"])
    evidence, labels = evidence_of(pipeline.model, val.subset(np.arange(0, len(val), 4)),
                                   FaceDetector(min_neighbors=2), seed=3)
    scores = pipeline.model.face_score(evidence)
    assert roc_auc(labels == 1, scores) > 0.99
    assert np.mean(scores[labels == 1] >= pipeline.threshold) > 0.97


# --- composites and the face-finding evaluation --------------------------------------


def test_composites_label_every_pasted_face_and_write_the_layout(pipeline, tmp_path, astronaut_gray):
    points = pipeline.find_faces(astronaut_gray).reading.keypoints[0]
    faces = data.Dataset(["astronaut.png"], [astronaut_gray], points[None].astype(np.float32))
    composites = make_composites(faces, 6, seed=2)
    assert sum(len(c.keypoints) for c in composites) > 6  # several faces per photo
    for composite in composites:
        for face in composite.keypoints:  # upright within 30 degrees: eyes above the mouth
            assert face[36:48, 1].mean() < face[48:68, 1].mean()
            assert np.all((face >= 0) & (face < [640, 480]))
            # The labels follow the mirroring: point 36 (the image-left eye corner) stays left.
            assert face[36, 0] < face[45, 0]
    # The frontal cascade (upright faces only) finds pasted faces where their labels say.
    found = sum(match(FaceDetector(("frontal",))(c.image).boxes, c.keypoints) for c in composites)
    assert found >= 3
    write_composites(composites, tmp_path)
    reloaded = group_photos(data.load_dataset(tmp_path))
    assert [len(photo.keypoints) for photo in reloaded] == [len(c.keypoints) for c in composites]
    np.testing.assert_allclose(reloaded[0].keypoints, composites[0].keypoints, atol=0.01)


def test_matching_counts_one_box_per_face():
    face = np.array([[100.0, 100], [160, 100], [130, 170]] * 23)[:68]
    box = np.array([[95.0, 90, 75, 85]])
    assert match(box, face[None]) == 1
    assert match(np.concatenate([box, box]), face[None]) == 1  # a second box on it is unmatched
    assert match(np.array([[0.0, 0, 400, 400]]), face[None]) == 0  # a box around everything is not it
    assert holds(box[0], face) and not holds(np.array([200.0, 200, 50, 50]), face)


@pytest.mark.slow
def test_faces_are_found_on_composites_of_real_validation_faces(pipeline, real_data_dir, real_300w_dir):
    """The face-finding gate on a small sample: recall and unmatched boxes after the score."""
    from train.evaluate import validation_part

    parts = [validation_part(data.load_dataset(d), d, pipeline.model.config["train_config"])
             for d in (real_300w_dir, real_data_dir)]
    composites = make_composites(data.Dataset.concatenate(parts), 30, seed=7)
    from train.find_faces import LabelledPhoto

    figures = score_photos(pipeline, [LabelledPhoto(c.image, c.keypoints) for c in composites])
    assert figures["default: after score"]["recall"] >= 0.88
    assert figures["default: after score"]["unmatched_per_photo"] <= 0.1
    assert figures["default: merged"]["recall"] > figures["frontal-coarse"]["recall"] + 0.1
