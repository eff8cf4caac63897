"""Where aligned crops put the eyes, read again by the pipeline, over many real faces.

    python benchmarks/align_spread.py --data-dir ../shared/data/ibug-300w-train --count 50 --size 256

For each photo (COUNT spread evenly over the folder's sorted names) and each template,
the first face is aligned, the crop is read again by the pipeline (on a grey margin of
a quarter of the side, with every face proposal source), and its eye centres (means of
points 36-41 and 42-47) are compared across photos: per eye, the root-mean-square and
the largest distance from the eye's mean place, in % of the crop's side. "matrix vs
read" is how far the eyes found in the crop lie from where the crop's matrix puts the
eyes found in the photo (the crop and its matrix agree; the rest is the templates' own
give: FFHQ's square follows the eye and mouth distances, ArcFace's fit balances five
points).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from jaxkp import load_pipeline  # noqa: E402
from jaxkp.align import TEMPLATES, aligned_faces, eye_centres  # noqa: E402
from jaxkp.detect import THOROUGH_SOURCES, FaceDetector  # noqa: E402
from jaxkp.inference import FaceKeypointPipeline, load_photo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a folder with a training/ folder of photos")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    names = sorted(path.name for path in (args.data_dir / "training").glob("*.jpg"))
    names = names[:: max(1, len(names) // args.count)][: args.count]
    pipeline = load_pipeline()
    reader = FaceKeypointPipeline(pipeline.model, FaceDetector(THOROUGH_SOURCES), pipeline.min_score, gated=False)
    margin = args.size // 4
    found: dict[str, list[np.ndarray]] = {template: [] for template in TEMPLATES}
    offsets: dict[str, list[float]] = {template: [] for template in TEMPLATES}
    missed = dict.fromkeys(TEMPLATES, 0)
    faceless = 0
    for name in names:
        rgb = load_photo(args.data_dir / "training" / name)
        result = pipeline(rgb)
        if not result["faces"]:
            faceless += 1
            continue
        for template in TEMPLATES:
            crop, matrix = aligned_faces(rgb, result, args.size, template)[0]
            shown = cv2.copyMakeBorder(crop, margin, margin, margin, margin, cv2.BORDER_CONSTANT,
                                       value=(128, 128, 128))
            faces = reader(shown)["faces"]
            if not faces:
                missed[template] += 1
                continue
            eyes = np.stack(eye_centres(np.asarray(faces[0]["keypoints"]) - margin))
            placed = np.stack(eye_centres(np.asarray(result["faces"][0]["keypoints"]))) @ matrix[:, :2].T + matrix[:, 2]
            found[template].append(eyes)
            offsets[template].extend(np.linalg.norm(eyes - placed, axis=-1).tolist())
    print(f"{len(names)} photos, {faceless} without a face found; crops of {args.size} px")
    print(f"{'template':<10}{'crops':>6}{'missed':>7}   {'eye':<6}{'mean place':>14}{'rms %':>8}{'max %':>8}"
          f"{'matrix vs read, mean / max %':>30}")
    for template in TEMPLATES:
        eyes = np.array(found[template])
        distance = np.linalg.norm(eyes - eyes.mean(axis=0), axis=-1) / args.size * 100
        offset = np.array(offsets[template]) / args.size * 100
        for index, eye in enumerate(("right", "left")):
            place = ", ".join(f"{v:.1f}" for v in eyes.mean(axis=0)[index])
            print(f"{template:<10}{len(eyes):>6}{missed[template]:>7}   {eye:<6}{place:>14}"
                  f"{np.sqrt((distance[:, index] ** 2).mean()):>8.2f}{distance[:, index].max():>8.2f}"
                  + (f"{offset.mean():>22.2f} / {offset.max():.2f}" if index == 0 else ""))


if __name__ == "__main__":
    main()
