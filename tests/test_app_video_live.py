"""Attacks on the app's video and live endpoints, and on its upload folder, over raw
HTTP as a hostile client would make them: files that make ffmpeg work past any
budget or open other files, floods of one endpoint, streams that stop sending."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app_process import AppProcess, LiveClient, as_client, frame_data_url
from jaxkp.examples import moving_faces_clip
from photos import ASTRONAUT
from test_video import ffmpeg, write_clip

pytestmark = pytest.mark.slow

# The app's upload folder cap for this module (the default is 1 GB), and the age under
# which a file is never pruned to make room (the default is 60 s).
UPLOADS_CAP = 150_000_000
UPLOADS_MIN_AGE_S = 8
FILE_DATA = {"_type": "gradio.FileData"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    process = AppProcess(tmp_path_factory.mktemp("app"), env={"JAXKP_UPLOADS_MAX_BYTES": str(UPLOADS_CAP),
                                                               "JAXKP_UPLOADS_MIN_AGE_S": str(UPLOADS_MIN_AGE_S)})
    yield process
    process.close()


@pytest.fixture(scope="module")
def served():
    """The app's own settings (the module is imported once per test session)."""
    import app as served_app

    return served_app


def test_a_frame_rate_bomb_is_read_at_the_servers_rate_and_ends_quickly(app, tmp_path):
    """59,900 frames declared at 999 fps (60 s, 840 KB): once, it ran 111 s on all of them."""
    bomb = tmp_path / "bomb.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=999", "-frames:v", "59900", "-c:v", "libx264",
           "-preset", "ultrafast", str(bomb))
    start = time.monotonic()
    event, outputs = app.call_file(bomb, api="video", timeout=180)
    seconds = time.monotonic() - start
    assert event == "complete", outputs
    record = json.loads(Path(outputs[1]["path"]).read_text())
    print(f"999 fps bomb: {len(record['frames'])} frames analysed at {record['fps']} fps in {seconds:.1f} s")
    assert record["fps"] == 30
    assert 1700 <= len(record["frames"]) <= 1800
    assert seconds < 60


def playlist(entry: str) -> bytes:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{entry}\n#EXT-X-ENDLIST\n".encode()


def test_playlists_and_scripts_never_make_ffmpeg_open_another_file(app, tmp_path):
    secret = tmp_path / "secret.mp4"  # a media file on the server, outside the upload folder
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=10", "-frames:v", "20", "-c:v", "libx264", str(secret))
    uploaded_clip = app.upload(secret, "other-client.mp4")  # another client's upload
    hostile = {
        "clip.m3u8": playlist(str(secret)),
        "clip.mp4": playlist(f"file://{secret}"),
        "relative.m3u8": playlist(f"../{Path(uploaded_clip).parent.name}/other-client.mp4"),
        "other.m3u8": playlist(uploaded_clip),
        "list.ffconcat": f"ffconcat version 1.0\nfile '{secret}'\n".encode(),
        "concat.mp4": f"ffconcat version 1.0\nfile '{uploaded_clip}'\n".encode(),
        "frames.mp4": ASTRONAUT.read_bytes(),  # an image (image2 would read a numbered sequence)
        "script.avs": f'DirectShowSource("{secret}")\n'.encode(),
    }
    outputs_before = set((app.upload_root / "jaxkp-outputs").glob("*"))
    for name, content in hostile.items():
        path = tmp_path / "hostile"
        path.write_bytes(content)
        event, message = app.call_file(path, api="video", name=name, timeout=30)
        assert event == "error", (name, message)
        assert message.startswith("Cannot use this file: not a video file"), (name, message)
        assert str(secret) not in message and str(app.upload_root) not in message, (name, message)
    assert set((app.upload_root / "jaxkp-outputs").glob("*")) <= outputs_before, "a refused file left an output"
    assert "Traceback" not in app.log_path.read_text()


