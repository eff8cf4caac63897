"""Inference speed on this machine: model time per face, whole requests, cold start.

    python benchmarks/inference_speed.py [--weights checkpoints/reference]

Model time: the jitted forward on a batch of fixed size, per face. Whole
request: photo file -> decode -> detect -> crop -> network -> result dict, for
a 640x480 photo with one face and with five. Cold start: a new Python process
from start to the first answer. Weights: --weights, else JAXKP_WEIGHTS, else
the bundled ones. Medians of repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxkp import load_pipeline  # noqa: E402
from jaxkp.examples import compose_faces  # noqa: E402


def median_ms(function, repeats: int, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="folder or Hub repo id")
    args = parser.parse_args()
    if args.weights:
        os.environ["JAXKP_WEIGHTS"] = args.weights  # for the cold-start process too
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", COLD_START], cwd=ROOT, check=True, capture_output=True)
    cold = time.perf_counter() - start

    pipeline = load_pipeline()
    for size in (1, 8):
        patches = np.random.default_rng(0).integers(0, 255, (size, 224, 224), np.uint8)
        pipeline.model(patches)  # compile
        print(f"model time, batch {size}: {median_ms(pipeline.model, 50, patches) / size:.2f} ms per face")

    with tempfile.TemporaryDirectory() as folder:
        for faces in (1, 5):
            path = Path(folder) / f"{faces}.jpg"
            Image.fromarray(compose_faces(faces)).save(path, quality=92)
            found = len(pipeline(path)["faces"])  # compile this batch size
            print(f"640x480 photo, {found} face(s) found: {median_ms(pipeline, 30, path):.1f} ms per request")
    print(f"cold start (new process to first answer): {cold:.1f} s")


COLD_START = """
from jaxkp import load_pipeline
from jaxkp.examples import example_paths
print(len(load_pipeline()(example_paths()[0])["faces"]))
"""

if __name__ == "__main__":
    main()
