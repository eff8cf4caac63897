from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxkp import geometry
from train import data


def test_loads_jpeg_and_png_named_jpg(synthetic_data_dir):
    dataset = data.load_dataset(synthetic_data_dir)
    assert len(dataset) == 24
    assert dataset.keypoints.shape == (24, 68, 2)
    assert all(image.ndim == 2 and image.dtype == np.uint8 for image in dataset.images)
    assert (synthetic_data_dir / "training" / dataset.names[0]).read_bytes()[:4] == b"\x89PNG"


def test_split_is_by_person_and_seeded(synthetic_data_dir):
    names = data.load_dataset(synthetic_data_dir).names
    train, val = data.split_by_person(names, 0.34, seed=1)
    assert len(train) + len(val) == len(names) and len(val) > 0
    assert not {data.person_of(names[i]) for i in train} & {data.person_of(names[i]) for i in val}
    again_train, again_val = data.split_by_person(names, 0.34, seed=1)
    np.testing.assert_array_equal(val, again_val)
    assert data.person_of("Abdel_Aziz_Al-Hakim_01.jpg") == "Abdel_Aziz_Al-Hakim"


def copy_layout(source: Path, target: Path) -> Path:
    (target / "training").mkdir(parents=True)
    for path in (source / "training").iterdir():
        (target / "training" / path.name).write_bytes(path.read_bytes())
    (target / "training_frames_keypoints.csv").write_text((source / "training_frames_keypoints.csv").read_text())
    return target


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda rows: rows.__setitem__(2, rows[2].rsplit(",", 1)[0]), "row 3 has 136 columns, expected 137"),
        (lambda rows: rows.__setitem__(3, rows[3].replace(",", ",abc,", 1).rsplit(",", 1)[0]), "row 4"),
        (lambda rows: rows.__setitem__(5, rows[5].split(",", 1)[0] + ",nan," + rows[5].split(",", 2)[2]), "row 6"),
        (lambda rows: rows.__setitem__(1, "Missing_Person_00.jpg," + rows[1].split(",", 1)[1]), "image not found"),
    ],
)
def test_bad_data_names_the_problem(synthetic_data_dir, tmp_path, corrupt, message):
    root = copy_layout(synthetic_data_dir, tmp_path)
    csv = root / "training_frames_keypoints.csv"
    rows = csv.read_text().splitlines()
    corrupt(rows)
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(data.DataError, match=message):
        data.load_dataset(root)


def test_unreadable_image_is_named(synthetic_data_dir, tmp_path):
    root = copy_layout(synthetic_data_dir, tmp_path)
    victim = sorted((root / "training").iterdir())[4]
    victim.write_bytes(b"not an image at all")
    with pytest.raises(data.DataError, match=victim.name):
        data.load_dataset(root)


def test_keypoints_map_to_input_and_back_exactly():
    rng = np.random.default_rng(0)
    image = np.zeros((150, 120), np.uint8)
    points = rng.uniform(0, 120, (68, 2))
    for matrix in [geometry.full_image_matrix(image), geometry.random_crop_matrix(image, rng, 0.9)]:
        normalised = geometry.normalize_keypoints(geometry.apply_affine(matrix, points))
        np.testing.assert_allclose(geometry.keypoints_to_image(normalised, matrix), points, atol=1e-9)
    corners = np.array([[0, 0], [120, 150]])
    full = geometry.normalize_keypoints(geometry.apply_affine(geometry.full_image_matrix(image), corners))
    np.testing.assert_allclose(full, [[-1, -1], [1, 1]])


@pytest.mark.parametrize("shape", [(150, 120), (900, 1400)])  # upscale, and a large shrink
def test_warped_image_and_keypoints_agree(shape):
    """A bright dot drawn at a keypoint lands where the matrix sends the keypoint."""
    rng = np.random.default_rng(1)
    height, width = shape
    image = np.zeros(shape, np.uint8)
    point = np.array([width * 0.37, height * 0.61])
    radius = max(2, int(0.015 * max(shape)))
    cv2.circle(image, (int(point[0]), int(point[1])), radius, 255, -1)
    point_centre = np.floor(point) + 0.5  # the centre of the drawn pixel, continuous coordinates
    for matrix in [geometry.full_image_matrix(image), geometry.random_crop_matrix(image, rng, 0.9)]:
        warped = geometry.warp_to_input(image, matrix).astype(np.float64)
        ys, xs = np.nonzero(warped > 0)
        weights = warped[ys, xs]
        centroid = np.array([np.average(xs + 0.5, weights=weights), np.average(ys + 0.5, weights=weights)])
        np.testing.assert_allclose(centroid, geometry.apply_affine(matrix, point_centre), atol=0.6)


def test_train_batches_are_deterministic_per_seed(synthetic_data_dir):
    dataset = data.load_dataset(synthetic_data_dir)
    first = list(data.train_batches(dataset, 8, np.random.default_rng([0, 1]), 0.9))
    second = list(data.train_batches(dataset, 8, np.random.default_rng([0, 1]), 0.9))
    assert len(first) == 3
    assert first[0].images.shape == (8, 224, 224, 1) and first[0].images.dtype == np.uint8
    np.testing.assert_array_equal(first[1].images, second[1].images)
    np.testing.assert_array_equal(first[1].keypoints, second[1].keypoints)


def test_eval_batches_pad_the_last_batch(synthetic_data_dir):
    dataset = data.load_dataset(synthetic_data_dir)
    sizes = [(batch.images.shape[0], valid) for batch, valid in data.eval_batches(dataset, 10)]
    assert sizes == [(10, 10), (10, 10), (10, 4)]


def test_real_data_loads_whole(real_data_dir):
    names, keypoints = data.read_keypoints_csv(real_data_dir / "training_frames_keypoints.csv")
    assert len(names) == 3462 and keypoints.shape == (3462, 68, 2)
    assert len({data.person_of(n) for n in names}) == 347
