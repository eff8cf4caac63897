"""Soak test: mixed good and hostile traffic against a running app, over raw HTTP.

    python benchmarks/soak.py [--seconds 120] [--threads 8]

Starts `python app.py` in its own process with its own Gradio folder (its upload
cap set to 300 MB), then 8 client threads send, for 2 minutes, a mix of good photos
(a portrait, five faces, no face, a 64-megapixel JPEG) and bad requests (paths to
server files, a FIFO, a non-image, an empty file, a truncated JPEG, malformed
payloads). Beside them, attackers: a frame-rate bomb video (999 fps, 59,900
frames) and an HLS playlist naming a server file, sent to /video over and over;
live streams that send one frame and vanish, one every 2 s; 24 MB uploads that
never call an endpoint, one a second. One honest live client streams throughout.
Each client thread, attacker and live client speaks from its own address (the app
counts per-client shares by X-Forwarded-For from a proxy on its own machine), so the
attackers meet their shares as they would on a Space.
Prints the requests served, good requests that failed (must be 0), p50/p95
latency of the good ones, what each attack got, the honest live client's frame
rate, and the app's RSS and disk use at the start and the end (both must stay
flat; disk under the cap).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app_process import AppProcess, LiveClient, as_client, frame_data_url  # noqa: E402
from jaxkp.examples import compose_faces, moving_faces_clip  # noqa: E402
from photos import ASTRONAUT, CAMERA  # noqa: E402
from test_app_security import big_jpeg  # noqa: E402
from test_app_video_live import playlist  # noqa: E402
from test_video import ffmpeg  # noqa: E402

UPLOADS_CAP = 300_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="jaxkp-soak-"))
    files = workdir / "files"
    files.mkdir()
    five = files / "five.png"
    Image.fromarray(compose_faces(5)).save(five)
    big = big_jpeg(files / "big.jpg")
    junk = files / "junk.png"
    junk.write_text("not a photo")
    empty = files / "empty.jpg"
    empty.write_bytes(b"")
    buffer = io.BytesIO()
    Image.open(ASTRONAUT).convert("RGB").save(buffer, format="JPEG")
    truncated = files / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    bomb = files / "bomb.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=999", "-frames:v", "59900", "-c:v", "libx264",
           "-preset", "ultrafast", str(bomb))
    hls = files / "clip.m3u8"
    hls.write_bytes(playlist(str(bomb)))
    stuffing = files / "stuffing.jpg"
    stuffing.write_bytes(os.urandom(24_000_000))
    frames = [frame_data_url(frame) for frame in moving_faces_clip(30, faces=1, speed=2.0)]

    app = AppProcess(workdir, env={"JAXKP_UPLOADS_MAX_BYTES": str(UPLOADS_CAP)})
    try:
        uploaded = {path: {"path": app.upload(path), "meta": {"_type": "gradio.FileData"}}
                    for path in (ASTRONAUT, five, CAMERA, big, junk, empty, truncated)}
        root = Path(uploaded[ASTRONAUT]["path"]).parents[1]
        os.mkfifo(root / "fifo")
        good = [uploaded[ASTRONAUT]] * 4 + [uploaded[five]] * 3 + [uploaded[CAMERA]] * 2 + [uploaded[big]]
        bad = [uploaded[junk], uploaded[empty], uploaded[truncated], {"path": "/etc/hostname"},
               {"path": str(ROOT / "checkpoints" / "loss_curve.png")}, {"path": str(root / "fifo")},
               {"path": "/dev/zero"}, {"path": 5}, "/etc/passwd"]
        app.call(uploaded[big])  # warm: compile the batch sizes the photos need
        start_rss, start_disk = app.rss_bytes(), app.disk_bytes()
        latencies, outcomes = [], Counter()
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                is_good = rng.random() < 0.6
                payload = rng.choice(good if is_good else bad)
                started = time.monotonic()
                try:
                    response = app.submit(payload, client=f"198.51.100.{seed}")
                    response.raise_for_status()
                    event, _ = app.result(response.json()["event_id"], timeout=60)
                except Exception as error:  # noqa: BLE001 - a soak counts every failure
                    event = f"exception {type(error).__name__}"
                seconds = time.monotonic() - started
                with lock:
                    if is_good:
                        outcomes["good served" if event == "complete" else "good FAILED"] += 1
                        latencies.append(seconds)
                    else:
                        outcomes["bad refused" if event == "error" else f"bad answered {event}"] += 1

        def video_attacker() -> None:
            hostile = {"bomb": {"path": app.upload(bomb), "meta": {"_type": "gradio.FileData"}},
                       "playlist": {"path": app.upload(hls), "meta": {"_type": "gradio.FileData"}}}
            while time.monotonic() < deadline:
                for name, payload in hostile.items():
                    started = time.monotonic()
                    response = app.submit(payload, "video", client="203.0.113.1")
                    if response.status_code == 503:
                        outcome = "refused: " + response.json()["detail"][:40]
                        time.sleep(0.5)
                    else:
                        event, answer = app.result(response.json()["event_id"], timeout=240, api="video")
                        outcome = "analysed" if event == "complete" else f"refused: {str(answer)[:40]}"
                    with lock:
                        outcomes[f"video {name} {outcome}"] += 1
                        video_seconds.setdefault(name, []).append(time.monotonic() - started)

        def live_abandoner() -> None:
            while time.monotonic() < deadline:
                response = LiveClient(app, client="203.0.113.2").start(frames[0])  # one frame, then no other
                with lock:
                    outcomes[f"live abandoned stream, join HTTP {response.status_code}"] += 1
                time.sleep(2)

        def upload_stuffer() -> None:
            while time.monotonic() < deadline:
                with stuffing.open("rb") as handle:
                    response = httpx.post(app.url + "/gradio_api/upload", files={"files": ("s.jpg", handle)},
                                          headers=as_client("203.0.113.3"), timeout=60)
                with lock:
                    outcomes[f"24 MB upload never used, HTTP {response.status_code}"] += 1
                time.sleep(1)

        honest_live = LiveClient(app, client="198.51.100.250")

        def live_viewer() -> None:
            if honest_live.start(frames[0]).status_code == 200:
                honest_live.stream(frames, args.seconds)

        video_seconds: dict[str, list[float]] = {}
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.threads)]
        threads += [threading.Thread(target=target) for target in
                    (video_attacker, live_abandoner, upload_stuffer, live_viewer)]
        for thread in threads:
            thread.start()
        samples = []
        while any(thread.is_alive() for thread in threads):
            time.sleep(min(10, args.seconds / 12))
            samples.append((app.rss_bytes() / 1e6, app.disk_bytes() / 1e6))
        for thread in threads:
            thread.join()
        end_rss, end_disk = app.rss_bytes(), app.disk_bytes()
        log = app.log_path.read_text()
    finally:
        app.close()
    latencies.sort()
    print(f"{args.seconds:.0f} s, {args.threads} client threads, {sum(outcomes.values())} requests")
    for name, count in sorted(outcomes.items()):
        print(f"  {name}: {count}")
    print(f"  good requests that failed: {outcomes['good FAILED']}")
    if latencies:
        print(f"  good latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms")
    for name, seconds in video_seconds.items():
        print(f"  video {name}: longest answer {max(seconds):.1f} s")
    live = honest_live.outputs
    if len(live) > 1:
        gaps = np.diff(live)
        print(f"  honest live client: {len(live)} frames, {(len(live) - 1) / (live[-1] - live[0]):.1f} frames/s, "
              f"longest gap {gaps.max():.2f} s")
    else:
        print(f"  honest live client: {len(live)} frames (FAILED)")
    print(f"  app RSS {start_rss / 1e6:.0f} MB at start, {end_rss / 1e6:.0f} MB at end")
    print(f"  disk in the app's Gradio folder {start_disk / 1e6:.1f} MB at start, {end_disk / 1e6:.1f} MB at end "
          f"(cap {UPLOADS_CAP / 1e6:.0f} MB)")
    print("  RSS MB / disk MB over the run: " + ", ".join(f"{rss:.0f}/{disk:.1f}" for rss, disk in samples))
    print(f"  tracebacks in the app's log: {log.count('Traceback')}")
    return 1 if outcomes["good FAILED"] or len(live) < 2 else 0


if __name__ == "__main__":
    sys.exit(main())
