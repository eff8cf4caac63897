import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxkp import metrics

ROOT = Path(__file__).resolve().parent.parent


def test_nme_is_error_over_outer_eye_corner_distance():
    truth = np.zeros((2, 68, 2))
    truth[:, 36], truth[:, 45] = [10, 50], [110, 50]  # inter-ocular distance 100
    predicted = truth.copy()
    predicted[0] += [3, 4]  # every point 5 px off
    summary = metrics.summarize(predicted, truth)
    np.testing.assert_allclose(metrics.nme_per_image(predicted, truth), [0.05, 0.0])
    assert summary["nme_mean"] == 0.025 and summary["nme_median"] == 0.025
    assert summary["failure_rate_0.08"] == 0.0
    np.testing.assert_allclose(summary["rmse_px"], np.sqrt(25 / 2))


@pytest.mark.slow
def test_evaluate_cli_scores_any_folder_in_the_layout(synthetic_data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--data-dir", str(synthetic_data_dir), "--split", "training",
         "--grid", str(tmp_path / "grid.png"), "--json", str(tmp_path / "figures.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["images"] == 24
    assert {"nme_mean", "nme_median", "failure_rate_0.08", "failure_rate_0.10", "rmse_px"} <= set(figures)
    worst_nme = [entry["nme"] for entry in figures["worst"]]
    assert len(worst_nme) == 5 and worst_nme == sorted(worst_nme, reverse=True)
    assert worst_nme[-1] >= figures["nme_median"]
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (4 * 224, 4 * 224, 3)  # 16 evenly spaced images, 4 per row
    # Ground truth is drawn in green, predictions in magenta (BGR here).
    assert np.any(np.all(grid == [0, 200, 0], axis=-1)) and np.any(np.all(grid == [255, 0, 255], axis=-1))


def test_training_and_validation_parts_split_the_folder_as_the_run_did(synthetic_data_dir):
    """--train-only scores the images the run trained on, --val-only those it held out:
    between them every image once, no person on both sides; --every thins the first."""
    from train import data
    from train.evaluate import training_part, validation_part

    dataset = data.load_dataset(synthetic_data_dir)
    run = {"val_fraction": 0.25, "seed": 0}
    train, val = training_part(dataset, synthetic_data_dir, run), validation_part(dataset, synthetic_data_dir, run)
    assert sorted(train.names + val.names) == sorted(dataset.names) and len(val.names) > 0
    assert not {data.person_of(n) for n in train.names} & {data.person_of(n) for n in val.names}
    assert training_part(dataset, synthetic_data_dir, run, every=3).names == train.names[::3]


@pytest.mark.slow
def test_evaluate_cli_names_a_missing_folder(tmp_path, capsys):
    from train.evaluate import main  # the command's entry point, in this process: it returns, never raises

    assert main(["--data-dir", str(tmp_path)]) == 1
    assert "test_frames_keypoints.csv" in capsys.readouterr().err


def score(data_dir: Path, json_path: Path, *extra: str) -> dict:
    """The figures of `python -m train.evaluate` on a run's validation part, from the
    command's entry point in this process (the test above runs the command itself)."""
    from train.evaluate import main

    assert main(["--data-dir", str(data_dir), "--split", "training", "--val-only", "--json", str(json_path),
                 *extra]) == 0
    return json.loads(json_path.read_text())


@pytest.mark.slow
def test_bundled_weights_on_real_validation_people(real_data_dir, tmp_path):
    """The shipped checkpoint on the people its run held out, framed as its training
    validated and end to end, in the video frames' own mark-up: it must stay ahead of
    dlib (0.064 end to end), of the weights trained on video frames alone (0.048) and of
    heatmap-300w-long, shipped before (0.0421 framed, 0.0406 end to end, 2.0 % over 0.08);
    it scores 0.0410 and 0.0402 (0.8 %). Its uncertainty stays calibrated (mean predicted
    over actual error 0.98) and finds the worst tenth of frames (AUC 0.89)."""
    for extra in ([], ["--end-to-end"]):
        figures = score(real_data_dir, tmp_path / "figures.json", "--markup", "youtube-faces-keypoints", *extra)
        assert figures["images"] > 200
        assert figures["nme_mean"] < (0.0406 if extra else 0.0421), figures
        assert 0.8 < figures["uncertainty_ratio"] < 1.25 and figures["uncertainty_worst_auc"] > 0.8, figures
        if extra:
            assert figures["detection_rate"] > 0.95 and figures["failure_rate_0.08"] <= 0.015, figures


@pytest.mark.slow
def test_bundled_weights_on_real_validation_photos(real_300w_dir, tmp_path):
    """The shipped checkpoint on the 300-W photos its run held out, end to end, in the
    mark-up it serves: it scores 0.0359; heatmap-300w-long, shipped before, 0.0365; the
    weights trained on video frames alone 0.065."""
    figures = score(real_300w_dir, tmp_path / "figures.json", "--end-to-end")
    assert figures["images"] > 150 and figures["detection_rate"] > 0.95
    assert figures["nme_mean"] < 0.0365 and figures["failure_rate_0.08"] <= 0.01, figures
    assert 0.8 < figures["uncertainty_ratio"] < 1.25, figures
    assert figures["uncertainty_spearman"] >= 0.45 and figures["uncertainty_worst_auc"] >= 0.8, figures
    # The mark-up it serves is 300-W's: no region sits off by a convention shift.
    assert all(abs(region["offset_y"]) < 0.01 for region in figures["regions"].values()), figures["regions"]
