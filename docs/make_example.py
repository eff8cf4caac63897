"""Makes docs/example.jpg, the README's picture: the shipped pipeline on scikit-image's
public-domain astronaut photo (NASA's portrait of Eileen Collins), the whole photo as the
app annotates it beside its face enlarged, with the 68 points drawn again at that size.

    python docs/make_example.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxkp import load_pipeline  # noqa: E402
from jaxkp.draw import annotate, draw_keypoints  # noqa: E402
from jaxkp.examples import example_paths  # noqa: E402
from jaxkp.inference import load_photo  # noqa: E402


def main() -> None:
    rgb = load_photo(example_paths()[0])
    result = load_pipeline()(rgb)
    x, y, w, h = result["faces"][0]["box"]
    side = 1.6 * max(w, h)
    left, top = int(x + w / 2 - side / 2), int(y + h / 2 - side / 2)
    crop = rgb[max(top, 0) : top + int(side), max(left, 0) : left + int(side)]
    scale = rgb.shape[0] / crop.shape[0]
    enlarged = cv2.resize(crop, (round(crop.shape[1] * scale), rgb.shape[0]), interpolation=cv2.INTER_CUBIC)
    points = (np.asarray(result["faces"][0]["keypoints"]) - [max(left, 0), max(top, 0)]) * scale
    picture = np.hstack([annotate(rgb, result), draw_keypoints(enlarged, points)])
    target = Path(__file__).resolve().parent / "example.jpg"
    cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    faces = ", ".join(f"score {face['score']:.3f}" for face in result["faces"])
    print(f"{target}: {picture.shape[1]}x{picture.shape[0]}, {len(result['faces'])} face(s) ({faces}), "
          f"{target.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
