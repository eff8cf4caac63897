"""Keypoint error metrics, all in original-image pixels."""

from __future__ import annotations

import numpy as np

# Outer eye corners in the 68-point scheme; their distance normalises the NME.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45
FAILURE_THRESHOLDS = (0.08, 0.10)


def interocular(truth: np.ndarray) -> np.ndarray:
    """Each face's outer-eye-corner distance (N,), the NME's unit (never below 1e-6)."""
    return np.maximum(np.linalg.norm(truth[:, RIGHT_EYE_OUTER] - truth[:, LEFT_EYE_OUTER], axis=-1), 1e-6)


def nme_per_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance over the inter-ocular distance, per image.

    predicted, truth: (N, 68, 2) in pixels. Returns (N,).
    """
    return np.linalg.norm(predicted - truth, axis=-1).mean(axis=-1) / interocular(truth)


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
    error = (predicted - truth) / interocular(truth)[:, None, None]
    summary = {}
    for name, points in REGIONS.items():
        part = error[:, list(points)]
        offset = part.mean(axis=(0, 1))
        summary[name] = {"nme": float(np.linalg.norm(part, axis=-1).mean()),
                         "offset_x": float(offset[0]), "offset_y": float(offset[1])}
    return summary


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank."""
    values = np.asarray(values, np.float64).ravel()
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    if len(unique) < len(values):
        ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long samples."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` for telling `positive` (bool) from the rest:
    the chance that a random positive scores above a random negative."""
    positive = np.asarray(positive, bool)
    ranks = _ranks(score)
    count, others = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - count * (count + 1) / 2) / (count * others))


def point_errors(uncertainty: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (`uncertainty`, pixels) and actual point errors (N, 68), both over each
    face's inter-ocular distance."""
    unit = interocular(truth)[:, None]
    return np.asarray(uncertainty, np.float64) / unit, np.linalg.norm(predicted - truth, axis=-1) / unit


def uncertainty_summary(uncertainty: np.ndarray, predicted: np.ndarray, truth: np.ndarray,
                        worst_share: float = 0.1) -> dict[str, float]:
    """How well the predicted per-point errors (N, 68, pixels) tell actual ones: the mean
    predicted over the mean actual error; Spearman's correlation of predicted and actual
    point errors, both over the inter-ocular distance; and the ROC AUC of a face's mean
    uncertainty (over its inter-ocular distance) for finding the worst `worst_share` of
    faces by NME."""
    expected, actual = point_errors(uncertainty, predicted, truth)
    nme = actual.mean(axis=1)
    worst = nme >= np.quantile(nme, 1 - worst_share)
    return {"uncertainty_ratio": float(expected.mean() / actual.mean()),
            "uncertainty_spearman": spearman(expected, actual),
            "uncertainty_worst_auc": roc_auc(worst, expected.mean(axis=1)) if 0 < worst.sum() < len(worst) else
            float("nan")}


def spearman_parts(uncertainty: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Where uncertainty_summary's point-by-point Spearman comes from, and how far it can
    go. Its parts: faces ranked by their mean predicted and actual errors ("between
    faces") and, on average, a face's points ranked among themselves ("within a face").
    Two references that know part of the answer: each face's actual mean error times
    the predicted shape of its errors over its points (a perfect ranking of faces), and
    each face's actual mean error times each point's mean actual error over all faces
    (faces ranked perfectly, points by their kind alone). All in inter-ocular units."""
    expected, actual = point_errors(uncertainty, predicted, truth)
    face_means = actual.mean(axis=1, keepdims=True)
    return {
        "pooled": spearman(expected, actual),
        "between_faces": spearman(expected.mean(axis=1), actual.mean(axis=1)),
        "within_a_face": float(np.nanmean([spearman(e, a) for e, a in zip(expected, actual)])),
        "actual_face_mean_times_predicted_shape": spearman(face_means * expected / expected.mean(axis=1, keepdims=True),
                                                           actual),
        "actual_face_mean_times_point_mean": spearman(face_means * actual.mean(axis=0), actual),
    }
