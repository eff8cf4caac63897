"""Loss curve as a PNG, drawn with OpenCV so no plotting library is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxkp.checkpoint import write_atomic

SERIES = (("train_loss", (200, 90, 30)), ("val_loss", (40, 40, 220)))  # BGR


def write_loss_curve(records: list[dict[str, Any]], path: Path, size: tuple[int, int] = (640, 400)) -> None:
    """Train and validation MSE per epoch, log scale."""
    width, height = size
    left, right, top, bottom = 70, 20, 30, 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    epochs = [r["epoch"] for r in records]
    values = [r[key] for r in records for key, _ in SERIES if key in r and r[key] > 0]
    if not values:
        return
    low, high = np.log10(min(values)), np.log10(max(values))
    high = max(high, low + 1e-3)
    first, last = min(epochs), max(max(epochs), min(epochs) + 1)

    def to_pixel(epoch: float, value: float) -> tuple[int, int]:
        x = left + (epoch - first) / (last - first) * (width - left - right)
        y = top + (high - np.log10(value)) / (high - low) * (height - top - bottom)
        return int(round(x)), int(round(y))

    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for fraction in np.linspace(0, 1, 5):
        exponent = low + fraction * (high - low)
        _, y = to_pixel(first, 10**exponent)
        cv2.putText(canvas, f"{10**exponent:.3g}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(canvas, f"epoch {first}..{last}  (MSE, log scale)", (left, height - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for index, (key, colour) in enumerate(SERIES):
        points = [to_pixel(r["epoch"], r[key]) for r in records if key in r and r[key] > 0]
        if len(points) > 1:
            cv2.polylines(canvas, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
        for point in points:
            cv2.circle(canvas, point, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(canvas, key, (left + 10 + 120 * index, top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    ok, png = cv2.imencode(".png", canvas)
    if ok:
        write_atomic(path, png.tobytes())
