"""`python -m train.uncertainty`: teach the keypoint network to say how far each point may be off.

Each validation face of the weights' run (held-out photos or people, the same
split the run validated on) is framed as its training validated and read once;
each point's heatmap spread and peak (jaxkp.uncertainty's features) are set
against its actual error in the network's input units, in its own data set's
mark-up. The log-linear model of jaxkp.uncertainty is fitted on them and written
into the weights' config.json ("uncertainty"), which jaxkp.inference applies.
The network's weights do not change.

The figures printed, per data set: the mean predicted over the mean actual
point error, Spearman's correlation of predicted and actual point errors, and
the ROC AUC of a face's mean predicted error for its data set's worst tenth of
faces (jaxkp.metrics.uncertainty_summary). They are given twice: fitted on all
the validation faces (in-sample), and cross-fitted (each half of the people
scored by the model fitted on the other half), the honest figure. Then, per data
set, the in-sample Spearman's parts and two references that know part of the
answer (jaxkp.metrics.spearman_parts; printed, not stored).

    python -m train.uncertainty --data-dir ../shared/data/ibug-300w-train \\
        ../shared/data/youtube-faces-keypoints
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaxkp import metrics
from jaxkp.checkpoint import CONFIG_FILE, WeightsError, write_json
from jaxkp.inference import KeypointModel
from jaxkp.model import NUM_KEYPOINTS
from jaxkp.uncertainty import PointUncertainty, fit_point_uncertainty
from train import data
from train.evaluate import holdout_of, load_run, read_framed, validation_part


class Readings:
    """One data set's validation faces as the network read them: what the model fits on,
    and what its figures are measured against."""

    def __init__(self, model: KeypointModel, dataset: data.Dataset, markup: str | None, holdout: str):
        self.people = [data.HOLDOUTS[holdout](name) for name in dataset.names]
        reading = read_framed(model, dataset, markup)
        self.spread, self.peaks = reading.spread, reading.evidence[:, :NUM_KEYPOINTS]
        self.names = dataset.names
        self.truth = dataset.keypoints
        self.predicted, self.unit_pixels = reading.keypoints, reading.unit_pixels
        # Actual point errors in normalised input units.
        self.errors = np.linalg.norm(self.predicted - self.truth, axis=-1) / self.unit_pixels[:, None]

    def expected(self, model: PointUncertainty, faces: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The faces' (all by default) predicted point errors in pixels."""
        return model(self.spread[faces], self.peaks[faces]) * self.unit_pixels[faces, None]

    def figures(self, model: PointUncertainty, faces: np.ndarray | None = None) -> dict[str, float]:
        faces = slice(None) if faces is None else faces
        return metrics.uncertainty_summary(self.expected(model, faces), self.predicted[faces], self.truth[faces])

    def spearman_parts(self, model: PointUncertainty) -> dict[str, float]:
        return metrics.spearman_parts(self.expected(model), self.predicted, self.truth)


def fit(readings: list[Readings], faces: list[np.ndarray] | None = None) -> PointUncertainty:
    faces = faces or [np.arange(len(r.names)) for r in readings]
    return fit_point_uncertainty(np.concatenate([r.spread[f] for r, f in zip(readings, faces)]),
                                 np.concatenate([r.peaks[f] for r, f in zip(readings, faces)]),
                                 np.concatenate([r.errors[f] for r, f in zip(readings, faces)]))


def cross_fitted(readings: list[Readings], seed: int = 0) -> list[dict[str, float]]:
    """Each data set's figures with each half of its people (or photos) scored by the
    model fitted on the other halves of all the data sets."""
    rng = np.random.default_rng(seed)
    halves = []
    for reading in readings:
        people = sorted(set(reading.people))
        first = set(rng.permutation(people)[: len(people) // 2].tolist())
        halves.append(np.array([person in first for person in reading.people]))
    expected = [np.zeros(r.errors.shape) for r in readings]
    for side in (True, False):
        model = fit(readings, [np.flatnonzero(half != side) for half in halves])
        for reading, half, out in zip(readings, halves, expected):
            scored = np.flatnonzero(half == side)
            out[scored] = reading.expected(model, scored)
    return [metrics.uncertainty_summary(out, r.predicted, r.truth) for r, out in zip(readings, expected)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.uncertainty", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="checkpoints", help="weights folder; its config.json is updated")
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    args = parser.parse_args(argv)
    try:
        weights_dir, model, config = load_run(args.weights)
        train_config, known = config["train_config"], config.get("markup_offsets", {})
        if not model.readout(np.zeros((1, 224, 224), np.uint8))[2].shape[1]:
            raise WeightsError(f"the {config.get('network')} network has no heatmaps to read (only heatmap "
                               "networks do)")
        readings = []
        for data_dir in args.data_dir:
            dataset = validation_part(data.load_dataset(data_dir), data_dir, train_config)
            readings.append(Readings(model, dataset, data_dir.name if data_dir.name in known else None,
                                     holdout_of(data_dir, train_config)))
    except (data.DataError, WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    uncertainty = fit(readings)
    figures: dict[str, Any] = {}
    for data_dir, reading, crossed in zip(args.data_dir, readings, cross_fitted(readings)):
        figures[data_dir.name] = {"faces": len(reading.names), "in_sample": reading.figures(uncertainty),
                                  "cross_fitted": crossed}
    print(json.dumps(figures, indent=2))
    parts = {data_dir.name: reading.spearman_parts(uncertainty) for data_dir, reading in zip(args.data_dir, readings)}
    print("Spearman's parts, in-sample:", json.dumps(parts, indent=2))
    if not args.dry_run:
        config["uncertainty"] = {**uncertainty.to_config(), "figures": figures}
        write_json(Path(weights_dir) / CONFIG_FILE, config)
        print(f"wrote uncertainty into {Path(weights_dir) / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
