"""Loss curve as a PNG, drawn with OpenCV so no plotting library is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxkp.checkpoint import write_atomic

TRAIN_COLOUR, VAL_COLOUR = (200, 90, 30), (40, 40, 220)  # BGR


def write_loss_curve(records: list[dict[str, Any]], path: Path, train_loss_name: str = "mse",
                     size: tuple[int, int] = (640, 400)) -> None:
    """Training loss (left axis) and validation MSE (right axis) per epoch, each on its own log scale."""
    width, height = size
    left, right, top, bottom = 70, 70, 30, 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    epochs = [r["epoch"] for r in records]
    if not epochs:
        return
    first, last = min(epochs), max(max(epochs), min(epochs) + 1)
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    cv2.putText(canvas, f"epoch {first}..{last}  (log scales)", (left, height - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    series = [("train_loss", f"train {train_loss_name}", TRAIN_COLOUR, 5),
              ("val_loss", "validation mse", VAL_COLOUR, width - right + 5)]
    for index, (key, label, colour, tick_x) in enumerate(series):
        points = [(r["epoch"], r[key]) for r in records if r.get(key, 0) > 0]
        if not points:
            continue
        logs = np.log10([value for _, value in points])
        low, high = logs.min(), max(logs.max(), logs.min() + 1e-3)

        def to_pixel(epoch: float, log_value: float, low: float = low, high: float = high) -> tuple[int, int]:
            x = left + (epoch - first) / (last - first) * (width - left - right)
            y = top + (high - log_value) / (high - low) * (height - top - bottom)
            return int(round(x)), int(round(y))

        for fraction in np.linspace(0, 1, 5):
            log_value = low + fraction * (high - low)
            _, y = to_pixel(first, log_value)
            cv2.putText(canvas, f"{10**log_value:.3g}", (tick_x, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
        pixels = [to_pixel(epoch, log_value) for (epoch, _), log_value in zip(points, logs)]
        if len(pixels) > 1:
            cv2.polylines(canvas, [np.array(pixels, np.int32)], False, colour, 2, cv2.LINE_AA)
        for pixel in pixels:
            cv2.circle(canvas, pixel, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(canvas, label, (left + 10 + 200 * index, top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    ok, png = cv2.imencode(".png", canvas)
    if ok:
        write_atomic(path, png.tobytes())
