"""Video files: every frame's faces tracked, an annotated H.264 MP4 and a JSON record.

Frames are decoded and encoded by the ffmpeg binary that the imageio-ffmpeg
wheel carries (no system ffmpeg needed); audio is dropped. The JSON holds one
record per input frame, faceless frames included, in the input's pixels:

    {"fps": F, "width": W, "height": H,
     "frames": [{"index": i, "time": t, "faces": [{"id": k, "box": [x, y, w, h], "keypoints": [[x, y], ...68]}]}]}
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxkp.draw import annotate
from jaxkp.inference import FaceKeypointPipeline
from jaxkp.track import FaceTracker

# Frames are worked on at most this long on their longer side; results map back.
WORKING_MAX_SIDE = 1280
# ffmpeg's guess when a file names no frame rate.
DEFAULT_FPS = 25.0


class VideoError(ValueError):
    """A file that cannot be used as a video; the message says why."""


@dataclass
class VideoInfo:
    fps: float
    width: int  # the input's size
    height: int
    duration: float  # seconds; 0 when the file does not say
    working_size: tuple[int, int]  # (w, h) of the frames worked on


def _imageio_ffmpeg():
    import imageio_ffmpeg

    return imageio_ffmpeg


@contextlib.contextmanager
def spawning_ffmpeg() -> Iterator[None]:
    """JAX warns at every fork; subprocess forks only to exec ffmpeg at once, which is safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def open_video(path: str | Path, max_seconds: float | None = None) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """Probes `path` and returns its facts and an iterator of RGB frames (working size).

    Raises VideoError for a file ffmpeg cannot read as video, and for one longer
    than `max_seconds`.
    """
    ffmpeg = _imageio_ffmpeg()
    # Shrink large frames while decoding; -2 keeps the aspect ratio with an even side.
    scale = (f"scale=w='if(gte(iw,ih),min({WORKING_MAX_SIDE},iw),-2)':"
             f"h='if(gte(iw,ih),-2,min({WORKING_MAX_SIDE},ih))',crop=trunc(iw/2)*2:trunc(ih/2)*2")
    reader = ffmpeg.read_frames(str(path), output_params=["-vf", scale, "-an"])
    try:
        with spawning_ffmpeg():
            meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as error:
        reader.close()
        raise VideoError(f"not a video file, or a damaged one ({first_line(error)})") from None
    width, height = meta["source_size"]
    if not width or not height:
        reader.close()
        raise VideoError("the file has no video stream")
    working_w, working_h = meta["size"]
    fps = float(meta.get("fps") or 0) or DEFAULT_FPS
    duration = float(meta.get("duration") or 0)
    if max_seconds is not None and duration > max_seconds:
        reader.close()
        raise VideoError(f"the video is {duration:.0f} s long; the limit is {max_seconds:.0f} s")
    info = VideoInfo(fps, int(width), int(height), duration, (int(working_w), int(working_h)))

    def frames() -> Iterator[np.ndarray]:
        count = 0
        try:
            for raw in reader:
                count += 1
                if max_seconds is not None and count > max_seconds * fps + 1:
                    raise VideoError(f"the video runs past the limit of {max_seconds:.0f} s")
                yield np.frombuffer(raw, np.uint8).reshape(working_h, working_w, 3)
        except (RuntimeError, OSError) as error:
            raise VideoError(f"the video is damaged after frame {count} ({first_line(error)})") from None
        finally:
            reader.close()
        if count == 0:
            raise VideoError("the video holds no frames")

    return info, frames()


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def process_video(pipeline: FaceKeypointPipeline, source: str | Path, out_mp4: str | Path | None,
                  max_seconds: float | None = None, progress: Callable[[int, int], None] | None = None,
                  ) -> dict[str, Any]:
    """Tracks faces through `source`; writes the annotated MP4 (if `out_mp4`) and returns
    the JSON record (module doc). `progress(done, expected)` is called per frame."""
    info, frames = open_video(source, max_seconds)
    expected = int(round(info.duration * info.fps)) if info.duration else 0
    tracker = FaceTracker(pipeline)
    scale = np.array([info.width / info.working_size[0], info.height / info.working_size[1]])
    writer = None
    if out_mp4 is not None:
        writer = _imageio_ffmpeg().write_frames(
            str(out_mp4), info.working_size, fps=info.fps, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=2, quality=7, ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"])  # plays while it downloads
        with spawning_ffmpeg():
            writer.send(None)
    records = []
    try:
        for index, frame in enumerate(frames):
            faces = tracker(frame, index / info.fps)
            if writer is not None:
                shown = {"image": {"width": frame.shape[1], "height": frame.shape[0]}, "faces": faces}
                writer.send(np.ascontiguousarray(annotate(frame, shown)))
            records.append({"index": index, "time": round(index / info.fps, 4),
                            "faces": [to_input_pixels(face, scale) for face in faces]})
            if progress is not None:
                progress(index + 1, max(expected, index + 1))
    finally:
        if writer is not None:
            writer.close()
    return {"fps": info.fps, "width": info.width, "height": info.height, "frames": records}


def to_input_pixels(face: dict[str, Any], scale: np.ndarray) -> dict[str, Any]:
    """A tracked face from working-frame pixels to the input video's pixels."""
    return {"id": face["id"],
            "box": [round(float(v), 1) for v in np.asarray(face["box"]) * np.tile(scale, 2)],
            "keypoints": np.round(np.asarray(face["keypoints"]) * scale, 2).tolist()}
