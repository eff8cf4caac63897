"""Face finding: OpenCV's Haar cascades propose boxes, merged into one per face.

A proposal source is one cascade run one way: the frontal cascades on the
photo, the profile cascade on the photo and on its mirror (it knows one side
only), and a frontal cascade on the photo turned by a few degrees (it knows
upright faces only). Each source places its box differently on a face, so each
box is first moved into the frontal-default cascade's framing (the one the
networks' crops are measured against), from each source's median placement
measured on the training faces (`python -m train.framing`). Boxes of
several sources on one face are then merged into one, and a face found on a
turned photo keeps its angle so the network is shown it upright.

The detector proposes; it does not judge. False proposals (shirts, knees,
rocks) are dropped later by the keypoint network's face score
(jaxkp.inference).
"""

from __future__ import annotations

import math
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np

from jaxkp.geometry import DETECTOR_BOX_MEDIAN, apply_affine, detector_box, shrink_by

# Detection runs on a copy of at most this many pixels (its cost grows with the
# area); boxes map back. An area budget rather than a longest side keeps faces in
# a long strip (a panorama) large enough to find.
DETECTION_MAX_PIXELS = 1024 * 1024
HAAR_SCALE_FACTOR = 1.1
# How close two windows must be to be one face (OpenCV's own grouping, which it
# applies at 1 neighbour or more).
HAAR_GROUP_EPS = 0.2
# Where a turned photo does not reach, its canvas is flat mid-gray: no cascade
# finds a face in it, and no face at the photo's edge is cut off.
TURN_BORDER_VALUE = 128


@dataclass(frozen=True)
class ProposalSource:
    """One way of running one cascade.

    `placement` is where its box sits on a face, in units of the face's keypoint
    bounding box (left, top, width, height; medians from train.framing), so its
    boxes can be moved into the frontal-default framing.
    """

    name: str
    cascade: str  # file name in OpenCV's haarcascades folder
    placement: tuple[float, float, float, float]
    mirrored: bool = False  # run on the mirrored photo (the profile cascade knows one side)
    angle: float = 0.0  # degrees the photo is turned (counter-clockwise) before the cascade runs
    min_neighbors: int = 5
    scale_factor: float = HAAR_SCALE_FACTOR
    # Runs on the detection copy shrunk to this share of its side (a quarter of the
    # cost at 0.5; it then finds faces of 48 px and more, not 24).
    resolution: float = 1.0

    def __post_init__(self) -> None:
        if self.mirrored and self.angle:
            raise ValueError("a source either mirrors the photo or turns it, not both")


FRONTAL_PLACEMENT = tuple(float(v) for v in DETECTOR_BOX_MEDIAN)
# Medians measured by `python -m train.framing --every 3` on both training sets (1713
# faces; the frontal cascade's came out at (-0.096, -0.288, 1.162, 1.2), as before).
ALT2_PLACEMENT = (-0.075, -0.276, 1.132, 1.169)
PROFILE_PLACEMENT = (-0.047, -0.385, 1.303, 1.35)
PROFILE_MIRRORED_PLACEMENT = (-0.269, -0.39, 1.3, 1.358)