def test_a_video_flood_waits_in_its_own_short_line_and_photos_are_served(app, served, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", moving_faces_clip(90, faces=2, speed=2.0))
    payload = {"path": app.upload(clip), "meta": FILE_DATA}
    responses = [app.submit(payload, "video", client=f"198.51.100.{index}") for index in range(12)]
    accepted = [r.json()["event_id"] for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert 1 <= len(accepted) <= 3 and len(accepted) + len(refused) == 12
    assert all("Busy" in r.json()["detail"] for r in refused)
    # One client, one video at a time: its second is refused, and told why, while its first runs.
    again = app.submit(payload, "video", client="198.51.100.0")
    assert again.status_code == 503 and again.json()["detail"] == served.CLIENT_BUSY["video"]
    # While the videos run and wait, photos are neither refused nor queued behind them.
    for _ in range(3):
        response = app.submit({"path": app.upload(ASTRONAUT), "meta": FILE_DATA})
        assert response.status_code == 200
        event, outputs = app.result(response.json()["event_id"], timeout=60)
        assert event == "complete" and len(outputs[2]["faces"]) == 1
    for event_id in accepted:
        assert app.result(event_id, timeout=120, api="video")[0] == "complete"


def test_abandoned_streams_free_their_places_and_live_clients_share_the_cores(app, served):
    frames = [frame_data_url(frame) for frame in moving_faces_clip(30, faces=1, speed=2.0)]
    # Clients that send one frame and vanish, as many as there are live places (two
    # streams each, a client's most: a third is refused, and told why).
    share = served.PER_CLIENT["live"]
    abandoned = [LiveClient(app, client=f"198.51.100.{index // share}") for index in range(served.LIVE_PLACES)]
    for client in abandoned:
        assert client.start(frames[0]).status_code == 200
    third = LiveClient(app, client="198.51.100.0").start(frames[0])
    assert third.status_code == 503 and third.json()["detail"] == served.CLIENT_BUSY["live"]
    honest = [LiveClient(app, client=f"203.0.113.{index}") for index in range(4)]
    start = time.monotonic()
    threads = []
    for client in honest:
        assert client.start(frames[0]).status_code == 200
        threads.append(threading.Thread(target=client.stream, args=(frames, 20.0)))
        threads[-1].start()
    for thread in threads:
        thread.join()
    for client in abandoned:
        # Each is answered once, and its stream closed (its place freed) within 10 s of its last frame.
        assert client.closed.wait(5) and client.completed() is not None and len(client.outputs) == 1
        assert client.closed_at - client.outputs[-1] < 10
    for client in honest:
        assert client.outputs, "every live client is served"
        waited = client.outputs[0] - start
        rate = (len(client.outputs) - 1) / max(client.outputs[-1] - client.outputs[0], 1e-3)
        print(f"live client: first frame after {waited:.1f} s, then {rate:.1f} frames/s")
        assert waited < 10 + served.STREAM_IDLE_S
        assert len(client.outputs) >= 20


def test_a_live_frame_over_2_megapixels_is_refused_unread(app):
    frame = frame_data_url(np.zeros((8000, 8000, 3), np.uint8), format="PNG")
    assert len(frame) < 1_000_000
    app.reset_peak_rss()
    before = app.rss_bytes()
    start = time.monotonic()
    event, message = app.call({"path": None, "url": frame, "meta": FILE_DATA}, api="live", timeout=30)
    assert (event, message) == ("error", "Cannot use this frame: image too large: 8000x8000 pixels "
                                         "(limit 2 megapixels)")
    assert time.monotonic() - start < 5
    assert app.rss_bytes("VmHWM") - before < 100e6


def test_an_oversized_upload_is_cut_off_as_it_arrives(app, served):
    limit = served.UPLOAD_REQUEST_MAX_BYTES
    # Declared too large: refused before a byte of the body is read.
    status = app.raw_post("/gradio_api/upload", {"Content-Length": str(10 * limit),
                                                 "Content-Type": "multipart/form-data; boundary=b"}, b"--b\r\n")
    assert status == 413
    # Sent chunked, with no length declared: cut off once past the limit; what it left
    # on disk goes with the folder's cap.

    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.mp4\"\r\n\r\n"
        chunk = b"\0" * 1_000_000
        for _ in range(limit // len(chunk) + 20):
            yield chunk

    try:
        response = httpx.post(app.url + "/gradio_api/upload", content=body(), timeout=120,
                              headers={"content-type": "multipart/form-data; boundary=b",
                                       **as_client("198.51.100.200")})  # its share of the room spent alone
        assert response.status_code in (400, 413, 503)  # no length: it reserves 301 MB, past this cap
    except httpx.HTTPError:
        pass  # the server may close the connection while the client still sends
    time.sleep(1)
    assert app.disk_bytes() <= UPLOADS_CAP + app.start_bytes
    assert "Traceback" not in app.log_path.read_text()


def test_a_flood_of_uploads_neither_passes_the_cap_nor_pushes_out_another_clients_photo(app, tmp_path):
    """Oldest out, six requests of junk once made every other client's files go within
    3.5 s. Now a file younger than the minimum age stays, the flood is refused (503) once
    the young files fill the folder, and the honest photo uploaded before it is still
    answered; once the junk has aged, new uploads get room again."""
    deadline = time.monotonic() + 60  # an earlier test's cut-off upload goes once its file is 12 s old
    while app.disk_bytes() > app.start_bytes + 20e6 and time.monotonic() < deadline:
        time.sleep(1)
    honest = app.upload(ASTRONAUT)
    rng = np.random.default_rng(0)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(rng.integers(0, 256, 24_000_000, dtype=np.uint8).tobytes())
    statuses, peak = [], 0
    for index in range(10):  # 240 MB against a 150 MB folder, uploaded without calling any endpoint
        with junk.open("rb") as handle:  # by five clients, each within its share
            response = httpx.post(app.url + "/gradio_api/upload", files={"files": (f"junk{index}.jpg", handle)},
                                  headers=as_client(f"198.51.100.{index % 5}"), timeout=60)
        statuses.append(response.status_code)
        peak = max(peak, app.disk_bytes())
    print(f"upload statuses {statuses}; upload folder peak {peak / 1e6:.0f} MB")
    assert statuses[0] == 200 and 503 in statuses and set(statuses) <= {200, 503}
    # The caps count what was added since the start; an earlier test's last answers (under
    # 1 MB each) may not have been counted yet.
    assert peak <= UPLOADS_CAP + app.start_bytes + 2e6
    event, outputs = app.call({"path": honest, "meta": FILE_DATA})  # the photo uploaded before the flood
    assert event == "complete" and len(outputs[2]["faces"]) == 1
    time.sleep(UPLOADS_MIN_AGE_S + 3)  # the junk is old enough to go: room again
    event, outputs = app.call_file(ASTRONAUT)
    assert event == "complete" and len(outputs[2]["faces"]) == 1
    assert app.disk_bytes() <= UPLOADS_CAP + app.start_bytes + 2e6
    assert "Traceback" not in app.log_path.read_text()


def test_one_clients_uploads_take_only_its_share_of_the_folder(app, served, tmp_path):
    """A client may bring JAXKP_UPLOADS_CLIENT_SHARE of the folder's cap within the age
    under which files are never pruned: past it, its uploads are refused or cut off (503,
    saying why) while another client's still get room; once its files age, it may upload
    again. (One client's flood once kept every other client's uploads refused.)"""
    share = int(UPLOADS_CAP * served.UPLOADS_CLIENT_SHARE)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, share // 3, dtype=np.uint8).tobytes())
    answers = []  # from an address no other test uses
    for index in range(5):
        with junk.open("rb") as handle:
            response = httpx.post(app.url + "/gradio_api/upload", files={"files": (f"junk{index}.bin", handle)},
                                  headers=as_client("203.0.113.77"), timeout=60)
        answers.append((response.status_code, response.json()))
    assert [status for status, _ in answers] == [200, 200, 503, 503, 503]
    assert {detail["detail"] for _, detail in answers[2:]} == {"You have uploaded a lot in the last minute. "
                                                                "Try again in a minute."}
    # Another client meanwhile: room, and an answer.
    path = app.upload(ASTRONAUT, client="203.0.113.78")
    event, outputs = app.call({"path": path, "meta": FILE_DATA})
    assert event == "complete" and len(outputs[2]["faces"]) == 1
    time.sleep(UPLOADS_MIN_AGE_S + 2)  # the flooding client's window has passed
    assert app.upload(ASTRONAUT, client="203.0.113.77")
    assert "Traceback" not in app.log_path.read_text()


def test_uploads_that_bring_nothing_give_their_places_to_one_that_does(app, served):
    """Addresses that sent an upload's headers and no body, and sent another at each 408,
    once kept every other client's upload refused (28 times in 28). With every place
    taken, the upload that has brought the fewest bytes a second (under 64 KB/s since it
    began, a second or more ago) is now cut off (503) to give its place to a newcomer."""
    holders = []
    try:
        for index in range(served.UPLOADS_IN_FLIGHT):  # eight per address, each address's most
            holder = socket.create_connection(("127.0.0.1", app.port), timeout=30)
            holder.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n"
                           f"X-Forwarded-For: 203.0.113.{100 + index // 8}\r\n"
                           f"Content-Type: multipart/form-data; boundary=zz\r\n\r\n".encode())
            holders.append(holder)
        time.sleep(1.5)
        start = time.monotonic()
        assert app.upload(ASTRONAUT, client="198.51.100.78")  # a place, at once
        assert time.monotonic() - start < 5
        cut_off = []
        for holder in holders:
            holder.settimeout(0.2)
            try:
                cut_off.append(holder.recv(4096).startswith(b"HTTP/1.1 503"))
            except TimeoutError:
                cut_off.append(False)
        assert sum(cut_off) == 1
    finally:
        for holder in holders:
            holder.close()


def test_uploads_carry_few_files_and_must_keep_arriving(app):
    """An upload of more than one file is cut off (empty files once cost a prune walk each), and
    one that stops sending is cut off after 10 s instead of holding its room and its
    temporary file for as long as its client likes."""
    boundary = "b0undary"
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{index}.jpg"\r\n\r\n\r\n'
                    for index in range(10)) + f"--{boundary}--\r\n"
    # The boundary as Gradio's parser reads it, however it is written.
    for content_type in (f"multipart/form-data; boundary={boundary}", f"multipart/form-data; boundary = {boundary}",
                         f"multipart/form-data; boundary=nope; boundary={boundary}"):
        response = httpx.post(app.url + "/gradio_api/upload", content=parts.encode(), timeout=30,
                              headers={"content-type": content_type})
        assert response.status_code == 413 and "an upload" in response.json()["detail"], content_type
    assert app.raw_post("/gradio_api/upload", {"Content-Length": "5", "Transfer-Encoding": "chunked",
                                               "Content-Type": f"multipart/form-data; boundary={boundary}"},
                        b"0\r\n\r\n") == 400  # a length and chunks: framed one way here, another there
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", app.port), timeout=30) as connection:
        connection.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n"
                           f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
                           + parts.split("\r\n\r\n")[0].encode() + b"\r\n\r\n" + b"\0" * 1000)
        answer = connection.recv(4096).decode("latin-1")  # then nothing more is sent
    assert answer.startswith("HTTP/1.1 408") and 9 < time.monotonic() - start < 20


