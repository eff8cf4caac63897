"""`python -m train.framing --data-dir DATA [DATA ...]`: how the Haar cascades frame the training faces.

For each proposal source that runs on the photo as it is (jaxkp.detect.SOURCES;
turned sources frame as their cascade does upright), prints where its box lies
relative to the keypoints' bounding box (left, top, width, height in units of
that box): the medians set the source's `placement` in jaxkp.detect, and the
frontal cascade's spread sets the framing jitter (geometry.DETECTOR_BOX_STD).
For the frontal cascade it also prints where the whole training image lies
relative to its box, which sets geometry.TRAINING_IMAGE_CROP.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from jaxkp.detect import SOURCES, FaceDetector
from train import data


def measure(dataset: data.Dataset, source: str) -> dict[str, np.ndarray | float]:
    """The source's box, on each face it finds, in units of the keypoints' box (and the image in box units)."""
    detector = FaceDetector((source,))
    image_rel, keypoint_rel = [], []
    for image, points in zip(dataset.images, dataset.keypoints):
        boxes, _, _ = detector.cascade_boxes(0, image)
        low, high = points.min(axis=0), points.max(axis=0)
        centre = points.mean(axis=0)
        inside = [box for box in boxes if np.all(box[:2] <= centre) and np.all(centre <= box[:2] + box[2:])]
        if not inside:
            continue
        x, y, w, h = min(inside, key=lambda box: np.linalg.norm(box[:2] + box[2:] / 2 - centre))
        height, width = image.shape
        image_rel.append([-x / w, -y / h, width / w, height / h])
        keypoint_rel.append([(x - low[0]) / (high[0] - low[0]), (y - low[1]) / (high[1] - low[1]),
                             w / (high[0] - low[0]), h / (high[1] - low[1])])
    return {"detection_rate": len(image_rel) / len(dataset), "image": np.array(image_rel).reshape(-1, 4),
            "box_in_keypoint_units": np.array(keypoint_rel).reshape(-1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--every", type=int, default=1, help="use every N-th image")
    parser.add_argument("--sources", nargs="+", default=[name for name, s in SOURCES.items() if not s.angle],
                        choices=sorted(SOURCES))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    dataset = data.Dataset.concatenate([data.load_dataset(d) for d in args.data_dir])
    dataset = dataset.subset(np.arange(0, len(dataset), args.every))
    labels = "left, top, width, height"
    for source in args.sources:
        result = measure(dataset, source)
        print(f"{source}: {len(dataset)} images, detection rate {result['detection_rate']:.3f}")
        titles = [("box_in_keypoint_units", "box relative to the keypoints' bounding box")]
        if source == "frontal":
            titles.append(("image", "training image relative to the box"))
        for key, title in titles:
            values = result[key]
            if not len(values):
                continue
            print(f"  {title} ({labels}):")
            print("    median", np.round(np.median(values, axis=0), 3), " std", np.round(values.std(axis=0), 3),
                  " p25", np.round(np.percentile(values, 25, axis=0), 3),
                  " p75", np.round(np.percentile(values, 75, axis=0), 3))


if __name__ == "__main__":
    main()