# The face score, not the cascade, is what rejects false boxes, so the sources ask
# for few neighbours (0 to 3, not OpenCV's customary 5) and propose more. At 0, a lone
# window is a proposal too: a face small, or leaning past what the cascade knows,
# often gets only one, and the network reads it well once the merge keeps the box of
# most windows (the turn that shows it upright). Turned and profile sources run at
# reduced resolution (a third to a quarter of the cost) on a canvas that holds the
# whole turned photo. What paid on 2 cores, measured source by source and as a whole
# pipeline on composites (README, "Finding faces"): a coarse frontal pass (scale step
# 1.3, lone windows kept: 0.75 of the composite faces for 36 ms) and frontal passes on
# the photo turned by ±25 degrees (0.55 resolution, step 1.2; 24 ms each). The
# frontal cascade knows faces within about 10 degrees of upright, and the composites
# lean up to 30 degrees, more with the faces' own lean. "frontal" is the finer pass
# the haar-box recipes' training faces were framed by.
SOURCES: dict[str, ProposalSource] = {
    source.name: source for source in (
        ProposalSource("frontal", "haarcascade_frontalface_default.xml", FRONTAL_PLACEMENT, min_neighbors=2,
                       scale_factor=1.15),
        ProposalSource("frontal-coarse", "haarcascade_frontalface_default.xml", FRONTAL_PLACEMENT, min_neighbors=0,
                       scale_factor=1.3),
        ProposalSource("frontal-alt2", "haarcascade_frontalface_alt2.xml", ALT2_PLACEMENT, min_neighbors=3),
        ProposalSource("frontal-turned+25", "haarcascade_frontalface_default.xml", FRONTAL_PLACEMENT, angle=25.0,
                       min_neighbors=0, resolution=0.55, scale_factor=1.2),
        ProposalSource("frontal-turned-25", "haarcascade_frontalface_default.xml", FRONTAL_PLACEMENT, angle=-25.0,
                       min_neighbors=0, resolution=0.55, scale_factor=1.2),
        ProposalSource("frontal-turned+15", "haarcascade_frontalface_default.xml", FRONTAL_PLACEMENT, angle=15.0,
                       min_neighbors=1, resolution=0.5, scale_factor=1.25),
        ProposalSource("frontal-turned-15", "haarcascade_frontalface_default.xml", FRONTAL_PLACEMENT, angle=-15.0,
                       min_neighbors=1, resolution=0.5, scale_factor=1.25),
        ProposalSource("profile", "haarcascade_profileface.xml", PROFILE_PLACEMENT, min_neighbors=3, resolution=0.5),
        ProposalSource("profile-mirrored", "haarcascade_profileface.xml", PROFILE_MIRRORED_PLACEMENT, mirrored=True,
                       min_neighbors=3, resolution=0.5),
    )
}
# The source whose boxes frame the "haar-box" recipes' training faces (the frontal
# framing every other source is moved into).
TRAINING_SOURCES = ("frontal",)
# What a detector runs unless told otherwise (README, "Finding faces");
# THOROUGH_SOURCES find a few more faces at about twice the cost.
DEFAULT_SOURCES = ("frontal-coarse", "frontal-turned+25", "frontal-turned-25")
THOROUGH_SOURCES = tuple(SOURCES)


@dataclass
class Faces:
    """Face boxes in the frontal-default framing, in photo pixels, one row per face."""

    boxes: np.ndarray  # (N, 4) x, y, w, h
    angles: np.ndarray  # (N,) degrees (counter-clockwise) that turn the face upright: box_framing_matrix's angle
    sources: np.ndarray  # (N,) index in the detector's `sources` of the box kept
    # (N,) how many cascade windows each box stands for (unknown: one each). The more,
    # the surer its cascade, and the nearer upright the face was on the (turned) photo
    # it ran on: a face that leans the other way is found by few windows, if any.
    windows: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.windows is None:
            self.windows = np.ones(len(self.boxes), int)

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, indices: np.ndarray | list[int]) -> Faces:
        indices = np.asarray(indices, int)
        return Faces(self.boxes[indices], self.angles[indices], self.sources[indices], self.windows[indices])

    @staticmethod
    def empty() -> Faces:
        return Faces(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))

    @staticmethod
    def concatenate(parts: list[Faces]) -> Faces:
        if not parts:
            return Faces.empty()
        return Faces(np.concatenate([p.boxes for p in parts]), np.concatenate([p.angles for p in parts]),
                     np.concatenate([p.sources for p in parts]), np.concatenate([p.windows for p in parts]))


