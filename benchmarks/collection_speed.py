"""Images per second of `python -m jaxkp predict --jsonl` with 1 and more worker processes.

    python benchmarks/collection_speed.py ../shared/data/ibug-300w-train/training --count 40 --workers 1 2

Runs the command as a user would, on the first COUNT photos of the folder (sorted),
each worker count twice in the order 1 2 2 1 (so a machine whose load drifts treats
both alike), and reports per run: the whole command's wall time (start-up, loading
the pipeline in each process, reading), and the progress bar's own figure, which
starts once every worker has its pipeline (reading only, first compilations included).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(photos: list[Path], workers: int) -> tuple[float, float]:
    """(wall seconds, progress-bar seconds) of one run."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "jaxkp", "predict", *map(str, photos), "--jsonl", f"{folder}/out.jsonl",
                   "--workers", str(workers)]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        lines = Path(folder, "out.jsonl").read_text().splitlines()
    assert len(lines) == len(photos), done.stderr[-2000:]
    # tqdm's last state, e.g. "40/40 [00:21<00:00,  1.86image/s]"
    minutes, seconds = re.findall(rf"{len(photos)}/{len(photos)} \[(\d+):(\d+)<", done.stderr)[-1]
    return wall, 60 * int(minutes) + int(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    photos = sorted(args.folder.glob("*.jpg"))[: args.count]
    order = list(args.workers) + list(reversed(args.workers))
    print(f"{len(photos)} photos from {args.folder}")
    print(f"{'workers':>8}{'wall s':>9}{'images/s (wall)':>17}{'bar s':>8}{'images/s (bar)':>16}")
    for workers in order:
        wall, bar = run_once(photos, workers)
        print(f"{workers:>8}{wall:>9.1f}{len(photos) / wall:>17.2f}{bar:>8.0f}{len(photos) / max(bar, 1):>16.2f}",
              flush=True)


if __name__ == "__main__":
    main()
