"""Attacks on the running app over raw HTTP, as a hostile client would make them
(gradio_client only ever sends well-formed payloads)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app_process import ROOT, AppProcess
from jaxkp.examples import compose_faces
from jaxkp.uploads import NOT_UPLOADED
from photos import (
    ASTRONAUT,
    exif_rotated_astronaut,
    jpeg_in_blp,
    line_of_pixels_png,
    many_scans_jpeg,
    many_scans_mpo,
    pgm_past_16_bits,
    save,
    short_header_png,
    unknown_dds,
)

pytestmark = pytest.mark.slow  # the app in its own process


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    process = AppProcess(tmp_path_factory.mktemp("app"))
    yield process
    process.close()


def test_every_path_trick_gets_the_same_message_at_once(app, tmp_path):
    real = app.upload(ASTRONAUT)
    root = Path(real).parents[1]  # Gradio stores uploads as <root>/<hash>/<name>
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to(ROOT / "checkpoints" / "loss_curve.png")
    (root / "folder").mkdir()
    tricks = [
        "checkpoints/loss_curve.png", str(ROOT / "checkpoints" / "loss_curve.png"), "/etc/hostname",
        "/no/such/file.png", str(tmp_path), "/root", str(root / ".." / ".." / "etc" / "hostname"),
        f"{Path(real).parent}/../../../../etc/hostname", str(root / "link"), str(root / "fifo"),
        str(root / "folder"), str(root), "/dev/stdin", "/dev/zero", str(root / "a\x00b"),
    ]
    payloads = [{"path": trick} for trick in tricks]
    payloads += [{"path": trick, "meta": {"_type": "gradio.FileData"}} for trick in tricks[:4] + [str(root / "fifo")]]
    payloads += ["/etc/hostname", {"path": 5}, [1, 2]]
    for payload in payloads:
        start = time.monotonic()
        event, message = app.call(payload, timeout=5)  # a read that blocks would time out here
        assert (event, message) == ("error", NOT_UPLOADED), payload
        assert time.monotonic() - start < 1.0, payload
    event, outputs = app.call({"path": real, "meta": {"_type": "gradio.FileData"}})
    assert event == "complete" and len(outputs[2]["faces"]) == 1


def test_refused_files_log_one_line_and_no_traceback(app):
    time.sleep(1.1)  # refusals of one reason are logged at most once a second
    app.call({"path": "/etc/hostname"}, timeout=5)
    log = app.log_path.read_text()
    assert "refused photo: outside the upload folder" in log
    assert "Traceback" not in log


def big_jpeg(path: Path) -> Path:
    """An 8000x8000 (64 megapixel) JPEG of faces on a textured background, about 15 MB."""
    rng = np.random.default_rng(0)
    faces = compose_faces(6, size=(1000, 1000))
    canvas = np.kron(faces, np.ones((8, 8, 1), np.uint8))
    canvas = np.clip(canvas.astype(np.int16) + rng.integers(-12, 13, canvas.shape[:2], dtype=np.int16)[..., None],
                     0, 255).astype(np.uint8)
    return save(Image.fromarray(canvas), path, format="JPEG", quality=92)


def test_a_64_megapixel_photo_costs_bounded_memory_and_disk(app, tmp_path):
    photo = big_jpeg(tmp_path / "big.jpg")
    assert 8e6 < photo.stat().st_size < 25e6
    uploaded = {"path": app.upload(photo), "meta": {"_type": "gradio.FileData"}}
    app.call(uploaded)  # the first call compiles the batch sizes its faces need
    for _ in range(2):
        rss_before, disk_before = app.rss_bytes(), app.disk_bytes()
        app.reset_peak_rss()
        event, outputs = app.call(uploaded)
        assert event == "complete"
        assert outputs[2]["image"] == {"width": 8000, "height": 8000}
        assert len(outputs[2]["faces"]) == 6
        growth = app.rss_bytes("VmHWM") - rss_before
        written = app.disk_bytes() - disk_before
        print(f"64 MP JPEG: peak RSS growth {growth / 1e6:.0f} MB, disk {written / 1e6:.2f} MB")
        assert growth < 600e6
        assert written < 20e6
        annotated = Image.open(outputs[0]["path"])
        assert max(annotated.size) <= 2048 and annotated.format == "JPEG"


def test_a_flood_past_the_queue_is_refused_at_once_and_a_real_request_still_completes(app, tmp_path):
    photo = {"path": app.upload(ASTRONAUT), "meta": {"_type": "gradio.FileData"}}

    def submit(index: int) -> tuple[int, float, str | None]:
        start = time.monotonic()
        response = app.submit(photo, client=f"198.51.100.{index % 8}")  # eight clients: past the line's 24
        event_id = response.json().get("event_id") if response.status_code == 200 else None
        return response.status_code, time.monotonic() - start, event_id

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(submit, range(80)))
    refused = [seconds for code, seconds, _ in answers if code == 503]
    accepted = [event_id for code, _, event_id in answers if code == 200]
    assert refused and accepted
    assert len(refused) + len(accepted) == len(answers)
    # At once: no refusal waited in a line (waiting behind 24 photos takes many seconds; a loaded
    # 2-core machine answers a refusal in about 1 s).
    assert max(refused) < 5.0
    # A real user told "queue is full" tries again, and is served once the queue drains.
    deadline = time.monotonic() + 60
    while (response := app.submit(photo)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    event, outputs = app.result(response.json()["event_id"])
    assert event == "complete" and len(outputs[2]["faces"]) == 1
    for event_id in accepted:  # the accepted ones were all served
        assert app.result(event_id)[0] == "complete"


def test_one_client_holds_only_its_share_of_the_line_and_another_is_served_meanwhile(app, tmp_path):
    """One client with 12 threads once kept /predict's line full, and every other client
    got "busy" for as long as it sent. A client now holds at most PER_CLIENT["predict"]
    places, running or waiting: the rest of its flood is refused at once, with a message
    that says why, and another client's photo is taken and answered while it lasts."""
    import app as served

    share = served.PER_CLIENT["predict"]
    four = save(Image.fromarray(compose_faces(4, size=(1600, 1200), seed=3)), tmp_path / "four.png", format="PNG")
    photo = {"path": app.upload(four), "meta": {"_type": "gradio.FileData"}}
    with ThreadPoolExecutor(max_workers=12) as pool:
        flood = list(pool.map(lambda _: app.submit(photo, client="203.0.113.9"), range(36)))
        honest = app.submit(photo, client="203.0.113.10")  # while the flood's photos run
    accepted = [response.json()["event_id"] for response in flood if response.status_code == 200]
    refused = [response.json()["detail"] for response in flood if response.status_code == 503]
    print(f"one client's 36 photos: {len(accepted)} taken, {len(refused)} refused")
    assert len(accepted) + len(refused) == len(flood)
    assert share <= len(accepted) < 36 // 2 and set(refused) == {served.CLIENT_BUSY["predict"]}
    assert honest.status_code == 200
    event, outputs = app.result(honest.json()["event_id"], timeout=120)
    assert event == "complete" and outputs[2]["faces"]
    for event_id in accepted:
        assert app.result(event_id, timeout=120)[0] == "complete"