def test_a_photo_a_request_names_is_marked_fresh_as_it_joins_its_line(app):
    """The folder's cap never prunes a file younger than its minimum age; a photo uploaded
    earlier than that is made young again when a request names it, so an upload flood does
    not push it out while the request waits in line."""
    path = app.upload(ASTRONAUT)
    long_ago = time.time() - 600
    os.utime(path, (long_ago, long_ago))
    event, outputs = app.call({"path": path, "meta": FILE_DATA})
    assert event == "complete" and len(outputs[2]["faces"]) == 1
    assert time.time() - os.stat(path).st_mtime < 60


def test_gradios_unused_routes_are_closed_and_only_the_upload_route_takes_uploads(app):
    """/process_recording runs ffmpeg on any file, unqueued; an endpoint's route that ends
    in /upload (/call/upload) once got the upload route's 301 MB limit."""
    with ASTRONAUT.open("rb") as handle:
        response = httpx.post(app.url + "/gradio_api/process_recording", files={"video": ("a.mp4", handle)},
                              data={"zoom_effects": "[]"}, timeout=30)
    assert response.status_code == 404
    junk = {"data": [[0] * 5_000_000]}
    response = httpx.post(app.url + "/gradio_api/call/upload", json=junk, timeout=60)
    assert response.status_code == 413
    assert httpx.get(app.url + "/gradio_api/runs", timeout=30).status_code == 404  # no run history
    # /cancel: a cancel timed as a task began left its place taken for good.
    assert httpx.post(app.url + "/gradio_api/cancel", json={"session_hash": "s", "fn_index": 1, "event_id": "x"},
                      timeout=30).status_code == 404
    # Gradio's file route fetched any public URL it was given, for anyone.
    for url in ("http://192.0.2.1/", "https://192.0.2.1/x.png", "http%3A//192.0.2.1/"):
        assert httpx.get(f"{app.url}/gradio_api/file={url}", timeout=30).status_code == 404
    assert "192.0.2.1" not in app.log_path.read_text()


