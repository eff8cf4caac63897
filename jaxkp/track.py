"""Faces followed through a video or a webcam stream, with steady keypoints.

Landmark trackers run the face detector only when they must: on the first
frame, every `detect_every` frames (to pick up new faces), and when a tracked
face is lost. In between, each face is framed from its own keypoints of the
previous frame, as the detector would have framed it, which is cheaper than a
detection and follows the face closely. Each face keeps an id while it is
tracked.

Keypoints are smoothed by the One Euro filter (Casiez, Roussel and Vogel, CHI
2012): a low-pass filter whose cut-off rises with speed, so a still face does
not jitter and a moving one does not lag. It works in units of the face's size,
so its settings hold at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from jaxkp.detect import overlap
from jaxkp.geometry import upright_framings
from jaxkp.inference import FaceKeypointPipeline, keypoint_boxes
from jaxkp.pose import head_pose

# Smaller "faces" are lost tracks: the detector finds none under 24 px.
MIN_FACE_PX = 24


class OneEuroFilter:
    """One Euro filter over arrays (any shape), for samples at times in seconds.

    min_cutoff (Hz): smoothing of a still signal (lower: less jitter); beta: how
    fast the cut-off rises with speed (higher: less lag); d_cutoff (Hz): smoothing
    of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None
        self.time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, time: float) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self.value is None or self.time is None or time <= self.time:
            self.value, self.speed, self.time = value, np.zeros_like(value), time
            return value
        dt = time - self.time
        speed = (value - self.value) / dt
        self.speed = self.speed + self._alpha(self.d_cutoff, dt) * (speed - self.speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self.speed)
        self.value = self.value + self._alpha(cutoff, dt) * (value - self.value)
        self.time = time
        return self.value


@dataclass
class Track:
    id: int
    box: np.ndarray  # (4,) x, y, w, h in frame pixels
    keypoints: np.ndarray  # (68, 2) raw network output, frame pixels
    smoothed: np.ndarray  # (68, 2) what is shown
    filter: OneEuroFilter = field(default_factory=OneEuroFilter)
    # The face's size when first found: the filter's unit. Fixed, because a per-frame
    # size would carry its own jitter into every point's position.
    scale: float = 1.0
    # (68,) each raw point's expected error in frame pixels (None: weights without that model).
    uncertainty: np.ndarray | None = None


