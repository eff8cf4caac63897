"""jaxkp in the browser: 68 facial keypoints on every face of a photo.

Runs locally (`python app.py`) and unchanged as a Hugging Face Space. The
same function is the API endpoint `/predict`:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    annotated, crops, result, status = client.predict(handle_file("photo.jpg"), api_name="/predict")
    result["faces"][0]["keypoints"]   # 68 [x, y] pairs in the photo's pixels

Weights: JAXKP_WEIGHTS (a folder or a Hub repo id[@revision]), else the
bundled checkpoints/.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cv2
import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from jaxkp import load_pipeline
from jaxkp.align import aligned_faces, zip_aligned
from jaxkp.draw import annotate, face_crops
from jaxkp.examples import example_paths
from jaxkp.geometry import shrink_by
from jaxkp.inference import MAX_FACES, ImageError, Photo, read_photo
from jaxkp.limits import BodyLimit, ClientShares, EndpointLines, limit_stream_idle, refusals
from jaxkp.pose import describe_pose
from jaxkp.track import FaceTracker
from jaxkp.uploads import NOT_UPLOADED, FolderCap, UploadRefused, read_upload, uploaded_file
from jaxkp.video import VideoBudget, VideoError, process_video

logging.basicConfig(level=logging.INFO, format="%(message)s")
# The multipart parser logs each malformed upload it meets (14,000 lines in 30 s of a
# flood); the app's own refusals say what a client needs.
logging.getLogger("python_multipart").setLevel(logging.ERROR)
log = logging.getLogger("jaxkp.app")

PIPELINE = load_pipeline()
# Every batch shape compiled before the first visitor (about 4 s at start), who would
# otherwise wait about half a second for each new shape. (This used to read a blank
# photo, which proposes no face and so compiled nothing.)
PIPELINE.compile()

# What one request may cost (docs/security.md): the upload's size (a photo 25 MB, a
# video 300 MB: a minute of phone 4K); the photo is worked on reduced to at most
# inference.WORKING_MAX_PIXELS; the annotated image comes back as a JPEG at most
# DISPLAY_MAX_SIDE on its longer side.
MAX_UPLOAD_BYTES = 25_000_000
MAX_VIDEO_UPLOAD_BYTES = 300_000_000
DISPLAY_MAX_SIDE = 2048
JPEG_QUALITY = 90
# Each endpoint has its own places (running at once) and its own waiting line; past
# the line a request is refused at once (HTTP 503) instead of waiting minutes, and no
# endpoint's traffic can fill another's line. Photos: two at a time, one per core.
# Videos: one at a time, two waiting. Live: a place per stream, held only while its
# frames arrive (STREAM_IDLE_S), so several streams share the cores.
CONCURRENCY = 2
WAITING = {"predict": 24, "video": 2, "live": 4}
BUSY = {"predict": "The app is busy: too many photos are waiting. Try again in a moment.",
        "video": "Busy: other videos are being tracked. Try again soon.",
        "live": "Busy: too many live streams. Try again soon."}
# And one client may hold only this many of an endpoint's places, running or waiting
# (past it, HTTP 503 at once): one client's 12 threads once kept /predict's line full
# for as long as they sent, and every other client got "busy".
PER_CLIENT = {"predict": 6, "video": 1, "live": 2, "show_aligned": 2, "load_example": 2}
CLIENT_BUSY = {"predict": f"You already have {PER_CLIENT['predict']} photos in line: wait for one to finish.",
               "video": "Your other video is still being tracked: wait for it to finish.",
               "live": f"You already have {PER_CLIENT['live']} live streams: close one first."}
LIVE_PLACES = 6
STREAM_IDLE_S = 5.0
# Live frames over this are refused from their header, before decoding.
LIVE_MAX_PIXELS = 2_000_000

# Only files Gradio stored for a client (its upload and cache folder) are read.
UPLOAD_ROOT = Path(get_upload_folder())
# Outputs are written inside Gradio's cache, so Gradio hands them out without
# another copy; each request prunes those older than OUTPUT_MAX_AGE_S and, past
# OUTPUT_MAX_BYTES in all, the oldest. Two clients sending noise photos without pause
# (3.5 MB of answer each, 8 a second) filled 64 MB in 3.5 s, pushing out an answer's
# images before a slow client fetched them; a quarter of the upload folder's cap (250
# MB) keeps each answer for 9 s or more under that load, minutes otherwise.
OUTPUT_DIR = UPLOAD_ROOT / "jaxkp-outputs"
OUTPUT_MAX_AGE_S = 300
# The whole upload folder, whatever clients upload without calling an endpoint
# (JAXKP_UPLOADS_MAX_BYTES sets it for a smaller disk); an upload request may carry at
# most one file's worth.
UPLOADS_MAX_BYTES = int(os.environ.get("JAXKP_UPLOADS_MAX_BYTES", 1_000_000_000))
OUTPUT_MAX_BYTES = UPLOADS_MAX_BYTES // 4
UPLOAD_REQUEST_MAX_BYTES = MAX_VIDEO_UPLOAD_BYTES + 1_000_000
# Any other request body: a JSON payload, or a live frame inline (at most 4 MB, in base64).
REQUEST_MAX_BYTES = 8_000_000
# And at most this many files in it (JAXKP_UPLOADS_MAX_FILES): empty files cost no bytes.
UPLOADS_MAX_FILES = int(os.environ.get("JAXKP_UPLOADS_MAX_FILES", 5_000))
# A file younger than this is never pruned to make room (JAXKP_UPLOADS_MIN_AGE_S): past the
# caps with only young files, a new upload is refused (HTTP 503) instead.
UPLOADS_MIN_AGE_S = float(os.environ.get("JAXKP_UPLOADS_MIN_AGE_S", FolderCap.MIN_AGE_S))
UPLOADS = FolderCap(UPLOAD_ROOT, UPLOADS_MAX_BYTES, UPLOADS_MAX_FILES, UPLOADS_MIN_AGE_S)
# What one client may bring within that age (JAXKP_UPLOADS_CLIENT_SHARE of each cap), and
# how many of its uploads may arrive at once (of UPLOADS_IN_FLIGHT): one client's flood of
# uploads kept every other client's refused (503) while it lasted.
UPLOADS_CLIENT_SHARE = float(os.environ.get("JAXKP_UPLOADS_CLIENT_SHARE", 0.4))
UPLOADS_IN_FLIGHT = 32
UPLOAD_SHARES = ClientShares(max_bytes=int(UPLOADS_MAX_BYTES * UPLOADS_CLIENT_SHARE),
                             max_files=int(UPLOADS_MAX_FILES * UPLOADS_CLIENT_SHARE),
                             max_arriving=UPLOADS_IN_FLIGHT // 4, window_s=UPLOADS_MIN_AGE_S)
# Gradio's routes that the app does not use and that would run work outside its limits:
# /process_recording runs ffmpeg (a 1920x1080 zoom and x264 encode per "zoom effect" the
# form lists, no timeout) on any file, unqueued.
# /cancel cancels a session's running task by its (client-chosen) session hash: a cancel
# that landed as a task began left its place taken for good (six photos and a second of
# cancels stopped /predict for everyone until a restart), and one that landed later freed
# the place while the photo still ran (3 GB where two at a time take 1.1). The app's page
# cancels nothing; a stream ends through its own /stream/<id>/close.
CLOSED_ROUTES = ("/gradio_api/process_recording", "/gradio_api/cancel")
# What one video may cost, set by the server, never by the file: 60 s of media, at
# most 30 analysed frames a second (1,800 in all), frames up to 4K (reduced by ffmpeg
# to the working size before they reach Python), 3 minutes of work on this 2-core
# machine, 4 GB of address space for the decoder.
VIDEO_BUDGET = VideoBudget(max_seconds=60, max_frames=1800, max_fps=30.0, max_input_pixels=4096 * 2304,
                           max_wall_seconds=180, max_ffmpeg_bytes=4 << 30)


def freshen_named_uploads(inputs: list) -> None:
    """Marks the uploads a submission names (FileData paths in the upload folder) as
    written now: the folder's cap never prunes a file younger than UPLOADS_MIN_AGE_S, so a
    photo older than that, named by a request that then waits in line, is not pushed out
    by an upload flood before its turn."""
    for item in inputs:
        path = item.get("path") if isinstance(item, dict) else None
        if isinstance(path, str):
            with contextlib.suppress(UploadRefused, OSError):
                os.utime(uploaded_file(path, UPLOAD_ROOT, MAX_VIDEO_UPLOAD_BYTES))


def output_path(suffix: str) -> Path:
    """A fresh, unguessable file name in the output folder."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR / f"{uuid.uuid4().hex}{suffix}"


