"""Each point's expected error ("uncertainty"): the heatmap spread it is read from,
the fitted model, the figures that judge it, and the output in every result."""

from __future__ import annotations

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkp import draw, load_pipeline, metrics
from jaxkp.inference import load_photo
from jaxkp.model import NUM_KEYPOINTS, heatmap_spread
from jaxkp.track import FaceTracker
from jaxkp.uncertainty import PointUncertainty, fit_point_uncertainty
from tests.photos import ASTRONAUT


def test_heatmap_spread_of_a_flat_a_peaked_and_a_split_map():
    size = 28
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    flat = np.zeros((1, size, size, 1), np.float32)
    np.testing.assert_allclose(heatmap_spread(jnp.asarray(flat))[0, 0], np.sqrt(2 * centres.var()), rtol=1e-5)
    peaked = flat.copy()
    peaked[0, 10, 20, 0] = 60.0
    assert heatmap_spread(jnp.asarray(peaked))[0, 0] < 1e-3
    split = flat.copy()
    split[0, 10, 4, 0] = split[0, 10, 14, 0] = 60.0  # two equal peaks 10 cells apart along x
    np.testing.assert_allclose(heatmap_spread(jnp.asarray(split))[0, 0], (centres[14] - centres[4]) / 2, rtol=1e-3)


def test_rank_correlation_and_roc_auc():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200)
    assert metrics.spearman(values, np.exp(values)) == pytest.approx(1.0)
    assert metrics.spearman(values, -values**3) == pytest.approx(-1.0)
    assert abs(metrics.spearman(values, rng.normal(size=200))) < 0.2
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties share their mean rank
    labels = np.arange(100) >= 90
    assert metrics.roc_auc(labels, np.arange(100)) == 1.0
    assert metrics.roc_auc(labels, -np.arange(100)) == 0.0
    assert metrics.roc_auc(labels, np.ones(100)) == 0.5


def generated_readings(rng: np.random.Generator, faces: int, slopes: np.ndarray, intercepts: np.ndarray):
    """Heatmap features and point errors drawn from a known model: each error is its
    expected size times a unit-mean random factor."""
    spread = np.exp(rng.normal(-2.5, 0.3, size=(faces, NUM_KEYPOINTS)) + rng.normal(0, 0.4, size=(faces, 1)))
    peaks = rng.normal(-3.0, 0.5, size=(faces, NUM_KEYPOINTS)) + rng.normal(0, 0.4, size=(faces, 1))
    expected = PointUncertainty(slopes, intercepts)(spread, peaks)
    return spread, peaks, expected, expected * rng.exponential(1.0, size=expected.shape)


def test_fitting_recovers_a_known_model_and_its_mean():
    rng = np.random.default_rng(1)
    slopes, intercepts = np.array([0.8, -0.3, 0.4, -0.2]), rng.normal(-1.0, 0.3, NUM_KEYPOINTS)
    spread, peaks, _, errors = generated_readings(rng, 600, slopes, intercepts)
    fitted = fit_point_uncertainty(spread, peaks, errors)
    np.testing.assert_allclose(fitted.slopes, slopes, atol=0.08)
    assert fitted(spread, peaks).mean() == pytest.approx(errors.mean(), rel=1e-6)
    # On new faces from the same model: calibrated, and it ranks points and faces.
    spread, peaks, expected, errors = generated_readings(rng, 600, slopes, intercepts)
    predicted = fitted(spread, peaks)
    assert 0.95 < predicted.mean() / errors.mean() < 1.05
    assert metrics.spearman(predicted, expected) > 0.98
    assert metrics.spearman(predicted, errors) > 0.3  # an error is its expected size times noise
    restored = PointUncertainty.from_config(fitted.to_config())
    np.testing.assert_allclose(restored(spread, peaks), predicted, rtol=1e-4)


def test_uncertainty_summary_of_calibrated_and_miscalibrated_predictions():
    rng = np.random.default_rng(2)
    truth = rng.uniform(100, 300, size=(300, NUM_KEYPOINTS, 2))
    truth[:, 36], truth[:, 45] = [100, 150], [200, 150]  # inter-ocular distance 100 px
    # Hard faces and hard points: each face's scale times each point's.
    scale = rng.uniform(0.5, 3, size=(300, 1)) * rng.uniform(1, 3, size=(300, NUM_KEYPOINTS))
    angle = rng.uniform(0, 2 * np.pi, size=scale.shape)
    length = scale * rng.exponential(1.0, size=scale.shape)
    predicted = truth + np.stack([np.cos(angle), np.sin(angle)], -1) * length[..., None]
    good = metrics.uncertainty_summary(scale, predicted, truth)
    assert 0.9 < good["uncertainty_ratio"] < 1.1
    # An error is its expected size times noise: even the true sizes correlate only so far.
    assert good["uncertainty_spearman"] > 0.3 and good["uncertainty_worst_auc"] > 0.8
    assert metrics.uncertainty_summary(2 * scale, predicted, truth)["uncertainty_ratio"] == pytest.approx(
        2 * good["uncertainty_ratio"])
    shuffled = metrics.uncertainty_summary(rng.permutation(scale.ravel()).reshape(scale.shape), predicted, truth)
    assert abs(shuffled["uncertainty_spearman"]) < 0.1 and shuffled["uncertainty_worst_auc"] < 0.7