def test_heic_photo_with_exif_orientation(app, tmp_path):
    jpeg = exif_rotated_astronaut(tmp_path / "rotated.jpg")
    heic = tmp_path / "rotated.heic"
    image = Image.open(jpeg)
    image.save(heic, format="HEIF", exif=image.info["exif"])
    event, outputs = app.call_file(heic)
    assert event == "complete"
    upright = app.call_file(ASTRONAUT)[1][2]
    assert outputs[2]["image"] == upright["image"]
    (face,), (want,) = outputs[2]["faces"], upright["faces"]
    interocular = np.linalg.norm(np.subtract(want["keypoints"][36], want["keypoints"][45]))
    assert np.linalg.norm(np.subtract(face["keypoints"], want["keypoints"]), axis=1).mean() < 0.05 * interocular


@pytest.mark.parametrize("size", [(5000, 1), (1, 5000), (200000, 48)])
def test_long_thin_photos_get_an_answer(app, tmp_path, size):
    """A photo one pixel thin (its display copy once shrank to nothing) or a long strip
    (turned, it once needed a canvas past OpenCV's 32767-pixel side): a plain answer."""
    path = save(Image.new("L", size, 128), tmp_path / "thin.png")
    event, outputs = app.call_file(path)
    assert event == "complete" and outputs[2]["faces"] == []
    assert outputs[2]["image"] == {"width": size[0], "height": size[1]}


