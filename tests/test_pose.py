"""Head pose (jaxkp.pose): the 3-D model seen at known angles, the conventions, and the
mirror and turn symmetries on real faces through the whole pipeline."""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxkp import load_pipeline
from jaxkp.draw import annotate, draw_pose_axes
from jaxkp.inference import load_photo
from jaxkp.pose import (
    MEAN_FACE,
    MIRROR,
    NOSE_TIP,
    camera_matrix,
    derive_mean_face,
    describe_pose,
    euler_angles,
    head_pose,
    project,
    rotation_from_angles,
)
from photos import ASTRONAUT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from pose_properties import symmetry_errors  # noqa: E402

SIZE = (640, 480)


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline()


def seen_at(yaw: float, pitch: float, roll: float, translation=(0.0, 0.0, 600.0), size=SIZE) -> np.ndarray:
    return project(rotation_from_angles(yaw, pitch, roll), np.asarray(translation, float), size)


def test_the_model_is_a_symmetric_face_with_the_nose_in_front():
    assert MEAN_FACE.shape == (68, 3)
    np.testing.assert_allclose(MEAN_FACE[MIRROR] * [-1, 1, 1], MEAN_FACE)
    np.testing.assert_allclose(MEAN_FACE[NOSE_TIP], 0)
    assert np.all(MEAN_FACE[:, 2] >= 0)  # z away from the viewer: nothing in front of the nose tip
    assert np.linalg.norm(MEAN_FACE[45] - MEAN_FACE[36]) == pytest.approx(90, abs=0.2)
    assert MEAN_FACE[8, 1] > MEAN_FACE[57, 1] > MEAN_FACE[NOSE_TIP, 1] > MEAN_FACE[39, 1] > MEAN_FACE[19, 1]  # y down


def test_angles_and_rotations_round_trip():
    for yaw, pitch, roll in [(0, 0, 0), (35, -20, 10), (-70, 30, -45), (89, 5, 170)]:
        rotation = rotation_from_angles(yaw, pitch, roll)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        angles = euler_angles(rotation)
        np.testing.assert_allclose([angles["yaw"], angles["pitch"], angles["roll"]], [yaw, pitch, roll], atol=1e-9)


def test_the_model_seen_at_known_angles_gives_them_back():
    for yaw, pitch, roll in itertools.product([-75, -40, 0, 25, 70], [-35, 0, 30], [-50, 0, 15]):
        for translation in [(0, 0, 600), (180, -120, 900), (-250, 90, 450)]:
            pose = head_pose(seen_at(yaw, pitch, roll, translation), SIZE)
            np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], [yaw, pitch, roll], atol=0.11)


def test_noisy_points_give_angles_near_the_true_ones():
    """Points off by 2 % of the eye distance (about what the network's error is) move the angles a little."""
    rng = np.random.default_rng(0)
    errors = []
    for yaw, pitch, roll in itertools.product([-60, -20, 0, 30, 60], [-20, 10], [-10, 20]):
        points = seen_at(yaw, pitch, roll)
        points += rng.normal(0, 0.02 * np.linalg.norm(points[45] - points[36]), points.shape)
        pose = head_pose(points, SIZE)
        errors.append(np.abs([pose["yaw"] - yaw, pose["pitch"] - pitch, pose["roll"] - roll]))
    assert np.mean(errors, axis=0).max() < 2.0 and np.max(errors) < 6.0


def test_conventions_yaw_to_the_faces_left_pitch_up_roll_clockwise():
    def nose_from_eyes(points: np.ndarray) -> np.ndarray:
        return points[NOSE_TIP] - (points[36] + points[45]) / 2

    frontal = nose_from_eyes(seen_at(0, 0, 0))
    assert nose_from_eyes(seen_at(20, 0, 0))[0] > frontal[0] + 5  # turned to its own left: nose to the image's right
    assert nose_from_eyes(seen_at(0, 20, 0))[1] < frontal[1] - 5  # looking up: the nose rises towards the eyes
    eye_line = seen_at(0, 0, 20)[45] - seen_at(0, 0, 20)[36]
    assert np.degrees(np.arctan2(eye_line[1], eye_line[0])) == pytest.approx(20, abs=0.5)  # clockwise on screen


def test_pose_needs_no_particular_resolution():
    """The focal length follows the photo's size, so the same photo at another size gives the same pose."""
    points = seen_at(30, -10, 5, (60, 40, 700))
    small, large = head_pose(points, SIZE), head_pose(points * 3, (SIZE[0] * 3, SIZE[1] * 3))
    assert small == large


