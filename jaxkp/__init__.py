"""jaxkp: 68 facial keypoints on every face in a photo, in JAX.

    import jaxkp
    pipeline = jaxkp.load_pipeline()          # bundled weights, or JAXKP_WEIGHTS
    result = pipeline("photo.jpg")            # {"image": {...}, "faces": [...]}
"""

from __future__ import annotations

from pathlib import Path


def load_pipeline(weights: str | Path | None = None) -> "FaceKeypointPipeline":
    """Detector + network for a weights setting: folder, Hub repo id[@revision], or None for the default."""
    from jaxkp.inference import FaceKeypointPipeline
    from jaxkp.weights import load_model

    return FaceKeypointPipeline.create(load_model(weights))
