"""A collection's photo read the way `jaxkp predict` read it before (RGB at full size, then the pipeline) and the
way it reads it now (the pipeline on the path: a JPEG decoded as its luma alone), in alternation, on JPEGs of
several sizes; and the two decodes alone.

    python benchmarks/gray_decode.py --sizes 1600x1200 4000x3000 --count 6 --rounds 4

The photos are `jaxkp.examples.compose_faces` photos of 1 to 3 faces, written as JPEG 90 to a scratch folder
(or give `--photos FILE ...` of your own). Prints the median per photo of each way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from jaxkp import load_pipeline
from jaxkp.examples import compose_faces
from jaxkp.inference import load_photo, read_photo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gray_decode.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1600x1200", "4000x3000"])
    parser.add_argument("--count", type=int, default=6, help="photos per size")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--photos", type=Path, nargs="+", help="your own photos instead (one set)")
    args = parser.parse_args(argv)
    pipeline = load_pipeline()
    ways = {
        "RGB at full size, then the pipeline (before)": lambda path: pipeline(load_photo(path)),
        "the pipeline on the path, luma decode (now)": lambda path: pipeline(path),
        "decode only: RGB at full size": load_photo,
        "decode only: luma at the working size": lambda path: read_photo(path, gray=True),
    }
    with tempfile.TemporaryDirectory() as folder:
        sets: dict[str, list[Path]] = {}
        if args.photos:
            sets["your photos"] = args.photos
        else:
            for size in args.sizes:
                width, height = map(int, size.split("x"))
                sets[size] = []
                for index in range(args.count):
                    path = Path(folder, f"{size}_{index}.jpg")
                    Image.fromarray(compose_faces(1 + index % 3, (width, height), seed=index)).save(path, quality=90)
                    sets[size].append(path)
        for title, paths in sets.items():
            for way in ways.values():  # compiled, and the files in the page cache
                way(paths[0])
            times: dict[str, list[float]] = {name: [] for name in ways}
            for round_index in range(args.rounds):
                for path in paths:
                    for name, way in list(ways.items())[:: 1 if round_index % 2 else -1]:
                        started = time.perf_counter()
                        way(path)
                        times[name].append(time.perf_counter() - started)
            print(f"{title} ({len(paths)} photos x {args.rounds}): " + "; ".join(
                f"{name} {1000 * statistics.median(values):.0f} ms" for name, values in times.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
