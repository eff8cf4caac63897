"""Keypoint error metrics, all in original-image pixels."""

from __future__ import annotations

import numpy as np

# Outer eye corners in the 68-point scheme; their distance normalises the NME.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45
FAILURE_THRESHOLDS = (0.08, 0.10)


def nme_per_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance over the inter-ocular distance, per image.

    predicted, truth: (N, 68, 2) in pixels. Returns (N,).
    """
    point_errors = np.linalg.norm(predicted - truth, axis=-1).mean(axis=-1)
    interocular = np.linalg.norm(truth[:, RIGHT_EYE_OUTER] - truth[:, LEFT_EYE_OUTER], axis=-1)
    return point_errors / np.maximum(interocular, 1e-6)


def summarize(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """NME mean and median, failure rates, and the RMS point error in pixels."""
    nme = nme_per_image(predicted, truth)
    squared_distances = np.sum((predicted - truth) ** 2, axis=-1)
    summary = {
        "images": int(len(nme)),
        "nme_mean": float(nme.mean()),
        "nme_median": float(np.median(nme)),
        "rmse_px": float(np.sqrt(squared_distances.mean())),
    }
    for threshold in FAILURE_THRESHOLDS:
        summary[f"failure_rate_{threshold:.2f}"] = float((nme > threshold).mean())
    return summary


# The 68-point scheme's face regions (0-based point indices).
REGIONS = {
    "jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
    "mouth": range(48, 68),
}


def region_summary(predicted: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per face region: NME (its points' mean error over the inter-ocular distance) and
    the signed mean offset (dx, dy) of its points in the same unit, positive right and
    down. A mark-up convention shift shows as an offset near the region's NME."""
    interocular = np.maximum(np.linalg.norm(truth[:, RIGHT_EYE_OUTER] - truth[:, LEFT_EYE_OUTER], axis=-1), 1e-6)
    error = (predicted - truth) / interocular[:, None, None]
    summary = {}
    for name, points in REGIONS.items():
        part = error[:, list(points)]
        offset = part.mean(axis=(0, 1))
        summary[name] = {"nme": float(np.linalg.norm(part, axis=-1).mean()),
                         "offset_x": float(offset[0]), "offset_y": float(offset[1])}
    return summary
