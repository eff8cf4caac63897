"""How far each keypoint is likely to be off: the "uncertainty" output.

A heatmap network says more than where each point is: a point it is sure of has
a tight, peaked heatmap, one it guesses at (a jaw under a beard, a face turned
away, a blurred frame) a wide, flat one. The expected error of each point is
read from that evidence by a log-linear model,

    log E|error_k| = intercept_k + slopes . [log spread_k, peak_k,
                                             mean_j log spread_j, mean_j peak_j]

where spread_k is keypoint k's heatmap spread (jaxkp.model.heatmap_spread) and
peak_k the log of its heatmap's maximum, both in the network's input frame; the
face-wide means carry what a hard face does to all its points. The per-point
intercepts hold that jaw points are harder than eye corners. It is fitted on
held-out faces by `python -m train.uncertainty` (least squares on the log error,
then one factor so the mean predicted error matches the mean actual error) and
kept in config.json ("uncertainty"). The output is in normalised input units;
the pipeline turns it into the photo's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxkp.model import NUM_KEYPOINTS

FEATURES = ("log_spread", "peak", "face_log_spread", "face_peak")


def uncertainty_features(spread: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """(N, 68) heatmap spreads and log peaks -> (N, 68, len(FEATURES))."""
    log_spread = np.log(np.maximum(np.asarray(spread, np.float64), 1e-6))
    peaks = np.asarray(peaks, np.float64)
    face_spread = np.broadcast_to(log_spread.mean(axis=1, keepdims=True), log_spread.shape)
    face_peak = np.broadcast_to(peaks.mean(axis=1, keepdims=True), peaks.shape)
    return np.stack([log_spread, peaks, face_spread, face_peak], axis=-1)


@dataclass
class PointUncertainty:
    """The fitted model (see the module doc): predicts each point's expected error."""

    slopes: np.ndarray  # (len(FEATURES),)
    intercepts: np.ndarray  # (68,), the mean-matching factor's log included

    @classmethod
    def from_config(cls, values: dict[str, Any] | None) -> PointUncertainty | None:
        if not values:
            return None
        return cls(np.asarray(values["slopes"], np.float64), np.asarray(values["intercepts"], np.float64))

    def to_config(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "slopes": [round(float(v), 6) for v in self.slopes],
                "intercepts": [round(float(v), 6) for v in self.intercepts]}

    def __call__(self, spread: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        """(N, 68) spreads and log peaks -> (N, 68) expected point errors, normalised input units."""
        return np.exp(uncertainty_features(spread, peaks) @ self.slopes + self.intercepts)


def fit_point_uncertainty(spread: np.ndarray, peaks: np.ndarray, errors: np.ndarray) -> PointUncertainty:
    """Least squares of log(error) on the features with one intercept per point, then
    the one factor that makes the mean prediction the mean error (the exponential of a
    mean log is below the mean). errors: (N, 68) actual point errors, normalised units."""
    features = uncertainty_features(spread, peaks)
    count = len(features)
    design = np.concatenate([features.reshape(count * NUM_KEYPOINTS, -1),
                             np.tile(np.eye(NUM_KEYPOINTS), (count, 1))], axis=1)
    target = np.log(np.maximum(np.asarray(errors, np.float64), 1e-4)).ravel()
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    slopes, intercepts = coefficients[: len(FEATURES)], coefficients[len(FEATURES):]
    model = PointUncertainty(slopes, intercepts)
    model.intercepts = intercepts + np.log(np.mean(errors) / np.mean(model(spread, peaks)))
    return model