class FaceTracker:
    """Frames in, faces with stable ids and smoothed keypoints out (see module doc)."""

    def __init__(self, pipeline: FaceKeypointPipeline, detect_every: int = 15, smoothing: bool = True,
                 min_cutoff: float = 1.0, beta: float = 5.0, max_faces: int = 5, search_every: int = 3):
        self.pipeline = pipeline
        self.detect_every = detect_every
        # With no face tracked, the detector looks on every `search_every`-th frame: a
        # frame without faces costs a whole detection (over 100 ms on a 1280x720 frame
        # here), and a face that comes into view is found a tenth of a second later.
        self.search_every = search_every
        self.smoothing = smoothing
        self.min_cutoff, self.beta = min_cutoff, beta
        self.max_faces = max_faces
        self.tracks: list[Track] = []
        self.frame_index = 0
        self.next_id = 0
        self.detections = 0  # how many frames ran the detector
        self.idle_frames = 0  # frames in a row with no face tracked (none lost either)

    def _new_track(self, box: np.ndarray, points: np.ndarray, uncertainty: np.ndarray | None) -> Track:
        track = Track(self.next_id, box, points, points, OneEuroFilter(self.min_cutoff, self.beta), max(box[2], 1.0),
                      uncertainty)
        self.next_id += 1
        return track

    def __call__(self, frame: np.ndarray, time: float) -> list[dict[str, Any]]:
        """Faces in an RGB (or gray) frame at `time` seconds: [{"id", "box", "keypoints", "uncertainty",
        "pose"}], ids stable; the pose is the shown (smoothed) keypoints' (jaxkp.pose.head_pose, in the
        frame's pixels); the uncertainty is this frame's reading's (jaxkp.uncertainty; None without it)."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        model = self.pipeline.model
        lost = False
        if self.tracks:
            # Frame each face from its last keypoints, levelled, as the detector frames an
            # upright face (a face that leans is shown upright; the score was fitted so).
            boxes, turns = upright_framings(np.stack([track.keypoints for track in self.tracks]))
            reading = model.read_faces(gray, boxes, turns)
            scores = reading.scores if reading.scores is not None else np.ones(len(boxes))
            kept = []
            for index, (track, box, new_points, score) in enumerate(zip(self.tracks, boxes, reading.keypoints,
                                                                        scores)):
                if (self._plausible(new_points, box, gray.shape) and 0.5 < box[2] / track.scale < 2.0
                        and score >= self.pipeline.threshold):
                    track.box, track.keypoints = box, new_points
                    track.uncertainty = None if reading.uncertainty is None else reading.uncertainty[index]
                    kept.append(track)
                else:
                    lost = True
            self.tracks = self._without_duplicates(kept)
        searching = False
        if self.tracks or lost:
            self.idle_frames = 0
        else:
            searching = self.idle_frames % self.search_every == 0
            self.idle_frames += 1
        if lost or searching or self.frame_index % self.detect_every == 0:
            self._detect(gray)
        for track in self.tracks:
            if self.smoothing:
                track.smoothed = track.filter(track.keypoints / track.scale, time) * track.scale
            else:
                track.smoothed = track.keypoints
        self.frame_index += 1
        size = (gray.shape[1], gray.shape[0])
        return [{"id": track.id, "box": [round(float(v), 1) for v in track.box],
                 "keypoints": np.round(track.smoothed, 2).tolist(),
                 "uncertainty": None if track.uncertainty is None else np.round(track.uncertainty, 2).tolist(),
                 "pose": head_pose(track.smoothed, size)}
                for track in self.tracks]

    def _detect(self, gray: np.ndarray) -> None:
        self.detections += 1
        found = self.pipeline.find_faces(gray, self.max_faces)
        room = self.max_faces - len(self.tracks)
        tracked = np.array([track.box for track in self.tracks]).reshape(-1, 4)
        for index, points in enumerate(found.reading.keypoints):
            box = keypoint_boxes(points[None])[0]
            if room > 0 and (not len(tracked) or overlap(box, tracked).max() < 0.3):
                uncertainty = None if found.reading.uncertainty is None else found.reading.uncertainty[index]
                self.tracks.append(self._new_track(box, points, uncertainty))
                room -= 1

    @staticmethod
    def _plausible(points: np.ndarray, box: np.ndarray, shape: tuple[int, ...]) -> bool:
        """Whether keypoints still describe a face in the box they were framed by: a
        lost face's points collapse or scatter, or drift out of the frame (the caller
        also drops a track whose face has shrunk or grown past half or twice its size)."""
        height, width = shape[:2]
        centre = points.mean(axis=0)
        if not (0 <= centre[0] < width and 0 <= centre[1] < height):
            return False
        spread = np.ptp(points, axis=0)
        interocular = np.linalg.norm(points[36] - points[45])
        # On a face the points' box is about 0.85 of the Haar box wide, the eyes 0.45. A
        # track that shrinks (its box follows its points) has lost its face, as has one
        # smaller than the detector's smallest face.
        return (0.5 < spread[0] / box[2] < 1.3 and 0.2 < interocular / box[2] < 0.7
                and box[2] >= MIN_FACE_PX)

    @staticmethod
    def _without_duplicates(tracks: list[Track]) -> list[Track]:
        """Two tracks that have converged on one face keep the older id."""
        kept: list[Track] = []
        for track in sorted(tracks, key=lambda t: t.id):
            if all(overlap(track.box, other.box[None])[0] < 0.5 for other in kept):
                kept.append(track)
        return kept
