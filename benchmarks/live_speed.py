"""The live and video paths: frames per second, latency, jitter and lag.

    python benchmarks/live_speed.py [--weights checkpoints/reference]

On generated 640x480 clips of the astronaut's head (jaxkp.examples.moving_faces_clip):
- frames per second and per-frame latency (frame in, keypoints out) of the live path,
  with the detector on every frame and with tracking (detector every 15 frames);
- jitter: on a still face under sensor noise, the standard deviation of each point over 90 frames,
  in pixels (mean over points), with and without One Euro smoothing;
- lag: on a face sliding at constant speed, how many frames the shown points trail
  the unsmoothed ones (least-squares shift along the motion);
- video: `process_video` on a 10 s clip, frames per second, MP4 written.
Medians of repeats; one process, the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np  # noqa: E402

from jaxkp import load_pipeline  # noqa: E402
from jaxkp.examples import moving_faces_clip  # noqa: E402
from jaxkp.track import FaceTracker  # noqa: E402
from jaxkp.video import process_video  # noqa: E402
from test_video import write_clip  # noqa: E402


def run(tracker: FaceTracker, clip: list[np.ndarray]) -> tuple[float, float, list[list[dict]]]:
    latencies, outputs = [], []
    start = time.perf_counter()
    for index, frame in enumerate(clip):
        began = time.perf_counter()
        outputs.append(tracker(frame, index / 30))
        latencies.append(time.perf_counter() - began)
    return len(clip) / (time.perf_counter() - start), 1000 * statistics.median(latencies), outputs


def points(outputs: list[list[dict]]) -> np.ndarray:
    return np.stack([np.asarray(faces[0]["keypoints"]) for faces in outputs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights")
    args = parser.parse_args()
    pipeline = load_pipeline(args.weights)
    moving = moving_faces_clip(120, faces=1, speed=3.0)
    run(FaceTracker(pipeline), moving[:10])  # compile

    for label, every in (("detector on every frame", 1), ("tracking, detector every 15 frames", 15)):
        fps, latency, _ = run(FaceTracker(pipeline, detect_every=every, smoothing=False), moving)
        print(f"live path, 640x480, one face, {label}: {fps:.1f} frames/s, {latency:.1f} ms per frame (median)")

    still = moving_faces_clip(150, faces=1, speed=0.0)
    noise = [np.random.default_rng(i).normal(0, 10, f.shape) for i, f in enumerate(still)]  # a webcam's sensor noise
    noisy_still = [np.clip(f.astype(np.int16) + n, 0, 255).astype(np.uint8) for f, n in zip(still, noise)]
    for smoothing in (False, True):
        _, _, outputs = run(FaceTracker(pipeline, smoothing=smoothing), noisy_still)
        jitter = points(outputs)[60:].std(axis=0).mean()  # after the filter has settled
        raw = points(run(FaceTracker(pipeline, smoothing=False), moving)[2])
        shown = points(run(FaceTracker(pipeline, smoothing=smoothing), moving)[2])
        # Lag in frames: the shift s minimising |shown(t) - raw(t - s)|, along x (3 px per frame).
        lag = float(np.mean(raw[20:, :, 0] - shown[20:, :, 0]) / 3.0)
        print(f"{'with' if smoothing else 'without'} One Euro smoothing: jitter {jitter:.2f} px on a still face "
              f"(std over frames, mean over points), lag {lag:.2f} frames at 3 px per frame")

    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", moving_faces_clip(300, faces=2, speed=2.0))
        start = time.perf_counter()
        record = process_video(pipeline, clip, Path(folder) / "out.mp4")
        seconds = time.perf_counter() - start
    print(f"video: {len(record['frames'])} frames (10 s, 640x480, two faces) in {seconds:.1f} s: "
          f"{len(record['frames']) / seconds:.1f} frames/s, decode + track + draw + H.264 encode")


if __name__ == "__main__":
    main()