def write_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    path = output_path(".jpg")
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    path.write_bytes(encoded.tobytes())
    return str(path)


LAST_PRUNE = [0.0]


def prune_outputs(at_most_every_s: float = 0.0) -> None:
    """Deletes outputs older than OUTPUT_MAX_AGE_S, then the oldest while over
    OUTPUT_MAX_BYTES; skipped if the last pruning was under `at_most_every_s` ago."""
    if time.monotonic() - LAST_PRUNE[0] < at_most_every_s:
        return
    LAST_PRUNE[0] = time.monotonic()
    files = []
    for path in OUTPUT_DIR.glob("*.*"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        files.append((info.st_mtime, info.st_size, path))
    files.sort()
    cutoff, total = time.time() - OUTPUT_MAX_AGE_S, sum(size for _, size, _ in files)
    for mtime, size, path in files:
        if mtime >= cutoff and total <= OUTPUT_MAX_BYTES:
            break
        path.unlink(missing_ok=True)
        total -= size


def uploaded_path(payload: str | dict | None) -> str | None:
    """The file behind a raw input payload (a path, or Gradio's FileData dict)."""
    if isinstance(payload, dict):
        payload = payload.get("path")
    return payload if isinstance(payload, str) and payload else None


def display_copy(rgb: np.ndarray) -> np.ndarray:
    """`rgb` shrunk to at most DISPLAY_MAX_SIDE on its longer side."""
    # At least one pixel on the short side: a 1x5000 photo shrinks to 1x2048, not to nothing.
    return shrink_by(rgb, min(1.0, DISPLAY_MAX_SIDE / max(rgb.shape[:2])))


LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_memory() -> None:
    """Hands freed heap pages back to the system (glibc): a large photo's buffers
    would otherwise stay in the process's heap arenas, and RSS would creep up."""
    trim = getattr(LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def refuse(message: str, reason: str, size: int | None) -> gr.Error:
    """One log line for a refused file (no traceback), and the client's one message."""
    # At most a line a second (a flood of malformed payloads wrote 62 a second; a kind per
    # reason let the numbers a client chose in a reason make every line new).
    refusals.info("photo", "refused photo: %s (%s bytes)", reason, "?" if size is None else size)
    return gr.Error(message, print_exception=False)


Handler = TypeVar("Handler", bound=Callable[..., Any])


def one_message(what: str) -> Callable[[Handler], Handler]:
    """An endpoint whose unforeseen failure (a bug, a decoder's surprise) reaches its
    client as one plain message, never Gradio's bare error; the traceback goes to the
    server's log only."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except gr.Error:
                raise
            except Exception:  # noqa: BLE001 - the client gets one message; the log gets the cause
                log.exception("%s failed unexpectedly", handler.__name__)
                raise gr.Error(f"Something went wrong with this {what}; try another.", print_exception=False) \
                    from None
        return guarded  # type: ignore[return-value]
    return wrap


def example_loader(load: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Gradio's loader of a clicked example, for what a client sends as the click: a
    failure (a payload that is no example) is one message and one log line. (Gradio's own
    unpacked a null and logged a traceback per request: 926 in a 10 s flood.)"""
    @functools.wraps(load)
    def guarded(example: Any) -> Any:
        try:
            return load(example)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - a malformed click gets one message
            refusals.info("example", "refused an example click (%s)", type(error).__name__)
            raise gr.Error("No such example.", print_exception=False) from None
    return guarded


def read_request_photo(photo: str | dict | None) -> Photo:
    """The client's uploaded photo, decoded reduced; gr.Error with one clear message otherwise."""
    path = uploaded_path(photo)
    if path is None:
        raise gr.Error("No photo: upload one or take one with the webcam, then press Find keypoints.",
                       print_exception=False)
    try:
        content = read_upload(path, UPLOAD_ROOT, MAX_UPLOAD_BYTES)
    except UploadRefused as refused:
        raise refuse(str(refused), refused.reason, refused.size) from None
    try:
        return read_photo(content)
    except ImageError as error:
        raise refuse(f"Cannot use this file: {error}", str(error), len(content)) from None


# The app's aligned faces: FFHQ's alignment at this size (the CLI's `align` makes either template).
ALIGNED_SIZE = 256
NO_ALIGNED_FACES = {"gallery": [], "zip": None}


@one_message("photo")
def predict(photo: str | dict | None) -> tuple[str, list[str], dict[str, Any], str, dict[str, Any]]:
    """Faces and keypoints for one photo: (annotated JPEG, face crops, result JSON, status, the
    aligned faces' files for `show_aligned`, kept in the session, not sent)."""
    prune_outputs()  # first, so refused requests prune too
    try:
        return annotated_outputs(read_request_photo(photo))
    finally:
        release_memory()


def annotated_outputs(image: Photo) -> tuple[str, list[str], dict[str, Any], str, dict[str, Any]]:
    """predict's outputs for a decoded photo; the annotated image at display size."""
    # One face more than shown tells whether the cap cut any off.
    result = PIPELINE(image, max_faces=MAX_FACES + 1)
    capped = len(result["faces"]) > MAX_FACES
    result["faces"] = result["faces"][:MAX_FACES]
    count = len(result["faces"])
    if count == 0:
        status = ("No face found. Faces turned far from the camera, very small or dark ones can be missed; "
                  "try a larger or better-lit face.")
    else:
        status = f"Found {count} face{'s' if count > 1 else ''}" + (
            f" (showing the {MAX_FACES} largest)" if capped else "") + "."
        if result["faces"][0].get("uncertainty") is not None:
            status += " Dots are coloured by how sure each point is: green sure, yellow less, red unsure."
    shown = display_copy(image.rgb)
    crops = [(write_jpeg(crop), caption(index, face))
             for index, (crop, face) in enumerate(zip(face_crops(shown, result, PIPELINE.model.crop), result["faces"]))]
    return (write_jpeg(annotate(shown, result, pose_axes=True, confidence=True)), crops, result, status,
            aligned_files(image, result))


def aligned_files(image: Photo, result: dict[str, Any]) -> dict[str, Any]:
    """Each face aligned (FFHQ), as gallery JPEGs and one ZIP of PNGs with aligned.json."""
    if not result["faces"]:
        return NO_ALIGNED_FACES
    aligned = aligned_faces(image.rgb, result, ALIGNED_SIZE, "ffhq")
    archive = output_path(".zip")
    archive.write_bytes(zip_aligned(aligned, "face", "ffhq"))
    return {"gallery": [(write_jpeg(crop), f"face {index + 1}") for index, (crop, _) in enumerate(aligned)],
            "zip": str(archive)}


def show_aligned(files: dict[str, Any] | None) -> tuple[list, str | None]:
    """The aligned faces that the last photo request made (the session's state)."""
    files = files or NO_ALIGNED_FACES
    return files["gallery"], files["zip"]


def caption(index: int, face: dict[str, Any]) -> str:
    """A face's gallery caption: its number, the network's face score, its points' mean
    expected error and its head pose."""
    return (f"face {index + 1}" + ("" if face.get("score") is None else f", score {face['score']:.2f}")
            + ("" if face.get("uncertainty") is None else f", points ±{np.mean(face['uncertainty']):.0f} px")
            + (f"; {describe_pose(face['pose'])}" if face.get("pose") else ""))


# A webcam frame comes inline, as a data URL; larger ones are refused unread.
MAX_FRAME_BYTES = 4_000_000


def frame_bytes(payload: str | dict | None) -> bytes | None:
    """A streamed frame's encoded bytes: inline as a base64 data URL (what the browser
    sends), or an uploaded file. Nothing is ever fetched from a URL."""
    url = payload.get("url") if isinstance(payload, dict) else None
    if isinstance(url, str) and url.startswith("data:"):
        header, _, encoded = url.partition(",")
        if not header.endswith(";base64") or len(encoded) > MAX_FRAME_BYTES * 4 // 3 + 4:
            raise UploadRefused("unusable data URL", len(url), "this frame is not a base64 image of at most 4 MB")
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError:
            raise UploadRefused("bad base64", len(url), "this frame is not a base64 image of at most 4 MB") from None
    path = uploaded_path(payload)
    return None if path is None else read_upload(path, UPLOAD_ROOT, MAX_UPLOAD_BYTES)


@one_message("frame")
def live_frame(frame: str | dict | None, state: dict | None) -> tuple[str | None, str, dict | None]:
    """One webcam frame: the frame with its tracked faces drawn (a JPEG in the output
    folder, so Gradio keeps no copy of its own per frame), a speed readout, the session's
    tracker state (faces keep their ids, the detector runs only when needed)."""
    started = time.perf_counter()
    try:
        content = frame_bytes(frame)
        if content is None:
            return None, "Waiting for the camera...", state
        image = read_photo(content, refuse_over=LIVE_MAX_PIXELS)
    except (UploadRefused, ImageError) as error:
        raise refuse(str(error) if isinstance(error, UploadRefused) else f"Cannot use this frame: {error}",
                     getattr(error, "reason", str(error)), None) from None
    prune_outputs(at_most_every_s=1.0)
    state = state or {"tracker": FaceTracker(PIPELINE), "start": started, "frames": [], "latency": []}
    rgb = display_copy(image.rgb)
    faces = state["tracker"](rgb, started - state["start"])
    frame_result = {"image": {"width": rgb.shape[1], "height": rgb.shape[0]}, "faces": faces}
    shown = write_jpeg(annotate(rgb, frame_result, pose_axes=True, confidence=True), quality=80)
    # Frames per second over the last 2 s of arrivals, and this frame's processing time.
    state["frames"] = [t for t in state["frames"] if started - t < 2.0] + [started]
    state["latency"] = (state["latency"] + [time.perf_counter() - started])[-30:]
    rate = (len(state["frames"]) - 1) / max(state["frames"][-1] - state["frames"][0], 1e-3)
    readout = (f"{rate:.1f} frames/s, {1000 * float(np.median(state['latency'])):.0f} ms per frame, "
               f"{len(faces)} face{'s' if len(faces) != 1 else ''}")
    return shown, readout, state


@one_message("video")
def video(upload: str | dict | None, progress: gr.Progress = gr.Progress()) -> tuple[str, str, str]:
    """A video file: (annotated H.264 MP4, per-frame JSON file, status)."""
    prune_outputs()
    path = uploaded_path(upload)
    if path is None:
        raise gr.Error("No video: upload one, then press Track faces.", print_exception=False)
    try:
        source = uploaded_file(path, UPLOAD_ROOT, MAX_VIDEO_UPLOAD_BYTES)
    except UploadRefused as refused:
        raise refuse(str(refused), refused.reason, refused.size) from None
    out_mp4, out_json = output_path(".mp4"), output_path(".json")
    try:
        with UPLOADS.in_use(source):
            record = process_video(PIPELINE, source, out_mp4, VIDEO_BUDGET,
                                   lambda done, total: progress((done, total), unit="frames"))
    except VideoError as error:
        out_mp4.unlink(missing_ok=True)
        raise refuse(f"Cannot use this file: {error}", str(error), os.stat(source).st_size) from None
    finally:
        release_memory()
    out_json.write_text(json.dumps(record))
    faces = {face["id"] for frame in record["frames"] for face in frame["faces"]}
    status = (f"{len(record['frames'])} frames analysed at {record['fps']:g} frames/s; "
              f"{len(faces)} face{'s' if len(faces) != 1 else ''} tracked.")
    return str(out_mp4), str(out_json), status


class GuardedBlocks(gr.Blocks):
    """Blocks whose input checks answer hostile payloads with one neutral message.

    Before the function runs, Gradio validates each payload and checks the path
    of a FileData that carries "meta"; what fails there (a path outside its
    folders, a number for a path) would come back as a bare error and a logged
    traceback. Here it is one log line and the same message as any other file
    that was not uploaded."""

    async def preprocess_data(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().preprocess_data(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - every malformed payload gets the same answer
            raise refuse(NOT_UPLOADED, f"payload refused by Gradio ({type(error).__name__})", None) from None


def build_app() -> gr.Blocks:
    with GuardedBlocks(title="jaxkp: facial keypoints", delete_cache=(300, 900)) as app:
        gr.Markdown("# jaxkp\nEvery face gets its 68 keypoints (jaw, brows, nose, eyes, mouth): in a photo, "
                    "live from the webcam, or through a video.")
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(label="Photo", type="filepath", sources=["upload", "webcam"], elem_id="photo")
                    button = gr.Button("Find keypoints", variant="primary", elem_id="run")
                    gr.Examples([[str(path)] for path in example_paths()], inputs=photo)
                with gr.Column():
                    annotated = gr.Image(label="Keypoints", type="filepath", format="jpeg", elem_id="annotated")
                    status = gr.Markdown(elem_id="status")
                    crops = gr.Gallery(label="Faces", columns=4, height="auto", elem_id="crops")
                    aligned = gr.Gallery(label="Aligned faces (FFHQ alignment)", columns=4, height="auto",
                                         elem_id="aligned")
                    aligned_zip = gr.DownloadButton("Download the aligned faces (ZIP)", elem_id="aligned-zip")
                    aligned_state = gr.State(None)
            result = gr.JSON(label="Result (original-image pixels, largest face first)", elem_id="result")
        with gr.Tab("Live webcam"):
            with gr.Row():
                camera = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="filepath",
                                  elem_id="camera")
                live = gr.Image(label="Keypoints, live", type="filepath", format="jpeg", elem_id="live")
            readout = gr.Markdown(elem_id="readout")
            tracker_state = gr.State(None)
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label=f"Video (up to {VIDEO_BUDGET.max_seconds:g} s; MP4, MOV, WebM, MKV, AVI, TS)",
                                    sources=["upload"],
                                    elem_id="clip")
                    track_button = gr.Button("Track faces", variant="primary", elem_id="track")
                with gr.Column():
                    tracked = gr.Video(label="Keypoints", elem_id="tracked")
                    video_status = gr.Markdown(elem_id="video-status")
                    frames_json = gr.File(label="Per-frame JSON", elem_id="frames-json")
        # Raw inputs (preprocess=False): every path goes to read_upload / uploaded_file,
        # which open only files Gradio stored for a client.
        # The aligned faces follow from the session's state (not a client's payload), in
        # an event of their own, so /predict's API keeps its four outputs.
        photo_event = button.click(predict, inputs=photo, outputs=[annotated, crops, result, status, aligned_state],
                                   api_name="predict", concurrency_limit=CONCURRENCY, preprocess=False)
        photo_event.success(show_aligned, inputs=aligned_state, outputs=[aligned, aligned_zip],
                            api_visibility="private")
        camera.stream(live_frame, inputs=[camera, tracker_state], outputs=[live, readout, tracker_state],
                      api_name="live", stream_every=0.04, time_limit=600, concurrency_limit=LIVE_PLACES,
                      preprocess=False, show_progress="hidden")
        track_button.click(video, inputs=clip, outputs=[tracked, frames_json, video_status], api_name="video",
                           concurrency_limit=1, preprocess=False)
    # api_open=False: the REST routes that would run a function outside the queue
    # (/gradio_api/run/..., /gradio_api/api/...) and so past every limit here are closed
    # (Gradio closes them on a Space by itself, not elsewhere).
    app.queue(default_concurrency_limit=CONCURRENCY, api_open=False)
    # Every event waits in the queue: Gradio loads a clicked example outside it
    # (queue=False), and /gradio_api/run/<any name> with that event's fn_index ran it at
    # once, past every line, 184 times a second from 8 threads.
    for fn in app.fns.values():
        if not fn.queue:
            fn.queue = True
            if fn.name == "load_example":
                fn.fn = example_loader(fn.fn)
    EndpointLines.install(app._queue, WAITING, BUSY, on_join=freshen_named_uploads, per_client=PER_CLIENT,
                          client_busy=CLIENT_BUSY)
    return app


limit_stream_idle(STREAM_IDLE_S)
demo = build_app()
UPLOADS.keep_present()  # the examples Gradio copied into its cache while building
UPLOADS.watch()

# Gradio keeps a state (30-60 KB) for every session hash a request brings, refused ones
# too, up to this many (its own default, 10,000, let 17,600 cheap requests hold 600 MB);
# past it the oldest session's state goes (a live stream's tracker starts afresh).
SESSIONS_KEPT = 1_000

# Who a request comes from (each client's share of the places and of the upload room) is
# the address of whoever connects, unless that is a trusted proxy (uvicorn's
# FORWARDED_ALLOW_IPS, by default only this machine): then it is the last address the
# proxy chain appended to X-Forwarded-For that is not itself a trusted proxy. A Space is
# reached only through Hugging Face's proxies, on private addresses (without this every
# visitor would be one client, theirs); an address a client writes into the header
# itself comes before the proxies' and is never used.
SPACE_PROXIES = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,127.0.0.1,::1,fc00::/7"
if os.environ.get("SPACE_ID"):
    os.environ.setdefault("FORWARDED_ALLOW_IPS", SPACE_PROXIES)

if __name__ == "__main__":
    # run_history=False: no run history page, whose routes call the Hub with a client's token.
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size=MAX_VIDEO_UPLOAD_BYTES,
                state_session_capacity=SESSIONS_KEPT, run_history=False,
                app_kwargs={"middleware": [Middleware(BodyLimit, upload_bytes=UPLOAD_REQUEST_MAX_BYTES,
                                                       other_bytes=REQUEST_MAX_BYTES, space=UPLOADS,
                                                       shares=UPLOAD_SHARES, closed=CLOSED_ROUTES,
                                                       files_per_upload=1, uploads_in_flight=UPLOADS_IN_FLIGHT)]})