def test_a_face_a_few_pixels_across_in_a_large_photo_has_its_pose_and_no_points_have_none():
    """SQPnP refuses points spread over so little of the view; the EPnP start still fits them."""
    points = seen_at(40, -10, 15, (300, 200, 40000), size=(4000, 3000))
    assert np.linalg.norm(points[45] - points[36]) < 10  # as small as the detector's smallest faces
    with pytest.raises(cv2.error):
        cv2.solvePnP(MEAN_FACE, points, camera_matrix((4000, 3000)), None, flags=cv2.SOLVEPNP_SQPNP)
    pose = head_pose(points, (4000, 3000))
    np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], [40, -10, 15], atol=0.2)
    assert head_pose(np.zeros((68, 2)), SIZE) is None
    assert head_pose(np.full((68, 2), np.nan), SIZE) is None
    assert head_pose(np.ones((5, 2)), SIZE) is None


def test_mirrored_points_negate_yaw_and_roll():
    points = seen_at(40, 15, -20, (90, -30, 700))
    pose = head_pose(points, SIZE)
    mirrored = head_pose(np.column_stack([SIZE[0] - points[:, 0], points[:, 1]])[MIRROR], SIZE)
    assert mirrored == {"yaw": -pose["yaw"], "pitch": pose["pitch"], "roll": -pose["roll"]}


def test_every_face_in_a_result_has_its_pose(pipeline):
    result = pipeline(ASTRONAUT)
    pose = result["faces"][0]["pose"]
    assert set(pose) == {"yaw", "pitch", "roll"} and all(isinstance(v, float) for v in pose.values())
    assert abs(pose["yaw"]) < 15 and abs(pose["roll"]) < 10  # she faces the camera, upright
    again = head_pose(result["faces"][0]["keypoints"], (512, 512))  # from the rounded keypoints
    np.testing.assert_allclose([again[k] for k in pose], list(pose.values()), atol=0.21)
    assert describe_pose(pose).startswith("yaw ")


def test_pose_axes_are_drawn_on_each_face(pipeline):
    rgb = load_photo(ASTRONAUT)
    result = pipeline(rgb)
    drawn = draw_pose_axes(rgb, result)
    x, y, w, h = (int(v) for v in result["faces"][0]["box"])
    changed = np.any(drawn != rgb, axis=-1)
    near = changed[max(0, y - h) : y + 2 * h, max(0, x - w) : x + 2 * w].sum()
    assert changed[y : y + h, x : x + w].sum() > 100 and changed.sum() == near  # on the face, nowhere else
    np.testing.assert_array_equal(annotate(rgb, result, pose_axes=True), draw_pose_axes(annotate(rgb, result), result))
    half = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
    assert draw_pose_axes(half, result).shape == half.shape  # any display size


def assert_symmetries_hold(errors: dict[str, list[float]], tolerance: float) -> None:
    for name in ("mirror yaw", "mirror roll", "turn roll"):
        assert np.abs(errors[name]).max() <= tolerance, (name, errors)


def test_mirrored_and_turned_astronaut(pipeline):
    """Mirrored, her yaw and roll change sign; turned by 20 degrees either way, her roll follows."""
    rgb = load_photo(ASTRONAUT)
    errors = symmetry_errors(pipeline, rgb, np.asarray(pipeline(rgb)["faces"][0]["keypoints"]), turn=20)
    assert errors is not None
    assert_symmetries_hold(errors, 2.0)
    assert np.abs(errors["turn yaw"]).max() <= 2.0


def test_mirrored_and_turned_real_photos(pipeline, real_300w_dir):
    """A few 300-W photos spread over the folder: the same symmetries, on average within 2 degrees."""
    with (real_300w_dir / "training_frames_keypoints.csv").open(newline="") as file:
        rows = sorted(list(csv.reader(file))[1:])
    totals: dict[str, list[float]] = {}
    for row in rows[:: len(rows) // 4][:4]:
        points = np.array([float(v) for v in row[1:]]).reshape(-1, 2)
        errors = symmetry_errors(pipeline, load_photo(real_300w_dir / "training" / row[0]), points, turn=20)
        assert errors is not None, row[0]
        for name, values in errors.items():
            totals.setdefault(name, []).extend(values)
    for name in ("mirror yaw", "mirror roll", "turn roll", "turn yaw"):
        assert np.abs(totals[name]).mean() <= 2.0, (name, totals[name])


def test_the_model_is_what_the_300w_markup_gives(real_300w_dir):
    """MEAN_FACE is reproducible: derived again from the 300-W training mark-up, it comes back."""
    with (real_300w_dir / "training_frames_keypoints.csv").open(newline="") as file:
        rows = list(csv.reader(file))[1:]
    keypoints = np.array([[float(v) for v in row[1:]] for row in rows]).reshape(len(rows), 68, 2)
    np.testing.assert_allclose(derive_mean_face(keypoints), MEAN_FACE, atol=0.06)
