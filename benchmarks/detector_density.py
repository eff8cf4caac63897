"""How densely the cascades scan, against what they find: the shipped detector and two cheaper layouts.

    python benchmarks/detector_density.py --data-dir $D/ibug-300w-train $D/youtube-faces-keypoints \\
        [--composites 200] [--large-composites 40]

OpenCV's detectMultiScale scans each level of its pyramid with a step of 2 pixels, and of 1 pixel on levels
whose window is twice the cascade's 24 px or more (four times the windows). The shipped detector runs each
source on the 1-megapixel detection copy (at the source's resolution) with windows of at least a twentieth
of the short side, so on a large photo its smallest faces sit on levels scanned one pixel at a time. Two layouts
scan fewer windows:

- octaves: each pass on copies halved octave by octave, each copy searched only for windows of 24 to 47 px,
  so every face is scanned with the 2-pixel step (relative to its size, as the smallest faces are today);
- per pass: each pass on one copy made straight from the photo at the scale where its smallest face (a
  twentieth of the short side, or the window at the source's resolution) is the 24-px window
  (docs/speed-profile.md, lever 5); photos whose copies need no such shrink (a short side up to 480 px, or
  873 px for the turned passes) are searched exactly as shipped.

`--smallest-face F ...` adds the shipped layout looking for faces of at least F of the short side (the
`smallest_face` setting; the shipped default is 0.05), and for each detector the recall of the labelled faces
it looks for: those whose detector box (placed on the labels as the cascade places it) is at least F of the
photo's short side, 0.05 for the shipped one.

Per set, alternating the detectors photo by photo: the detector's CPU time (process time, all threads; median
and mean), proposals per photo, recall of the labelled faces among the merged proposals and among the faces the
whole pipeline keeps (train.find_faces.match), and boxes kept that are no labelled face. Sets: each folder's
validation split of the bundled weights' run, `--composites` 640x480 composites of those faces (seed 0), and
`--large-composites` 1600x1200 ones with faces of 40 to 400 px (seed 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from jaxkp.checkpoint import read_config  # noqa: E402
from jaxkp.detect import (  # noqa: E402
    DETECTION_MAX_PIXELS,
    HAAR_GROUP_EPS,
    FaceDetector,
    Faces,
    turned_canvas_resolution,
)
from jaxkp.geometry import DETECTOR_BOX_MEDIAN, detector_box  # noqa: E402
from jaxkp.inference import MAX_PROPOSALS, FaceKeypointPipeline  # noqa: E402
from jaxkp.weights import load_model, resolve_weights  # noqa: E402
from train import composites as composite_photos  # noqa: E402
from train import data  # noqa: E402
from train.evaluate import validation_part  # noqa: E402
from train.find_faces import LabelledPhoto, Tally, group_photos  # noqa: E402

WINDOW = 24  # the cascades' own window
SMALLEST_FACE_SHARE = 1 / 20  # the shipped rule: windows of at least a twentieth of the short side


class OctaveCascade:
    """A cascade whose detectMultiScale2 searches octave by octave, so no level is scanned one pixel at a time."""

    def __init__(self, cascade: cv2.CascadeClassifier):
        self.cascade = cascade

    def detectMultiScale2(self, image: np.ndarray, scaleFactor: float, minNeighbors: int,  # noqa: N802, N803
                          minSize: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        windows = []
        shrink = WINDOW / minSize[0]  # the level where the smallest face is the window
        level = image if shrink >= 1 else cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        while min(level.shape) >= WINDOW:
            found, _ = self.cascade.detectMultiScale2(level, scaleFactor=scaleFactor, minNeighbors=0,
                                                      minSize=(WINDOW, WINDOW), maxSize=(2 * WINDOW - 1,) * 2)
            back = [image.shape[1] / level.shape[1], image.shape[0] / level.shape[0]] * 2
            windows += [tuple(int(round(v)) for v in np.asarray(window) * back) for window in found]
            level = cv2.resize(level, (level.shape[1] // 2, level.shape[0] // 2), interpolation=cv2.INTER_AREA)
        if minNeighbors == 0 or not windows:  # raw windows, as OpenCV gives them at 0 neighbours
            return np.array(windows, int).reshape(-1, 4), np.ones(len(windows), int)
        found, counts = cv2.groupRectangles(windows, minNeighbors, HAAR_GROUP_EPS)
        return np.asarray(found).reshape(-1, 4), np.asarray(counts).reshape(-1)


class DensityDetector(FaceDetector):
    """The shipped detector's sources, with the octave search and/or per-pass copies."""

    def __init__(self, octaves: bool, per_pass: bool):
        self.octaves, self.per_pass = octaves, per_pass
        super().__init__()

    def _load(self) -> dict:
        cascades = super()._load()
        return {name: OctaveCascade(cascade) for name, cascade in cascades.items()} if self.octaves else cascades

    def propose(self, gray: np.ndarray) -> Faces:
        if not self.per_pass:
            return super().propose(gray)
        budget = min(1.0, math.sqrt(DETECTION_MAX_PIXELS / gray.size))
        copies: dict[float, np.ndarray] = {}
        parts = []
        for index, source in enumerate(self.sources):
            scale = min(budget * source.resolution, turned_canvas_resolution(gray.shape, source.angle),
                        WINDOW / (SMALLEST_FACE_SHARE * min(gray.shape)))
            if scale not in copies:
                copies[scale] = gray if scale >= 1 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                                   interpolation=cv2.INTER_AREA)
            copy = copies[scale]
            # propose_from on the pass's own copy: the source then runs at full resolution on it.
            self.sources[index] = dataclasses.replace(source, resolution=1.0)
            try:
                faces = self.propose_from(index, copy)
            finally:
                self.sources[index] = source
            faces.boxes *= np.tile([gray.shape[1] / copy.shape[1], gray.shape[0] / copy.shape[0]], 2)
            parts.append(faces)
        return Faces.concatenate(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--composites", type=int, default=0)
    parser.add_argument("--large-composites", type=int, default=0)
    parser.add_argument("--limit", type=int, help="the first N photos of each set")
    parser.add_argument("--layouts", nargs="*", default=["octaves", "per pass"], choices=["octaves", "per pass"])
    parser.add_argument("--smallest-face", type=float, nargs="*", default=[],
                        help="shares of the short side to compare with the shipped detector's")
    args = parser.parse_args(argv)
    cv2.setNumThreads(2)
    weights_dir = resolve_weights(None)
    train_config = read_config(weights_dir)["train_config"]
    shipped = FaceKeypointPipeline.create(load_model(weights_dir))
    pipelines = {"shipped": shipped}
    pipelines |= {layout: dataclasses.replace(shipped, detector=DensityDetector(layout == "octaves",
                                                                               layout == "per pass"))
                  for layout in args.layouts}
    pipelines |= {f"smallest {share:g}": dataclasses.replace(shipped, detector=FaceDetector(smallest_face=share))
                  for share in args.smallest_face}
    validation = [validation_part(data.load_dataset(folder, "training"), folder, train_config)
                  for folder in args.data_dir]
    sets: dict[str, list[LabelledPhoto]] = {folder.name: group_photos(dataset)
                                            for folder, dataset in zip(args.data_dir, validation)}
    faces = data.Dataset.concatenate(validation)
    if args.composites:
        sets["composites 640x480 (seed 0)"] = [LabelledPhoto(c.image, c.keypoints)
                                               for c in composite_photos.make_composites(faces, args.composites, 0)]
    if args.large_composites:
        size, sides = composite_photos.SIZE, composite_photos.FACE_SIDE_RANGE
        composite_photos.SIZE, composite_photos.FACE_SIDE_RANGE = (1600, 1200), (40.0, 400.0)
        try:
            sets["composites 1600x1200 (seed 1)"] = [
                LabelledPhoto(c.image, c.keypoints)
                for c in composite_photos.make_composites(faces, args.large_composites, 1)]
        finally:
            composite_photos.SIZE, composite_photos.FACE_SIDE_RANGE = size, sides
    for title, photos in sets.items():
        photos = photos[:args.limit]
        names = list(pipelines)
        # Per detector: its CPU seconds a photo, and the tallies of its proposals and of the faces kept.
        cpu: dict[str, list[float]] = {name: [] for name in names}
        proposed, kept = {name: Tally() for name in names}, {name: Tally() for name in names}
        looked_for = {name: Tally() for name in names}  # the faces at least its smallest face
        for index, photo in enumerate(photos):
            for name in names[index % len(names):] + names[:index % len(names)]:
                pipeline = pipelines[name]
                start = time.process_time()
                proposals = pipeline.detector(photo.image, MAX_PROPOSALS)
                cpu[name].append(time.process_time() - start)
                proposed[name].add(proposals.boxes, photo.keypoints)
                boxes = pipeline.find_faces(photo.image).faces.boxes
                kept[name].add(boxes, photo.keypoints)
                sides = np.array([detector_box(points, DETECTOR_BOX_MEDIAN)[2] for points in photo.keypoints])
                floor = pipeline.detector.smallest_face * min(photo.image.shape[:2])
                looked_for[name].add(boxes, photo.keypoints[sides >= floor])
        print(f"{title}: {len(photos)} photos, {sum(len(photo.keypoints) for photo in photos)} labelled faces")
        for name in names:
            found, held = proposed[name].summary(), kept[name].summary()
            print(f"  {name:<8} detector CPU ms median {1000 * np.median(cpu[name]):6.1f} "
                  f"mean {1000 * np.mean(cpu[name]):6.1f} | proposals/photo {proposed[name].boxes / len(photos):5.2f}"
                  f" | recall: proposals {found['recall']:.3f}, kept {held['recall']:.3f}"
                  f" | unmatched kept/photo {held['unmatched_per_photo']:.3f}"
                  f" | recall of the faces looked for {looked_for[name].summary()['recall']:.3f}"
                  f" ({looked_for[name].faces})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
