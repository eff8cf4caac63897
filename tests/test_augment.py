"""Augmentations keep keypoints on their facial features."""

import cv2
import numpy as np
import pytest

from jaxkp import geometry
from synthetic import draw_face
from train import data


def dot_position(patch: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(patch > 128)
    weights = patch[ys, xs].astype(np.float64)
    return np.array([np.average(xs + 0.5, weights=weights), np.average(ys + 0.5, weights=weights)])


def face_with_dot_at(index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark image with the face's keypoints known and one bright dot at keypoint `index`."""
    rng = np.random.default_rng(seed)
    _, points = draw_face(rng, 180, 200)
    image = np.zeros((200, 180), np.uint8)
    x, y = points[index]
    cv2.circle(image, (int(x), int(y)), 2, 255, -1)
    points = points.copy()
    points[index] = np.floor(points[index]) + 0.5  # the drawn dot's centre
    return image, points


TIGHT_CROP = (-0.25, -0.1, 1.5, 1.5)


def one_image_dataset(image, points, face_box=None):
    boxes = None if face_box is None else np.array([face_box], np.float64)
    return data.Dataset(["person_0001"], [image], points[None].astype(np.float32), boxes)


def transform(image, points, augmentation, seed, want_flip, face_box=None, crop=None):
    rng = np.random.default_rng(seed)
    dataset = one_image_dataset(image, points, face_box)
    for _ in range(100):  # draw until the flip coin lands as wanted
        matrix, flipped = data.augmented_matrix(dataset, 0, rng, augmentation, crop)
        if flipped == want_flip:
            return geometry.warp_to_input(image, matrix), data.target_keypoints(points, matrix, flipped)
    raise AssertionError("flip never came up as wanted")


def test_flip_permutation_is_a_mirror_pairing():
    permutation = data.FLIP_PERMUTATION
    assert sorted(permutation) == list(range(68))
    np.testing.assert_array_equal(permutation[permutation], np.arange(68))  # an involution
    assert permutation[36] == 45 and permutation[48] == 54 and permutation[0] == 16 and permutation[30] == 30


@pytest.mark.parametrize("feature", [36, 0, 48, 19, 31])  # eye corner, jaw start, mouth corner, brow, nose
def test_flipped_image_keeps_each_label_on_its_feature(feature):
    image, points = face_with_dot_at(feature)
    augmentation = data.Augmentation(flip=True)
    patch, targets = transform(image, points, augmentation, seed=1, want_flip=True)
    # The subject's feature drawn on the image's left is, once mirrored, its
    # counterpart on the right: its new label is the mirror index.
    mirrored = data.FLIP_PERMUTATION[feature]
    np.testing.assert_allclose(dot_position(patch), geometry.denormalize_keypoints(targets[mirrored]), atol=1.0)
    # Anatomy stays consistent: the subject's right eye (36-41) is still on the image's left.
    assert targets[36:42, 0].mean() < targets[42:48, 0].mean()
    assert targets[0, 0] < targets[16, 0]


@pytest.mark.parametrize("seed", [2, 3, 4])
@pytest.mark.parametrize("framed_by", ["keypoints", "haar box"])
def test_rotation_and_framing_jitter_move_image_and_keypoints_together(seed, framed_by):
    image, points = face_with_dot_at(45, seed=seed)
    face_box, crop = (None, None) if framed_by == "keypoints" else ((40.0, 50.0, 100.0, 100.0), TIGHT_CROP)
    augmentation = data.Augmentation(max_rotation_degrees=20, framing_jitter=1.0)
    patch, targets = transform(image, points, augmentation, seed, want_flip=False, face_box=face_box, crop=crop)
    np.testing.assert_allclose(dot_position(patch), geometry.denormalize_keypoints(targets[45]), atol=1.0)


def test_haar_box_framing_shows_the_crop_around_the_box():
    image, points = face_with_dot_at(30)
    dataset = one_image_dataset(image, points, (40.0, 50.0, 100.0, 100.0))
    matrix = data.face_framing_matrix(dataset, 0, TIGHT_CROP)
    # The crop (-0.25, -0.1, 1.5, 1.5) of that box spans x 15..165, y 40..190.
    corners = geometry.apply_affine(matrix, np.array([[15.0, 40.0], [165.0, 190.0]]))
    np.testing.assert_allclose(corners, [[0, 0], [224, 224]], atol=1e-9)
    # Without a box (the detector missed the face) it frames from the keypoints.
    no_box = one_image_dataset(image, points, (np.nan,) * 4)
    np.testing.assert_allclose(data.face_framing_matrix(no_box, 0, TIGHT_CROP),
                               geometry.detector_framing_matrix(points, crop=TIGHT_CROP))


def test_detector_framing_matches_the_apps_crop_rule():
    _, points = draw_face(np.random.default_rng(5), 180, 200)
    matrix = geometry.detector_framing_matrix(points)
    targets = geometry.normalize_keypoints(geometry.apply_affine(matrix, points))
    # The face fills the middle of the input as in the training crops.
    assert np.all(np.abs(targets) < 0.9)
    assert abs(targets[:, 0].mean()) < 0.15


def test_photometric_jitter_changes_pixels_not_keypoints():
    image, points = face_with_dot_at(30)
    augmentation = data.Augmentation(brightness=0.2, contrast=0.2)
    rng = np.random.default_rng(0)
    matrix, flipped = data.augmented_matrix(one_image_dataset(image, points), 0, rng, augmentation)
    patch = geometry.warp_to_input(image, matrix)
    jittered = data.jitter_photometric(patch, np.random.default_rng(1), augmentation)
    assert not np.array_equal(patch, jittered) and jittered.dtype == np.uint8
    assert not flipped


def test_augmented_batches_shapes(synthetic_data_dir):
    dataset = data.load_dataset(synthetic_data_dir)
    augmentation = data.Augmentation(flip=True, max_rotation_degrees=15, framing_jitter=1, brightness=0.2, contrast=0.2)
    batches = list(data.augmented_batches(dataset, 8, np.random.default_rng(0), augmentation))
    assert len(batches) == 3 and batches[0].images.shape == (8, 224, 224, 1)
    assert np.all(np.isfinite(batches[0].keypoints))


def test_batches_are_the_same_whatever_makes_the_examples(synthetic_data_dir):
    """Per-example generators: worker processes and threads make the very batches the
    calling thread makes, for an epoch that repeats and skips examples."""
    from multiprocessing import shared_memory

    dataset = data.load_dataset(synthetic_data_dir, limit=20)
    augmentation = data.Augmentation(flip=True, max_rotation_degrees=15, framing_jitter=1, brightness=0.2,
                                     contrast=0.2, blur=0.5, jpeg=0.5, occlusion=0.5)
    indices = np.array([0, 1, 1, 2, 3, 5, 5, 7, 8, 9, 11, 12, 13, 13, 14, 15, 17, 18, 19, 19])

    def epoch(workers):
        return list(data.augmented_batches(dataset, 8, np.random.default_rng(4), augmentation, workers=workers,
                                           indices=indices, shard=(1, 2)))

    expected = epoch(None)
    assert len(expected) == 2 and expected[0].images.shape == (4, 224, 224, 1)
    for kind in ("thread", "process"):
        workers = data.input_workers(dataset, 2, kind)
        try:
            made = epoch(workers)
            if kind == "process":
                with pytest.raises(ValueError, match="one dataset"):
                    next(data.augmented_batches(dataset.subset(np.arange(8)), 8, np.random.default_rng(0),
                                                augmentation, workers=workers))
        finally:
            workers.close()
        for got, want in zip(made, expected, strict=True):
            np.testing.assert_array_equal(got.images, want.images)
            np.testing.assert_array_equal(got.keypoints, want.keypoints)
            np.testing.assert_array_equal(got.flipped, want.flipped)
        if kind == "process":  # the shared block is gone after close
            with pytest.raises(FileNotFoundError):
                shared_memory.SharedMemory(name=workers.memory.name)