def test_an_upload_holds_its_place_only_while_it_arrives(app):
    """A client has 8 places among the uploads arriving: each upload gives its place back
    as it ends, so uploads one after another on one kept-alive connection never run out
    of them (and other methods on the upload route, answered 405, take none)."""
    with httpx.Client(headers=as_client("198.51.100.150"), timeout=30) as http:
        for _ in range(12):
            assert http.get(app.url + "/gradio_api/upload").status_code == 405
        for index in range(12):
            with ASTRONAUT.open("rb") as handle:
                response = http.post(app.url + "/gradio_api/upload", files={"files": (f"{index}.png", handle)})
            assert response.status_code == 200, (index, response.text)


def test_no_route_runs_a_function_outside_the_queue(app):
    """/gradio_api/run/<api> and /gradio_api/api/<api> would run a function at once, past
    every place and line: six videos ran at once that way."""
    payload = {"data": [{"path": str(ASTRONAUT), "meta": FILE_DATA}]}
    for route in ("run", "api"):
        for api in ("predict", "video", "live"):
            response = httpx.post(f"{app.url}/gradio_api/{route}/{api}", json=payload, timeout=30)
            assert response.status_code >= 400, (route, api, response.status_code)
            assert "faces" not in response.text
        # Gradio's examples loader once ran outside the queue, under any name, by its fn_index.
        response = httpx.post(f"{app.url}/gradio_api/{route}/anything", json={"data": [None], "fn_index": 0},
                              timeout=30)
        assert response.status_code >= 400, (route, response.status_code)
    # In the queue, a click that is no example gets one message, and the log no traceback.
    assert app.call(None, api="load_example") == ("error", "No such example.")
    assert "Traceback" not in app.log_path.read_text()


def test_a_large_body_is_refused_on_every_route(app):
    junk = {"data": [{"path": "x" * 20_000_000}]}
    for route in ("/gradio_api/call/predict", "/gradio_api/queue/join", "/gradio_api/stream/nope"):
        start = time.monotonic()
        response = httpx.post(app.url + route, json=junk, timeout=60)
        assert response.status_code == 413, route
        assert time.monotonic() - start < 10
    # Under the size limit, but 2,000,000 empty objects: parsed, 350 MB that a waiting request kept.
    many = b'{"data": [' + b",".join([b"{}"] * 2_000_000) + b'], "fn_index": 1, "session_hash": "s"}'
    app.reset_peak_rss()
    before = app.rss_bytes()
    for route in ("/gradio_api/call/predict", "/gradio_api/queue/join"):
        response = httpx.post(app.url + route, content=many, headers={"content-type": "application/json"},
                              timeout=60)
        assert response.status_code in (400, 413), route  # FastAPI words a refusal while it reads as 400
    assert app.rss_bytes("VmHWM") - before < 100e6
    event, outputs = app.call_file(ASTRONAUT)
    assert event == "complete" and len(outputs[2]["faces"]) == 1
