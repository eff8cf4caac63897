"""jaxkp: 68 facial keypoints on every face in a photo, in JAX.

    import jaxkp
    pipeline = jaxkp.load_pipeline()          # bundled weights, or JAXKP_WEIGHTS
    result = pipeline("photo.jpg")            # {"image": {...}, "faces": [...]}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when called: `import jaxkp` stays light
    from jaxkp.inference import FaceKeypointPipeline


def load_pipeline(weights: str | Path | None = None, min_score: float | None = None,
                  thorough: bool = False, smallest_face: float | None = None) -> FaceKeypointPipeline:
    """Detector + network for a weights setting: folder, Hub repo id[@revision], or None for
    the default. Faces the network scores under `min_score` are left out (None: the
    weights' default threshold, or JAXKP_MIN_SCORE when set). `thorough` runs every face
    proposal source (jaxkp.detect.THOROUGH_SOURCES) instead of the fast default ones, reads
    every proposal in full (no jaxkp.gate) and reads each face with its mirror image too
    (KeypointModel.flip_average). `smallest_face`: faces narrower than this share of the
    photo's shorter side are not looked for (None: jaxkp.detect.SMALLEST_FACE, a twentieth);
    0.1 suits portraits and small groups (face finding a quarter to two fifths cheaper)."""
    import os

    from jaxkp.detect import DEFAULT_SOURCES, SMALLEST_FACE, THOROUGH_SOURCES, FaceDetector
    from jaxkp.inference import FaceKeypointPipeline
    from jaxkp.weights import load_model

    if min_score is None and os.environ.get("JAXKP_MIN_SCORE"):
        min_score = float(os.environ["JAXKP_MIN_SCORE"])
    detector = FaceDetector(THOROUGH_SOURCES if thorough else DEFAULT_SOURCES,
                            smallest_face=SMALLEST_FACE if smallest_face is None else smallest_face)
    model = load_model(weights)
    model.flip_average = thorough
    return FaceKeypointPipeline(model, detector, min_score, gated=not thorough)
