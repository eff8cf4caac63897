"""Video files: every frame's faces tracked, an annotated H.264 MP4 and a JSON record.

Frames are decoded and encoded by the ffmpeg binary that the imageio-ffmpeg
wheel carries (no system ffmpeg needed); audio is dropped. The JSON holds one
record per analysed frame, faceless frames included, in the input's pixels:

    {"fps": F, "width": W, "height": H,
     "frames": [{"index": i, "time": t,
                 "faces": [{"id": k, "box": [x, y, w, h], "keypoints": [[x, y], ...68],
                            "uncertainty": [u, ...68] (expected errors, pixels; null without that model),
                            "pose": {"yaw": ..., "pitch": ..., "roll": ...}}]}]}

The annotated MP4 shows each face's box, keypoints (dots coloured by confidence) and
pose axes (jaxkp.draw).

`fps` is the rate the frames were analysed at: the file's own, or a budget's
`max_fps` when the file's is higher (frames are then sampled by their times).

A video file is a program for ffmpeg, and a public server runs what strangers
upload. So a file reaches the decoder only when its first bytes show one of a
few plain containers (VIDEO_CONTAINERS), and ffmpeg is told that container
(`-f`), so it never probes its way into a playlist, a concat script or an image
sequence, demuxers that open further files or URLs; its input may use the
`file` protocol alone. What a video may cost is a VideoBudget set by the
caller (the app sets one; the CLI by default none): media seconds, frames,
frame rate, input pixels and wall-clock seconds, enforced by ffmpeg's own
options and by a watchdog, never taken from what the file declares.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxkp.draw import annotate
from jaxkp.inference import FaceKeypointPipeline
from jaxkp.track import FaceTracker

# Frames are worked on at most this long on their longer side (at most 1.6
# megapixels), reduced by ffmpeg before they reach Python; results map back.
WORKING_MAX_SIDE = 1280
# The rate assumed when a file names none.
DEFAULT_FPS = 25.0
# How long ffmpeg may take to read a file's header.
PROBE_SECONDS = 10.0


class VideoError(ValueError):
    """A file that cannot be used as a video; the message says why."""


@dataclass(frozen=True)
class VideoBudget:
    """What one video may cost; None: no limit. Set by whoever runs the work (the
    app's is app.VIDEO_BUDGET), never by the file."""

    max_seconds: float | None = None  # media time: a file that declares more is refused; more is never read
    max_frames: int | None = None  # frames analysed
    max_fps: float | None = None  # a higher rate is sampled down to this
    max_input_pixels: int | None = None  # a frame larger than this is refused before decoding
    max_wall_seconds: float | None = None  # past this the work stops with a VideoError
    max_ffmpeg_bytes: int | None = None  # the decoder's address space


@dataclass
class VideoInfo:
    fps: float  # the rate of the frames analysed
    width: int  # the input's size
    height: int
    duration: float  # seconds; 0 when the file does not say
    working_size: tuple[int, int]  # (w, h) of the frames worked on
    container: str  # the ffmpeg demuxer the file was read with

    @property
    def expected_frames(self) -> int:
        """Frames the file should give, from its declared duration (0 when unknown)."""
        return int(round(self.duration * self.fps)) if self.duration else 0


def container_of(head: bytes) -> str | None:
    """The ffmpeg demuxer for a file that starts with `head` (at least 600 bytes when
    the file has them), if it is one of the plain video containers; else None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mov"  # MP4, MOV, 3GP, M4V: ISO base media; external references stay off (enable_drefs=0)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"  # MKV, WebM
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if len(head) >= 3 * 188 and all(head[i] == 0x47 for i in (0, 188, 376)):
        return "mpegts"  # .ts
    if len(head) >= 4 + 3 * 192 and all(head[i] == 0x47 for i in (4, 196, 388)):
        return "mpegts"  # .m2ts / .mts (192-byte packets)
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"  # MPEG program stream (.mpg, .vob)
    return None


VIDEO_CONTAINERS = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS or MPEG-PS"


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@contextlib.contextmanager
def spawning_ffmpeg() -> Iterator[None]:
    """JAX warns at every fork; subprocess forks only to exec ffmpeg at once, which is safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


# Runs in a fresh interpreter between fork and ffmpeg: caps the decoder's address
# space, then becomes ffmpeg (subprocess's preexec_fn is unsafe in a threaded server).
_LIMITED_EXEC = ("import os, resource, sys; limit = int(sys.argv[1]); "
                 "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)) if limit else None; "
                 "os.execv(sys.argv[2], sys.argv[2:])")


def _ffmpeg_command(args: list[str], max_bytes: int | None) -> list[str]:
    if not max_bytes or sys.platform != "linux":
        return [_ffmpeg_exe(), *args]
    return [sys.executable, "-I", "-S", "-c", _LIMITED_EXEC, str(max_bytes), _ffmpeg_exe(), *args]


def _input_args(path: Path, container: str, max_pixels: int | None = None) -> list[str]:
    """ffmpeg's options for reading `path` as `container` and nothing else; the decoder
    refuses frames over `max_pixels` (also one that grows mid-stream)."""
    limit = [] if max_pixels is None else ["-max_pixels", str(max_pixels)]
    return ["-nostdin", "-hide_banner", "-protocol_whitelist", "file", *limit, "-f", container, "-i", f"file:{path}"]


@dataclass
class _Probe:
    width: int
    height: int
    fps: float  # 0 when the file names none
    duration: float  # 0 when the file names none


def _rate(text: str) -> float:
    """ffmpeg's printed rate: '29.97', '1k', '2.5k'."""
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def parse_probe(text: str) -> _Probe | None:
    """The first video stream's size and rate, and the duration, from ffmpeg's header
    printout; None if it names no video stream. Only ffmpeg's own lines count: they
    start at a fixed indent, while a file's metadata, which may hold line breaks and
    text made to look like them, is printed indented further (so the decoder's
    `-max_pixels` still guards the size, and `-t` the duration)."""
    stream = re.search(r"^  Stream #\d+:\d+\S*: Video: (.*)$", text, re.MULTILINE)
    if stream is None:
        return None
    size = re.search(r", (\d{1,6})x(\d{1,6})[ ,\[]", stream.group(1) + " ")
    if size is None:
        return None
    rate = re.search(r", ([\d.]+k?) fps", stream.group(1)) or re.search(r", ([\d.]+k?) tbr", stream.group(1))
    duration = re.search(r"^  Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text, re.MULTILINE)
    seconds = 0.0
    if duration is not None:
        hours, minutes, secs = duration.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(secs)
    try:
        fps = _rate(rate.group(1)) if rate else 0.0
    except ValueError:
        fps = 0.0
    return _Probe(int(size.group(1)), int(size.group(2)), fps if math.isfinite(fps) else 0.0, seconds)


def working_size(width: int, height: int) -> tuple[int, int]:
    """The frame size worked on: at most WORKING_MAX_SIDE on the longer side, even sides."""
    shrink = min(1.0, WORKING_MAX_SIDE / max(width, height))
    return max(2, int(width * shrink) // 2 * 2), max(2, int(height * shrink) // 2 * 2)


def _reason(lines: list[str] | deque[str], path: Path) -> str:
    """ffmpeg's last error, without the server's path: what the client may be told."""
    for line in reversed(lines):
        line = re.sub(r"\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", line).strip()  # ffmpeg's "[dec:h264 @ 0x55...]"
        if line and not line.startswith("At least one output file"):
            return line.replace(f"file:{path}", "").replace(str(path), "").lstrip(": ").strip()[:200]
    return "ffmpeg could not read it"


def open_video(path: str | Path, budget: VideoBudget = VideoBudget()) -> tuple[VideoInfo, VideoFrames]:
    """Checks and probes `path`; returns its facts and its frames (RGB, working size,
    at most `budget` allows). Raises VideoError for a file that is not one of the plain
    containers, that ffmpeg cannot read as video, or that the budget refuses."""
    started = time.monotonic()
    path = Path(path).resolve()
    try:
        with path.open("rb") as handle:
            head = handle.read(1024)
    except OSError as error:
        raise VideoError(f"cannot read the file ({error.strerror or type(error).__name__})") from None
    if not head:
        raise VideoError("not a video file, or a damaged one (the file is empty)")
    container = container_of(head)
    if container is None:
        raise VideoError(f"not a video file (only {VIDEO_CONTAINERS} files are read)")
    try:
        with spawning_ffmpeg():
            probe = subprocess.run(_ffmpeg_command(_input_args(path, container), budget.max_ffmpeg_bytes),
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        raise VideoError("not a video file, or a damaged one (its header could not be read in time)") from None
    text = probe.stderr.decode("utf-8", "replace")
    facts = parse_probe(text)
    if facts is None:
        if re.search(r"Stream #\d+:\d+", text):
            raise VideoError("the file has no video stream")
        raise VideoError(f"not a video file, or a damaged one ({_reason(text.splitlines(), path)})")
    if not facts.width or not facts.height:
        raise VideoError("the file has no video stream")
    pixels = facts.width * facts.height
    if budget.max_input_pixels is not None and pixels > budget.max_input_pixels:
        raise VideoError(f"the video's frames are {facts.width}x{facts.height} pixels; the limit is "
                         f"{budget.max_input_pixels / 1e6:.1f} megapixels")
    if budget.max_seconds is not None and facts.duration > budget.max_seconds:
        raise VideoError(f"the video is {facts.duration:.0f} s long; the limit is {budget.max_seconds:.0f} s")
    fps = facts.fps or DEFAULT_FPS
    if budget.max_fps is not None:
        fps = min(fps, budget.max_fps)
    size = working_size(facts.width, facts.height)
    info = VideoInfo(fps, facts.width, facts.height, facts.duration, size, container)
    # Frames are sampled by their own times to `fps` when a budget caps the rate, so
    # a file that declares one rate and stamps another still gives at most fps x seconds.
    filters = ([f"fps={fps!r}"] if budget.max_fps is not None else []) + [
        f"scale={size[0]}:{size[1]}:flags=bilinear", "format=rgb24"]
    args = ["-loglevel", "error", *_input_args(path, container, budget.max_input_pixels), "-map", "0:v:0", "-an",
            "-sn", "-dn",
            "-vf", ",".join(filters)]
    if budget.max_seconds is not None:
        args += ["-t", f"{budget.max_seconds:g}"]
    if budget.max_frames is not None:
        args += ["-frames:v", str(budget.max_frames)]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    deadline = None if budget.max_wall_seconds is None else started + budget.max_wall_seconds
    return info, VideoFrames(_ffmpeg_command(args, budget.max_ffmpeg_bytes), size, path, deadline,
                             budget.max_wall_seconds)


class VideoFrames:
    """The decoder's frames, one (h, w, 3) uint8 array each; a context manager that
    ends the decoder. Past the wall-clock deadline the decoder is killed and
    iteration raises VideoError."""

    def __init__(self, command: list[str], size: tuple[int, int], path: Path, deadline: float | None,
                 wall_seconds: float | None):
        self.size, self.path, self.deadline, self.wall_seconds = size, path, deadline, wall_seconds
        self.count = 0
        self.out_of_time = False
        self.errors: deque[str] = deque(maxlen=20)
        with spawning_ffmpeg():
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
        threading.Thread(target=self._drain_errors, daemon=True).start()
        self.watchdog = None
        if deadline is not None:
            self.watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), self._out_of_time)
            self.watchdog.daemon = True
            self.watchdog.start()

    def _drain_errors(self) -> None:
        for line in self.process.stderr:
            self.errors.append(line.decode("utf-8", "replace"))

    def _out_of_time(self) -> None:
        self.out_of_time = True
        self.process.kill()

    def _time_error(self) -> VideoError:
        return VideoError(f"the video took longer than the {self.wall_seconds:.0f} s of work this server gives one "
                          f"video (stopped after {self.count} frames); try a shorter or smaller clip")

    def __iter__(self) -> VideoFrames:
        return self

    def __next__(self) -> np.ndarray:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.out_of_time = True
        if self.out_of_time:
            self.close()
            raise self._time_error()
        width, height = self.size
        raw = self.process.stdout.read(width * height * 3)
        if len(raw) == width * height * 3:
            self.count += 1
            return np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        code = self.process.wait()
        self.close()
        if self.out_of_time:
            raise self._time_error()
        if code != 0:
            raise VideoError(f"the video is damaged after frame {self.count} ({_reason(self.errors, self.path)})")
        if self.count == 0:
            raise VideoError("the video holds no frames")
        raise StopIteration

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def process_video(pipeline: FaceKeypointPipeline, source: str | Path, out_mp4: str | Path | None,
                  budget: VideoBudget = VideoBudget(), progress: Callable[[int, int], None] | None = None,
                  ) -> dict[str, Any]:
    """Tracks faces through `source` within `budget`; writes the annotated MP4 (if
    `out_mp4`, at the analysed rate) and returns the JSON record (module doc).
    `progress(done, expected)` is called per frame."""
    import imageio_ffmpeg

    info, frames = open_video(source, budget)
    expected = info.expected_frames
    if budget.max_frames is not None:
        expected = min(expected, budget.max_frames)
    tracker = FaceTracker(pipeline)
    scale = np.array([info.width / info.working_size[0], info.height / info.working_size[1]])
    writer = None
    records = []
    with frames:
        if out_mp4 is not None:
            writer = imageio_ffmpeg.write_frames(
                str(out_mp4), info.working_size, fps=info.fps, codec="libx264", pix_fmt_out="yuv420p",
                macro_block_size=2, quality=7, ffmpeg_log_level="error",
                output_params=["-movflags", "+faststart"])  # plays while it downloads
            with spawning_ffmpeg():
                writer.send(None)
        try:
            for index, frame in enumerate(frames):
                faces = tracker(frame, index / info.fps)
                if writer is not None:
                    shown = {"image": {"width": frame.shape[1], "height": frame.shape[0]}, "faces": faces}
                    writer.send(np.ascontiguousarray(annotate(frame, shown, pose_axes=True, confidence=True)))
                records.append({"index": index, "time": round(index / info.fps, 4),
                                "faces": [to_input_pixels(face, scale) for face in faces]})
                if progress is not None:
                    progress(index + 1, max(expected, index + 1))
        finally:
            if writer is not None:
                writer.close()
    return {"fps": info.fps, "width": info.width, "height": info.height, "frames": records}


def to_input_pixels(face: dict[str, Any], scale: np.ndarray) -> dict[str, Any]:
    """A tracked face from working-frame pixels to the input video's pixels. Its pose
    stands: the working frame is the input shrunk alike both ways (to within a pixel's
    rounding), and a pose does not change with the photo's scale."""
    return {"id": face["id"],
            "box": [round(float(v), 1) for v in np.asarray(face["box"]) * np.tile(scale, 2)],
            "keypoints": np.round(np.asarray(face["keypoints"]) * scale, 2).tolist(),
            "uncertainty": (None if face.get("uncertainty") is None
                            else np.round(np.asarray(face["uncertainty"]) * float(np.mean(scale)), 2).tolist()),
            "pose": face["pose"]}
