"""What a fresh process pays before its first answer, for one or two checkouts side by side.

    git worktree add /tmp/jaxkp-before <previous commit>
    .venv/bin/python benchmarks/startup.py --before /tmp/jaxkp-before --rounds 5 [--photo PHOTO]

Each round runs, in each checkout (the order alternating, so a machine whose load drifts treats both alike),
a fresh Python process that times its phases: importing jaxkp, `load_pipeline()` (weights read and the
network built), the first photo (the network compiled for its batch sizes) and a second read of the same photo;
then the whole `python -m jaxkp predict PHOTO --json OUT` command, as a user runs it, by its wall time. The
photo defaults to `jaxkp.examples.compose_faces(3)` (640x480, three faces), written as a JPEG. Prints each
round, then each checkout's medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

PHASES = """
import json, sys, time
started = time.perf_counter()
from jaxkp import load_pipeline
imported = time.perf_counter()
pipeline = load_pipeline()
loaded = time.perf_counter()
pipeline(sys.argv[1])
first = time.perf_counter()
result = pipeline(sys.argv[1])
second = time.perf_counter()
print(json.dumps({"import jaxkp": imported - started, "load_pipeline()": loaded - imported,
                  "first photo": first - loaded, "second photo": second - first, "faces": len(result["faces"])}))
"""


def time_phases(checkout: Path, photo: Path) -> dict[str, float]:
    python = os.environ.get("STARTUP_PYTHON", sys.executable)
    done = subprocess.run([python, "-c", PHASES, str(photo)], cwd=checkout, check=True, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    return json.loads(done.stdout.splitlines()[-1])


def time_command(checkout: Path, photo: Path, scratch: Path) -> float:
    python = os.environ.get("STARTUP_PYTHON", sys.executable)
    started = time.perf_counter()
    subprocess.run([python, "-m", "jaxkp", "predict", str(photo), "--json", str(scratch / "out.json")],
                   cwd=checkout, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/startup.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout of the earlier commit (optional)")
    parser.add_argument("--after", type=Path, default=HERE, help="the later checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photo", type=Path, help="default: three faces at 640x480, as a JPEG")
    args = parser.parse_args(argv)
    checkouts = {"after": args.after.resolve()} if args.before is None else \
        {"before": args.before.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        photo = args.photo.resolve() if args.photo else scratch / "three.jpg"
        if args.photo is None:
            import cv2

            from jaxkp.examples import compose_faces

            cv2.imwrite(str(photo), cv2.cvtColor(compose_faces(3), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        print(f"photo {photo.name}; load average {os.getloadavg()[0]:.1f}")
        for round_index in range(args.rounds):
            names = list(checkouts) if round_index % 2 == 0 else list(reversed(checkouts))
            for name in names:
                figures = time_phases(checkouts[name], photo)
                figures["python -m jaxkp predict (wall)"] = time_command(checkouts[name], photo, scratch)
                runs[name].append(figures)
                print(f"round {round_index + 1} {name:>6}: " + ", ".join(
                    f"{key} {value:.2f} s" if key != "faces" else f"{value:.0f} faces" for key, value in
                    figures.items()), flush=True)
    print(f"medians over {args.rounds} rounds, seconds; load average {os.getloadavg()[0]:.1f} at the end")
    keys = [key for key in runs[next(iter(runs))][0] if key != "faces"]
    print("| phase | " + " | ".join(checkouts) + " |")
    print("| --- | " + " | ".join("---" for _ in checkouts) + " |")
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{statistics.median(r[key] for r in runs[name]):.2f}"
                                         for name in checkouts) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
