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

import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np

from jaxkp import load_pipeline
from jaxkp.draw import annotate, face_crops
from jaxkp.examples import example_paths
from jaxkp.inference import MAX_FACES, ImageError, load_photo

logging.basicConfig(level=logging.INFO, format="%(message)s")

PIPELINE = load_pipeline()
PIPELINE(np.zeros((64, 64, 3), np.uint8))  # compile the one-face path before the first visitor


# Outputs go to Gradio as PNG files: Gradio copies files into its cache atomically,
# whereas arrays are written straight into a content-named file, which concurrent
# requests with the same output were seen to truncate under each other.
OUTPUT_DIR = Path(tempfile.gettempdir()) / "jaxkp-app"
OUTPUT_MAX_AGE_S = 600


def write_png(rgb: np.ndarray) -> str:
    OUTPUT_DIR.mkdir(exist_ok=True)
    path = OUTPUT_DIR / f"{uuid.uuid4().hex}.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def prune_outputs() -> None:
    cutoff = time.time() - OUTPUT_MAX_AGE_S
    for path in OUTPUT_DIR.glob("*.png"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass


def uploaded_path(photo: str | dict | None) -> str | None:
    """The file behind the raw input payload (a path, or Gradio's FileData dict)."""
    if isinstance(photo, dict):
        return photo.get("path")
    return photo


def predict(photo: str | dict | None) -> tuple[str, list[str], dict[str, Any], str]:
    """Faces and keypoints for one photo: (annotated PNG, face crops, result JSON, status)."""
    photo = uploaded_path(photo)
    if not photo:
        raise gr.Error("No photo: upload one or take one with the webcam, then press Find keypoints.")
    try:
        rgb = load_photo(photo)
    except ImageError as error:
        raise gr.Error(f"Cannot use this file: {error}") from None
    result = PIPELINE(rgb, max_faces=MAX_FACES)
    count = len(result["faces"])
    if count == 0:
        status = "No face found. The detector looks for frontal faces; try a larger or better-lit face."
    else:
        status = f"Found {count} face{'s' if count > 1 else ''}" + (
            f" (showing the {MAX_FACES} largest)" if count == MAX_FACES else "") + "."
    prune_outputs()
    crops = [write_png(crop) for crop in face_crops(rgb, result, PIPELINE.model.crop)]
    return write_png(annotate(rgb, result)), crops, result, status


def build_app() -> gr.Blocks:
    with gr.Blocks(title="jaxkp: facial keypoints", delete_cache=(3600, 3600)) as app:
        gr.Markdown("# jaxkp\nUpload a photo or use the webcam: every face gets its 68 keypoints "
                    "(jaw, brows, nose, eyes, mouth).")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(label="Photo", type="filepath", sources=["upload", "webcam"], elem_id="photo")
                button = gr.Button("Find keypoints", variant="primary", elem_id="run")
                gr.Examples([[str(path)] for path in example_paths()], inputs=photo)
            with gr.Column():
                annotated = gr.Image(label="Keypoints", type="filepath", format="png", elem_id="annotated")
                status = gr.Markdown(elem_id="status")
                crops = gr.Gallery(label="Faces", columns=4, height="auto", elem_id="crops")
        result = gr.JSON(label="Result (original-image pixels, largest face first)", elem_id="result")
        button.click(predict, inputs=photo, outputs=[annotated, crops, result, status], api_name="predict",
                     concurrency_limit=2,
                     # Raw input: every file reaches load_photo, which names what is wrong with it.
                     preprocess=False)
    return app


demo = build_app()

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size="25mb")