def test_damaged_headers_get_one_message_on_photos_and_frames(app, tmp_path):
    """Files on which Pillow raises other than OSError (found by fuzzing the app's reader)
    once reached the client as a bare error and the log as a traceback; and a photo one
    pixel wide and two million long is refused from its header."""
    import base64

    damaged = {"bad.dds": (unknown_dds, "format read here"), "maxval.jpg": (pgm_past_16_bits, "corrupt"),
               "wrapped.blp": (jpeg_in_blp, "format read here"),  # a JPEG of 156 scans in a BLP texture
               "short.png": (short_header_png, "corrupt"), "line.png": (line_of_pixels_png, "too long"),
               "scans.jpg": (many_scans_jpeg, "156 scans"),  # a progressive JPEG's scan repeated
               "scans_mpo.jpg": (many_scans_mpo, "157 scans")}  # the same as an MPO's first frame
    for name, (make, expected) in damaged.items():
        path = make(tmp_path / name)
        event, message = app.call_file(path)
        assert event == "error" and message.startswith("Cannot use this file: ") and expected in message, name
        frame = {"path": None, "url": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()}
        event, message = app.call(frame, timeout=30, api="live")
        assert event == "error" and message.startswith("Cannot use this frame: ") and expected in message, name
    assert "Traceback" not in app.log_path.read_text()
    event, outputs = app.call_file(ASTRONAUT)
    assert event == "complete" and len(outputs[2]["faces"]) == 1


def test_empty_file_is_called_empty(app, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert app.call_file(empty) == ("error", "Cannot use this file: the file is empty (0 bytes)")


@pytest.mark.parametrize("count, capped", [(20, False), (21, True)])
def test_status_says_the_cap_cut_faces_only_when_it_did(app, tmp_path, count, capped):
    photo = save(Image.fromarray(compose_faces(count, size=(1600, 1200))), tmp_path / f"{count}.png", format="PNG")
    event, outputs = app.call_file(photo)
    assert event == "complete"
    assert len(outputs[2]["faces"]) == 20
    found, _, legend = outputs[3].partition(" Dots")
    assert found == "Found 20 faces" + (" (showing the 20 largest)" if capped else "") + "."
    assert legend.startswith(" are coloured by how sure each point is")


def test_video_and_live_endpoints_refuse_alike(app, tmp_path):
    for api in ("video", "live"):
        for payload in ({"path": "/etc/hostname"},
                        {"path": str(ROOT / "app.py"), "meta": {"_type": "gradio.FileData"}}):
            response = httpx.post(f"{app.url}/gradio_api/call/{api}",
                                  json={"data": [payload] + ([None] if api == "live" else [])}, timeout=10)
            assert app.result(response.json()["event_id"], timeout=10, api=api) == ("error", NOT_UPLOADED)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    response = httpx.post(f"{app.url}/gradio_api/call/video",
                          json={"data": [{"path": app.upload(junk), "meta": {"_type": "gradio.FileData"}}]}, timeout=10)
    event, message = app.result(response.json()["event_id"], timeout=30, api="video")
    assert event == "error" and message.startswith("Cannot use this file: not a video file")
    bad_frame = {"path": None, "url": "data:image/jpeg;base64,!!!notbase64"}
    response = httpx.post(f"{app.url}/gradio_api/call/live", json={"data": [bad_frame, None]}, timeout=10)
    assert app.result(response.json()["event_id"], timeout=10, api="live")[0] == "error"
