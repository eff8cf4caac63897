"""`python -m train.framing --data-dir DATA`: how the Haar detector frames the training faces.

Runs jaxkp's face detector on the training images and prints, relative to the
detected box (x, y, w, h): where the training crop (the whole image) lies, which
sets jaxkp.inference's CROP_* constants; and where the keypoints' bounding box
lies, with its spread, which sets the detector-style framing of the improved
training recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from jaxkp import data
from jaxkp.inference import FaceDetector


def measure(dataset: data.Dataset) -> dict[str, np.ndarray | float]:
    detector = FaceDetector()
    image_rel, keypoint_rel = [], []
    for image, points in zip(dataset.images, dataset.keypoints):
        boxes = detector(image)
        if len(boxes) == 0:
            continue
        x, y, w, h = boxes[0]
        height, width = image.shape
        image_rel.append([-x / w, -y / h, width / w, height / h])
        low, high = points.min(axis=0), points.max(axis=0)
        # The box in units of the keypoints' bounding box: left, top, width, height.
        keypoint_rel.append([(x - low[0]) / (high[0] - low[0]), (y - low[1]) / (high[1] - low[1]),
                             w / (high[0] - low[0]), h / (high[1] - low[1])])
    return {"detection_rate": len(image_rel) / len(dataset), "image": np.array(image_rel),
            "box_in_keypoint_units": np.array(keypoint_rel)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--every", type=int, default=1, help="use every N-th image")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    dataset = data.load_dataset(args.data_dir)
    dataset = dataset.subset(np.arange(0, len(dataset), args.every))
    result = measure(dataset)
    print(f"{len(dataset)} images, detection rate {result['detection_rate']:.3f}")
    labels = "left, top, width, height"
    for key, title in (("image", "training crop relative to the box"),
                       ("box_in_keypoint_units", "box relative to the keypoints' bounding box")):
        values = result[key]
        print(f"{title} ({labels}):")
        print("  median", np.round(np.median(values, axis=0), 3), " std", np.round(values.std(axis=0), 3),
              " p25", np.round(np.percentile(values, 25, axis=0), 3), " p75", np.round(np.percentile(values, 75, axis=0), 3))


if __name__ == "__main__":
    main()