def turn_photo(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """`gray` turned counter-clockwise about its centre onto a canvas that holds all of
    it (a same-size canvas cuts off the corners, and faces there), and the 2x3 matrix
    from `gray` to the canvas."""
    height, width = gray.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
    size = (math.ceil(width * cos + height * sin), math.ceil(width * sin + height * cos))
    turn[:, 2] += (size[0] - width) / 2, (size[1] - height) / 2
    return cv2.warpAffine(gray, turn, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=TURN_BORDER_VALUE), turn


def turned_canvas_resolution(shape: tuple[int, ...], degrees: float) -> float:
    """The largest share of its side at which a photo of `shape`, turned by `degrees`, fits
    a canvas of DETECTION_MAX_PIXELS (1 for a photo that fits whole). A long thin strip
    turned fills a canvas far larger than itself (a 25x40000 strip turned by 25 degrees:
    about 370 megapixels, too large for OpenCV past 32767 pixels a side, and gigabytes
    for the cascade); a photo of ordinary proportions turned by 25 degrees needs under
    three times its own area and is not shrunk by this."""
    if not degrees:
        return 1.0
    height, width = shape[:2]
    cos, sin = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    canvas = (width * cos + height * sin) * (width * sin + height * cos)
    return min(1.0, math.sqrt(DETECTION_MAX_PIXELS / max(canvas, 1.0)))


def to_frontal_framing(boxes: np.ndarray, placement: tuple[float, float, float, float]) -> np.ndarray:
    """Boxes (N, 4) a source placed at `placement` -> where the frontal-default cascade
    would place its box on the same faces (through the implied keypoint box)."""
    left, top, width, height = placement
    key_w, key_h = boxes[:, 2] / width, boxes[:, 3] / height
    key_x, key_y = boxes[:, 0] - left * key_w, boxes[:, 1] - top * key_h
    corners = np.stack([np.stack([key_x, key_y], 1), np.stack([key_x + key_w, key_y + key_h], 1)], 1)
    return np.array([detector_box(c, DETECTOR_BOX_MEDIAN) for c in corners]).reshape(-1, 4)


def overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of `box` (4,) with each of `boxes` (N, 4), all x, y, w, h."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


# Boxes of two sources that overlap this much are one face.
MERGE_OVERLAP = 0.3


def merge(faces: Faces, min_overlap: float = MERGE_OVERLAP) -> Faces:
    """One box per face: proposals are taken in order (most cascade windows first, then
    the detector's source order, then larger first) and each absorbs the later ones
    that overlap it. A face found on the photo turned both ways keeps the turn that
    showed it most nearly upright."""
    order = np.lexsort((-(faces.boxes[:, 2] * faces.boxes[:, 3]), faces.sources, -faces.windows))
    kept, absorbed = [], np.zeros(len(faces), bool)
    for position, index in enumerate(order):
        if absorbed[index]:
            continue
        kept.append(index)
        rest = order[position + 1:]
        absorbed[rest[overlap(faces.boxes[index], faces.boxes[rest]) > min_overlap]] = True
    return faces.take(kept)


# Faces narrower than this share of the photo's shorter side are not looked for (nor
# under the cascade's 24-px window on the image a pass runs on). A cascade's cost grows
# with the photo's area over the smallest face's, so portraits or a group of a few people
# read at a tenth cost a quarter to two fifths less; crowds need the twentieth
# (docs/face-finding.md, "The smallest face").
SMALLEST_FACE = 1 / 20
MAX_SMALLEST_FACE = 0.5


class FaceDetector:
    """Haar cascades on a downscaled copy of large photos, one box per face."""

    def __init__(self, sources: tuple[str, ...] = DEFAULT_SOURCES, min_neighbors: int | None = None,
                 smallest_face: float = SMALLEST_FACE):
        unknown = [name for name in sources if name not in SOURCES]
        if unknown:
            raise ValueError(f"unknown proposal source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
        if not 0 < smallest_face <= MAX_SMALLEST_FACE:
            raise ValueError(f"smallest_face is a share of the photo's shorter side, over 0 and at most "
                             f"{MAX_SMALLEST_FACE}; got {smallest_face}")
        self.sources = [SOURCES[name] for name in sources]
        self.min_neighbors = min_neighbors
        self.smallest_face = smallest_face
        # A CascadeClassifier keeps per-image scale data, so two requests at once (the
        # app runs two) must not share one: each call borrows a set of classifiers from
        # this free list and returns it, so there are as many sets as concurrent calls.
        self._idle: queue.SimpleQueue[dict[str, cv2.CascadeClassifier]] = queue.SimpleQueue()
        self._idle.put(self._load())  # fails early on a missing file

    def _load(self) -> dict[str, cv2.CascadeClassifier]:
        cascades = {}
        for name in {source.cascade for source in self.sources}:
            cascades[name] = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if cascades[name].empty():
                raise RuntimeError(f"cannot load the Haar cascade {name}")
        return cascades

    @contextmanager
    def _borrowed(self) -> Iterator[dict[str, cv2.CascadeClassifier]]:
        try:
            cascades = self._idle.get_nowait()
        except queue.Empty:
            cascades = self._load()
        try:
            yield cascades
        finally:
            self._idle.put(cascades)

    def cascade_boxes(self, index: int, small: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Source `index`'s own boxes on `small` (its placement; a mirrored source's mapped
        back to the photo), the number of cascade windows behind each, and the matrix from
        the turned photo back to `small` (None when the source does not turn it)."""
        source = self.sources[index]
        width = small.shape[1]
        image, back = small, None
        if source.mirrored:
            image = cv2.flip(small, 1)
        if source.angle:
            image, turn = turn_photo(image, source.angle)
            back = cv2.invertAffineTransform(turn)
        # The image is the photo at the pass's scale, so a share of its side is that share of the photo's.
        min_side = max(24, math.floor(min(small.shape) * self.smallest_face + 1e-9))
        min_neighbors = source.min_neighbors if self.min_neighbors is None else self.min_neighbors
        with self._borrowed() as cascades:
            found, counts = cascades[source.cascade].detectMultiScale2(
                image, scaleFactor=source.scale_factor, minNeighbors=min_neighbors, minSize=(min_side, min_side))
        if min_neighbors == 0 and len(found):
            # OpenCV returns every window ungrouped at 0 neighbours. Its own grouping
            # (same closeness) averages each cluster into one box; listing every window
            # twice makes a lone window a cluster of two, so it stays, as itself.
            windows = [tuple(int(v) for v in window) for window in found]
            found, counts = cv2.groupRectangles(windows + windows, 1, HAAR_GROUP_EPS)
            counts = np.asarray(counts) // 2
        boxes = np.asarray(found, np.float64).reshape(-1, 4)
        if source.mirrored:
            boxes[:, 0] = width - boxes[:, 0] - boxes[:, 2]
        return boxes, np.asarray(counts, int).reshape(-1), back

    def propose_from(self, index: int, small: np.ndarray) -> Faces:
        """Source `index`'s boxes on `small`, in the frontal framing, in `small`'s pixels."""
        source = self.sources[index]
        shrunk = shrink_by(small, min(source.resolution, turned_canvas_resolution(small.shape, source.angle)))
        boxes, windows, back = self.cascade_boxes(index, shrunk)
        boxes = to_frontal_framing(boxes, source.placement)
        if back is not None:  # the box's centre back in the photo; its size does not change
            centres = apply_affine(back, boxes[:, :2] + boxes[:, 2:] / 2)
            boxes[:, :2] = centres - boxes[:, 2:] / 2
        boxes *= np.tile([small.shape[1] / shrunk.shape[1], small.shape[0] / shrunk.shape[0]], 2)
        return Faces(boxes, np.full(len(boxes), source.angle), np.full(len(boxes), index), windows)

    def propose(self, gray: np.ndarray) -> Faces:
        """Every source's boxes, unmerged, in `gray`'s pixels (for measuring the sources)."""
        scale = min(1.0, math.sqrt(DETECTION_MAX_PIXELS / gray.size))
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = Faces.concatenate([self.propose_from(index, small) for index in range(len(self.sources))])
        faces.boxes /= scale
        return faces

    def __call__(self, gray: np.ndarray, max_faces: int | None = None) -> Faces:
        """One box per face in `gray`'s pixels, largest first (at most `max_faces`)."""
        faces = merge(self.propose(gray))
        order = np.argsort(-(faces.boxes[:, 2] * faces.boxes[:, 3]), kind="stable")
        return faces.take(order[:max_faces])


def holds(box: np.ndarray, points: np.ndarray) -> bool:
    """Whether a box (x, y, w, h) holds the centre of a face's keypoints and is of its
    size (a box elsewhere, on a shirt, or around a whole group, is not this face)."""
    centre = points.mean(axis=0)
    size = np.sqrt(np.prod(points.max(axis=0) - points.min(axis=0)))
    inside = np.all(box[:2] <= centre) and np.all(centre <= box[:2] + box[2:])
    return bool(inside and 0.5 <= np.sqrt(box[2] * box[3]) / max(size, 1e-6) <= 2.5)


def nearest_face_boxes(detector: FaceDetector, images: list[np.ndarray], keypoints: np.ndarray) -> np.ndarray:
    """For each labelled image, the box whose centre is nearest its keypoints' centre:
    (N, 4), NaN where no box is this face (see `holds`)."""
    nearest = np.full((len(images), 4), np.nan)
    for index, (image, points) in enumerate(zip(images, keypoints)):
        boxes = detector(image).boxes
        if len(boxes):
            centre = points.mean(axis=0)
            box = boxes[np.argmin(np.linalg.norm(boxes[:, :2] + boxes[:, 2:] / 2 - centre, axis=1))]
            if holds(box, points):
                nearest[index] = box
    return nearest
