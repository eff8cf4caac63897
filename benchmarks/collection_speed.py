"""Images per second of `python -m jaxkp predict --jsonl` with 1 and more worker processes.

    python benchmarks/collection_speed.py ../shared/data/ibug-300w-train/training --count 40 --workers 1 2

Runs the command as a user would, on the first COUNT photos of the folder (sorted),
each worker count REPEAT times, alternating (1 2 2 1 1 2 ..., so a machine whose load
drifts treats them alike), and reports per run: the whole command's wall time
(start-up, loading the pipeline in each process, reading), and the progress bar's own
figure, which starts once every worker has its pipeline (reading only, first
compilations included); then each worker count's best and median run. On a shared
machine the best run is the one least disturbed by others.
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
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    photos = sorted(args.folder.glob("*.jpg"))[: args.count]
    order = [k for i in range(args.repeat) for k in (args.workers if i % 2 == 0 else reversed(args.workers))]
    runs: dict[int, list[tuple[float, float]]] = {k: [] for k in args.workers}
    print(f"{len(photos)} photos from {args.folder}")
    print(f"{'workers':>8}{'wall s':>9}{'images/s (wall)':>17}{'bar s':>8}{'images/s (bar)':>16}")
    for workers in order:
        wall, bar = run_once(photos, workers)
        runs[workers].append((wall, bar))
        print(f"{workers:>8}{wall:>9.1f}{len(photos) / wall:>17.2f}{bar:>8.0f}{len(photos) / max(bar, 1):>16.2f}",
              flush=True)
    for workers, times in runs.items():
        walls, bars = sorted(wall for wall, _ in times), sorted(bar for _, bar in times)
        print(f"{workers} worker(s): best {len(photos) / walls[0]:.2f} images/s whole command, "
              f"{len(photos) / max(bars[0], 1):.2f} reading; median {len(photos) / walls[len(walls) // 2]:.2f} and "
              f"{len(photos) / max(bars[len(bars) // 2], 1):.2f}")


if __name__ == "__main__":
    main()
