"""Tracking, smoothing and video files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxkp.examples import moving_faces_clip
from jaxkp.track import FaceTracker, OneEuroFilter
from jaxkp.video import spawning_ffmpeg

ROOT = Path(__file__).resolve().parent.parent


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 30) -> Path:
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264",
                                         macro_block_size=1, pix_fmt_out="yuv444p", ffmpeg_log_level="error")
    with spawning_ffmpeg():
        writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


@pytest.fixture(scope="module")
def pipeline():
    from jaxkp import load_pipeline

    return load_pipeline()


def test_tracking_keeps_ids_and_detects_only_when_needed(pipeline):
    clip = moving_faces_clip(45, faces=2, speed=4.0)
    tracker = FaceTracker(pipeline, detect_every=15)
    per_frame = [tracker(frame, index / 30) for index, frame in enumerate(clip)]
    assert all(sorted(face["id"] for face in faces) == [0, 1] for faces in per_frame)
    assert tracker.detections == 3  # frames 0, 15 and 30
    # Each id stays on its own face: face 0 moves right, face 1 left.
    centres = {k: [np.mean(next(f for f in faces if f["id"] == k)["keypoints"], axis=0)[0] for faces in per_frame]
               for k in (0, 1)}
    moves = sorted(np.sign(np.diff(centres[k][::5])).mean() for k in (0, 1))
    assert moves[0] < -0.5 and moves[1] > 0.5
    # And the tracked points agree with a fresh detection on the last frame.
    fresh = pipeline(clip[-1])["faces"]
    for face in per_frame[-1]:
        nearest = min(fresh, key=lambda f: abs(f["box"][0] - face["box"][0]))
        interocular = np.linalg.norm(np.subtract(nearest["keypoints"][36], nearest["keypoints"][45]))
        assert np.linalg.norm(np.subtract(face["keypoints"], nearest["keypoints"]), axis=1).mean() < 0.1 * interocular


def test_one_euro_filter_calms_a_still_signal_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    still = OneEuroFilter()  # the tracker's settings; values in units of a face's size
    noisy = 1.0 + rng.normal(0, 0.01, 300)
    smoothed = np.array([still(np.array([v]), t / 30)[0] for t, v in enumerate(noisy)])
    assert smoothed[30:].std() < 0.5 * noisy[30:].std()
    moving = OneEuroFilter()
    ramp = np.arange(300) * 0.02  # a face sliding by 2% of its size per frame
    followed = np.array([moving(np.array([v]), t / 30)[0] for t, v in enumerate(ramp)])
    lag_frames = (ramp[100:] - followed[100:]).mean() / 0.02
    assert 0 <= lag_frames < 1.5


@pytest.mark.slow  # a new process and ffmpeg
def test_video_cli_writes_a_record_per_frame_and_a_playable_mp4(tmp_path):
    import imageio_ffmpeg

    clip = write_clip(tmp_path / "clip.mp4", moving_faces_clip(24, size=(321, 241), faces=1, speed=2.0))
    result = subprocess.run([sys.executable, "-m", "jaxkp", "video", str(clip), "--out", str(tmp_path / "out.mp4"),
                             "--json", str(tmp_path / "out.json")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out.json").read_text())
    assert (record["fps"], record["width"], record["height"]) == (30.0, 321, 241)
    assert [frame["index"] for frame in record["frames"]] == list(range(24))
    assert all(len(frame["faces"]) == 1 and len(frame["faces"][0]["keypoints"]) == 68 for frame in record["frames"])
    assert all(set(frame["faces"][0]["pose"]) == {"yaw", "pitch", "roll"} for frame in record["frames"])
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "out.mp4"))[0] == 24
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "out.mp4"))
    meta = next(reader)
    reader.close()
    assert meta["codec"] == "h264"


@pytest.mark.slow  # a new process and ffmpeg per file
@pytest.mark.parametrize("content, message", [
    (b"these are not the frames you are looking for", "not a video file"),
    (b"", "not a video file"),
])
def test_video_cli_refuses_bad_files_with_a_message(tmp_path, content, message):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "jaxkp", "video", str(bad), "--json", str(tmp_path / "o.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.json").exists()


@pytest.mark.slow  # a new process and ffmpeg
def test_video_cli_refuses_a_damaged_and_a_too_long_video(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", moving_faces_clip(60, size=(320, 240), faces=1, speed=1.0))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    for path, extra, message in ((damaged, [], "damaged"), (clip, ["--max-seconds", "1"], "the limit is 1 s")):
        result = subprocess.run([sys.executable, "-m", "jaxkp", "video", str(path), *extra], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_tracked_points_jitter_less_with_smoothing_on_a_still_noisy_face(pipeline):
    still = moving_faces_clip(75, faces=1, speed=0.0)
    noisy = [np.clip(frame.astype(np.int16) + np.random.default_rng(i).normal(0, 10, frame.shape), 0, 255)
             .astype(np.uint8) for i, frame in enumerate(still)]
    jitter = {}
    for smoothing in (False, True):
        tracker = FaceTracker(pipeline, smoothing=smoothing)
        points = np.stack([np.asarray(tracker(frame, i / 30)[0]["keypoints"]) for i, frame in enumerate(noisy)])
        jitter[smoothing] = points[30:].std(axis=0).mean()
    assert jitter[True] < 0.6 * jitter[False], jitter


def test_a_face_that_jumps_leaves_no_stray_track(pipeline):
    """A clip that loops (as a fake camera does) moves the face 120 px at once: the old
    track is lost and the face is found again, one track, not two."""
    clip = moving_faces_clip(40, faces=1, speed=3.0)
    looped = clip + clip  # at frame 40 the face jumps back
    tracker = FaceTracker(pipeline, detect_every=15)
    counts = [len(tracker(frame, index / 30)) for index, frame in enumerate(looped)]
    assert counts[:40] == [1] * 40
    assert counts[-30:] == [1] * 30, counts


def test_a_tracked_face_that_leans_is_read_levelled(pipeline):
    """A face swaying ±35 degrees: each frame shows it to the network levelled (framed
    from its last keypoints), so its points stay where the turn puts the upright face's.
    Framed unlevelled, the mean error was 0.027 inter-ocular distances, 0.055 at worst."""
    import cv2

    from jaxkp.geometry import apply_affine
    from jaxkp.inference import load_photo
    from photos import ASTRONAUT

    gray = cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY)
    upright = pipeline.find_faces(gray).reading.keypoints[0]
    centre = upright.mean(axis=0)
    tracker = FaceTracker(pipeline, smoothing=False)
    errors = []
    for index in range(45):
        turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), 35 * np.sin(2 * np.pi * index / 45), 1.0)
        frame = cv2.warpAffine(gray, turn, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
        faces = tracker(frame, index / 30)
        assert len(faces) == 1
        expected = apply_affine(turn, upright)
        interocular = np.linalg.norm(expected[36] - expected[45])
        errors.append(np.linalg.norm(np.array(faces[0]["keypoints"]) - expected, axis=1).mean() / interocular)
    assert np.mean(errors) < 0.02 and np.max(errors) < 0.03
    assert tracker.detections == 3  # the track never lost its face


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *args], check=True,
                   timeout=300)


def test_plain_containers_are_read_and_named_by_their_bytes(tmp_path):
    from jaxkp.video import container_of, open_video

    clip = write_clip(tmp_path / "clip.mp4", moving_faces_clip(12, size=(320, 240), faces=1, speed=1.0))
    wanted = {"clip.mp4": "mov", "clip.mkv": "matroska", "clip.webm": "matroska", "clip.avi": "avi",
              "clip.ts": "mpegts", "clip.mpg": "mpeg"}
    for name, container in wanted.items():
        path = tmp_path / name
        if name != "clip.mp4":
            codec = {"clip.webm": ["-c:v", "libvpx-vp9"], "clip.mpg": ["-c:v", "mpeg2video"]}.get(name, ["-c", "copy"])
            ffmpeg("-i", str(clip), *codec, str(path))
        assert container_of(path.read_bytes()[:1024]) == container, name
        renamed = tmp_path / ("renamed" + {"mov": ".bin"}.get(container, ".mp4"))  # the name does not matter
        renamed.write_bytes(path.read_bytes())
        info, frames = open_video(renamed)
        with frames:
            assert info.container == container and len(list(frames)) >= 10, name


@pytest.mark.parametrize("content", [
    b"#EXTM3U\n#EXTINF:2.0,\n/etc/hostname\n#EXT-X-ENDLIST\n",  # HLS
    b"ffconcat version 1.0\nfile '/etc/hostname'\n",  # concat
    b"\x89PNG\r\n\x1a\n" + b"\0" * 100,  # an image (image2 reads numbered sequences)
    b"GIF89a" + b"\0" * 100,
    b"\x00\x00\x00\x01\x67" + b"\0" * 100,  # a raw H.264 stream: no container at all
])
def test_files_that_are_no_plain_container_never_reach_ffmpeg(tmp_path, content):
    from jaxkp.video import VideoError, open_video

    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=r"^not a video file \(only MP4/MOV"):
        open_video(path)


def test_the_printed_rate_is_read_in_every_form():
    from jaxkp.video import parse_probe

    line = ("  Duration: 00:00:59.96, start: 0.000000, bitrate: 112 kb/s\n"
            "  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), "
            "64x48 [SAR 1:1 DAR 4:3], 80 kb/s, {rate} fps, {rate} tbr, 16k tbn (default)\n")
    for rate, fps in (("1k", 1000.0), ("999", 999.0), ("29.97", 29.97), ("2.5k", 2500.0)):
        probe = parse_probe(line.format(rate=rate))
        assert (probe.width, probe.height, probe.fps, probe.duration) == (64, 48, fps, 59.96)
    assert parse_probe("Stream #0:0: Audio: aac, 44100 Hz, stereo") is None


def test_a_budget_samples_a_high_rate_down_and_caps_frames_pixels_and_time(tmp_path):
    from jaxkp.video import VideoBudget, VideoError, open_video

    fast = tmp_path / "fast.mp4"  # 4 s declared at 1000 fps ("1k fps" in ffmpeg's printout)
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=96x64:r=1000", "-frames:v", "4000", "-c:v", "libx264", "-preset",
           "ultrafast", str(fast))
    info, frames = open_video(fast, VideoBudget(max_fps=30))
    with frames:
        assert info.fps == 30 and 118 <= len(list(frames)) <= 121
    info, frames = open_video(fast, VideoBudget(max_fps=30, max_seconds=10, max_frames=50))
    with frames:
        assert len(list(frames)) == 50
    with pytest.raises(VideoError, match="the video is 4 s long; the limit is 2 s"):
        open_video(fast, VideoBudget(max_seconds=2))
    with pytest.raises(VideoError, match=r"the video's frames are 96x64 pixels; the limit is 0.0 megapixels"):
        open_video(fast, VideoBudget(max_input_pixels=96 * 63))
    # The wall-clock budget holds however slowly the frames are used.
    info, frames = open_video(fast, VideoBudget(max_wall_seconds=1.0))
    start = time.monotonic()
    with frames, pytest.raises(VideoError, match="took longer than the 1 s of work"):
        for _ in frames:
            time.sleep(0.05)
    assert time.monotonic() - start < 2.0


def test_with_no_face_in_view_the_detector_looks_every_few_frames_and_finds_one_that_appears(pipeline):
    empty = [np.full((240, 320, 3), 128, np.uint8)] * 30
    faces = moving_faces_clip(10, size=(320, 240), faces=1, speed=0.0)
    tracker = FaceTracker(pipeline, search_every=3)
    counts = [len(tracker(frame, index / 30)) for index, frame in enumerate(empty)]
    assert counts == [0] * 30 and tracker.detections == 10  # frames 0, 3, ..., 27
    counts = [len(tracker(frame, (30 + index) / 30)) for index, frame in enumerate(faces)]
    assert counts[3:] == [1] * 7  # found within three frames of coming into view


def test_metadata_made_to_look_like_ffmpeg_lines_is_not_read_as_them():
    from jaxkp.video import parse_probe

    printout = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:spoof.mp4':
  Metadata:
    major_brand     : isom
    title           : x, 64x64, 1 fps
                    :   Duration: 00:00:01.00, start: 0
                    :   Stream #0:0: Video: h264, yuv420p, 64x64, 25 fps, 25 tbr
  Duration: 00:00:02.00, start: 0.000000, bitrate: 11 kb/s
  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), 8192x8192 \
[SAR 1:1 DAR 1:1], 8 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
"""
    probe = parse_probe(printout)
    assert (probe.width, probe.height, probe.fps, probe.duration) == (8192, 8192, 10.0, 2.0)


def test_frames_that_grow_past_the_pixel_budget_mid_stream_are_not_decoded(tmp_path):
    from jaxkp.video import VideoBudget, open_video

    small, large = tmp_path / "small.ts", tmp_path / "large.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10", "-frames:v", "20", "-c:v", "libx264", str(small))
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=2400x1800:r=10", "-frames:v", "5", "-c:v", "libx264", "-preset",
           "ultrafast", "-output_ts_offset", "3", str(large))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + large.read_bytes())  # what `cat` makes: one stream, two sizes
    info, frames = open_video(joined, VideoBudget(max_input_pixels=1_000_000))
    with frames:
        assert (info.width, info.height) == (160, 120) and len(list(frames)) == 20
    info, frames = open_video(joined)
    with frames:
        assert len(list(frames)) > 20  # without the budget the large frames are decoded too
