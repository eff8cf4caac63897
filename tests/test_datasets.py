"""Training on several data sets: hold-out rules, sampling, mark-up offsets, per-data-set figures."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkp import metrics
from jaxkp.inference import KeypointModel
from jaxkp.model import create_model
from synthetic import write_dataset
from train import data
from train.config import CONFIGS, DataSource
from train.train import TrainingError, WithConventions, epoch_subset, train_and_evaluate

NOSE = list(metrics.REGIONS["nose"])


def shifted_copy(source: Path, target: Path, nose_shift_px: float) -> Path:
    """The same images, labelled in another 'convention': nose points `nose_shift_px` lower."""
    target.mkdir(parents=True)
    (target / "training").symlink_to(source / "training")
    lines = (source / "training_frames_keypoints.csv").read_text().splitlines()
    rows = [lines[0]]
    for line in lines[1:]:
        name, *values = line.split(",")
        points = np.array(values, float).reshape(68, 2)
        points[NOSE, 1] += nose_shift_px
        rows.append(name + "," + ",".join(f"{v:.2f}" for v in points.reshape(-1)))
    (target / "training_frames_keypoints.csv").write_text("\n".join(rows) + "\n")
    return target


def test_photo_holdout_treats_each_file_as_its_own_person():
    names = [f"lfpw_image_{i:04d}.jpg" for i in range(40)] + [f"helen_{i}_1.jpg" for i in range(60)]
    train, val = data.split_by_person(names, 0.1, seed=0, holdout="photo")
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    # By person (the video frames' rule), every lfpw_image_* file would be one person "lfpw_image".
    _, by_person = data.split_by_person(names, 0.1, seed=0, holdout="person")
    lfpw_in_val = sum(names[i].startswith("lfpw") for i in by_person)
    assert lfpw_in_val in (0, 40)


def test_epoch_draws_each_data_set_by_its_weight(synthetic_data_dir):
    one = data.load_dataset(synthetic_data_dir, limit=10)
    two = data.load_dataset(synthetic_data_dir, limit=6)
    joined = data.Dataset.concatenate([one, two])
    assert joined.source_ids().tolist() == [0] * 10 + [1] * 6
    sources = [DataSource("a", sampling_weight=2.0), DataSource("b", sampling_weight=0.5)]
    epoch = epoch_subset(joined, sources, np.random.default_rng(0))
    assert np.bincount(joined.source_ids()[epoch]).tolist() == [20, 3]


class Zeros(nnx.Module):
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        return jnp.zeros((images.shape[0], 68, 2))


def test_markup_offsets_mirror_with_a_mirrored_example():
    model = WithConventions(Zeros(), 2)
    offsets = np.zeros((1, 68, 2))
    offsets[0, 36] = [0.1, 0.2]  # the right eye's outer corner sits right and low in data set 1
    model.offsets[...] = jnp.asarray(offsets)
    images = jnp.zeros((3, 224, 224, 1))
    out = np.asarray(model(images, jnp.array([0, 1, 1]), jnp.array([False, False, True])))
    assert np.all(out[0] == 0)  # data set 0 is the served mark-up
    np.testing.assert_allclose(out[1, 36], [0.1, 0.2])
    # Mirrored, the right eye's corner is point 45, and "right" is the other way.
    np.testing.assert_allclose(out[2, 45], [-0.1, 0.2])
    assert np.count_nonzero(out[2]) == 2
    np.testing.assert_array_equal(np.asarray(model(images)), 0)  # without sources: the bare network


@pytest.mark.slow
def test_two_data_sets_train_with_their_own_markups_and_report_each(synthetic_data_dir, tmp_path, capsys):
    photos = write_dataset(tmp_path / "photos", seed=1)
    frames = shifted_copy(synthetic_data_dir, tmp_path / "frames", nose_shift_px=6.0)
    config = CONFIGS["tiny"].replace(
        max_images=None, epochs=6, learning_rate=3e-3,
        datasets=(DataSource("photos", holdout="photo"), DataSource("frames", holdout="person")))
    with pytest.raises(TrainingError, match="folders named photos, frames"):
        train_and_evaluate(config, [photos, synthetic_data_dir], tmp_path / "wrong")
    records = train_and_evaluate(config, [frames, photos], tmp_path / "run")
    last = records[-1]
    for name in ("photos", "frames"):
        assert last[f"{name}/images"] > 0 and np.isfinite(last[f"{name}/nme_mean"])
    assert last["nme_mean"] == last["photos/nme_mean"]  # the served data set's figures keep the plain names
    assert "frames/own_markup/nme_mean" in last
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["markup"] == "photos" and list(saved["markup_offsets"]) == ["frames"]
    offsets = np.array(saved["markup_offsets"]["frames"])
    others = [i for i in range(68) if i not in NOSE]
    # The frames' nose sits lower in their mark-up; the learnt offset says so (y is down).
    assert offsets[NOSE, 1].mean() > offsets[others, 1].mean() + 0.01

    # Scoring in either mark-up, and per region: the evaluation command's own entry point, in
    # this process (tests/test_evaluate.py runs it as `python -m train.evaluate`).
    from train.evaluate import main as evaluate

    command = ["--weights", str(tmp_path / "run"), "--split", "training", "--data-dir", str(frames), "--json"]
    capsys.readouterr()
    assert evaluate(command + [str(tmp_path / "served.json")]) == 0, capsys.readouterr().err
    assert evaluate(command + [str(tmp_path / "own.json"), "--markup", "frames"]) == 0, capsys.readouterr().err
    served, own = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("served", "own"))
    assert set(served["regions"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
    assert own["regions"]["nose"]["offset_y"] > served["regions"]["nose"]["offset_y"]
    capsys.readouterr()
    assert evaluate(command + [str(tmp_path / "x.json"), "--markup", "nope"]) == 1
    assert "know no mark-up 'nope'" in capsys.readouterr().err


def test_region_summary_shows_a_shift_as_an_offset():
    truth = np.zeros((1, 68, 2))
    truth[0, 36], truth[0, 45] = [0, 0], [100, 0]
    predicted = truth.copy()
    predicted[0, NOSE, 1] += 4.0  # the nose 0.04 inter-ocular distances lower
    regions = metrics.region_summary(predicted, truth)
    np.testing.assert_allclose([regions["nose"]["nme"], regions["nose"]["offset_y"], regions["nose"]["offset_x"]],
                               [0.04, 0.04, 0.0])
    assert regions["eyes"]["nme"] == 0 and regions["jaw"]["offset_y"] == 0


def test_a_model_answers_in_a_learnt_markup():
    offsets = np.zeros((68, 2))
    offsets[NOSE, 1] = 0.05
    config = {"markup": "photos", "markup_offsets": {"frames": offsets.tolist()}}
    network = create_model("reference")
    patches = np.zeros((1, 224, 224), np.uint8)
    served = KeypointModel(network, config)(patches)
    frames = KeypointModel(create_model("reference"), config, markup="frames")(patches)
    np.testing.assert_allclose(frames - served, offsets[None], atol=1e-6)
    with pytest.raises(ValueError, match="know no mark-up"):
        KeypointModel(network, config, markup="other")