def test_spearman_parts_split_faces_from_points_and_bound_what_kind_alone_gives():
    rng = np.random.default_rng(3)
    truth = rng.uniform(100, 300, size=(400, NUM_KEYPOINTS, 2))
    truth[:, 36], truth[:, 45] = [100, 150], [200, 150]
    face, kind = rng.uniform(0.5, 3, size=(400, 1)), rng.uniform(1, 3, size=(1, NUM_KEYPOINTS))
    # Each point's error: its face's scale, its kind's and its own (which no kind tells).
    own = rng.uniform(0.5, 2, size=(400, NUM_KEYPOINTS))
    length = face * kind * own * rng.exponential(1.0, size=own.shape)
    angle = rng.uniform(0, 2 * np.pi, size=own.shape)
    predicted = truth + np.stack([np.cos(angle), np.sin(angle)], -1) * length[..., None]
    knows_all = metrics.spearman_parts(face * kind * own, predicted, truth)
    knows_kinds = metrics.spearman_parts(face * kind, predicted, truth)
    exact = metrics.spearman_parts(length, predicted, truth)
    assert all(value == pytest.approx(1.0) for name, value in exact.items()
               if name != "actual_face_mean_times_point_mean")
    assert knows_all["pooled"] == pytest.approx(metrics.uncertainty_summary(
        face * kind * own, predicted, truth)["uncertainty_spearman"])
    # Knowing each point's own scale ranks a face's points better than its kind does...
    assert knows_all["within_a_face"] > knows_kinds["within_a_face"] + 0.05
    # ...and the face-and-kind reference is what a predictor of faces and kinds alone reaches.
    assert knows_kinds["pooled"] == pytest.approx(knows_kinds["actual_face_mean_times_point_mean"], abs=0.05)
    assert knows_all["pooled"] > knows_all["actual_face_mean_times_point_mean"]


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline()


def test_every_face_carries_its_points_expected_errors_in_the_photos_pixels(pipeline):
    rgb = load_photo(ASTRONAUT)
    face = pipeline(rgb)["faces"][0]
    uncertainty = np.asarray(face["uncertainty"])
    assert uncertainty.shape == (NUM_KEYPOINTS,) and np.all(uncertainty > 0)
    # Pixels of the photo: the same face at twice the size is expected off by about twice as much.
    doubled = pipeline(cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))["faces"][0]
    assert 1.7 < np.median(np.asarray(doubled["uncertainty"]) / uncertainty) < 2.3
    # Jaw points are less sure than the eye corners, whatever the face.
    assert uncertainty[:17].mean() > uncertainty[36:48].mean()
    # Tracked faces (live and video) carry it too.
    tracked = FaceTracker(pipeline)(rgb, 0.0)[0]
    assert len(tracked["uncertainty"]) == NUM_KEYPOINTS


def test_annotation_colours_each_dot_by_its_confidence(pipeline):
    rgb = load_photo(ASTRONAUT)
    result = pipeline(rgb)
    face = result["faces"][0]
    width = face["box"][2]
    colours = draw.confidence_colours(np.array([0.0, 0.04 * width, 1.0 * width]), width)
    assert colours == [draw.CONFIDENCE_COLOURS[0], draw.CONFIDENCE_COLOURS[1], draw.CONFIDENCE_COLOURS[2]]
    plain, coloured = draw.annotate(rgb, result), draw.annotate(rgb, result, confidence=True)
    dots = draw.confidence_colours(np.asarray(face["uncertainty"]), width)
    assert any(np.all(coloured == dots[i], axis=-1).any() for i in range(NUM_KEYPOINTS))
    assert not np.all(plain == dots[0], axis=-1).any() or dots[0] == draw.PREDICTION


def test_shipped_calibration_on_the_validation_photos(real_300w_dir):
    """The shipped model's figures on the validation split it was fitted on, and the
    cross-fitted ones (each half of the photos scored by a model fitted on the other)."""
    from jaxkp.checkpoint import read_config
    from jaxkp.weights import load_model, resolve_weights
    from train import data
    from train.evaluate import validation_part
    from train.uncertainty import Readings, cross_fitted

    weights = resolve_weights(None)
    model, train_config = load_model(weights), read_config(weights)["train_config"]
    reading = Readings(model, validation_part(data.load_dataset(real_300w_dir), real_300w_dir, train_config),
                       None, "photo")
    for figures in (reading.figures(model.uncertainty), cross_fitted([reading])[0]):
        assert 0.8 < figures["uncertainty_ratio"] < 1.25, figures
        assert figures["uncertainty_spearman"] >= 0.45, figures
        assert figures["uncertainty_worst_auc"] >= 0.8, figures


def test_a_video_records_each_points_expected_error_in_the_inputs_pixels():
    from jaxkp.video import to_input_pixels

    face = {"id": 3, "box": [10.0, 20.0, 30.0, 40.0], "keypoints": np.ones((NUM_KEYPOINTS, 2)).tolist(),
            "uncertainty": np.linspace(1, 2, NUM_KEYPOINTS).tolist(), "pose": None}
    recorded = to_input_pixels(face, np.array([3.0, 3.0]))  # frames worked on at a third of the input's size
    np.testing.assert_allclose(recorded["uncertainty"], np.linspace(3, 6, NUM_KEYPOINTS), atol=0.01)
    assert to_input_pixels(face | {"uncertainty": None}, np.array([3.0, 3.0]))["uncertainty"] is None
