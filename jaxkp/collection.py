"""Runs over photo collections: `python -m jaxkp predict ... --jsonl OUT.jsonl`.

One JSON object per line and per photo, in the sorted order of the input list,
written and flushed as each photo is done, so a run holds no results in memory and
a crash loses at most the photo it was reading:

    {"path": "photos/a.jpg", "image": {"width": W, "height": H}, "faces": [...]}
    {"path": "photos/b.jpg", "error": "not an image file in a format read here (JPEG, PNG, ...)"}

`faces` is as in jaxkp.inference (box, score, keypoints, pose). A photo that cannot
be read gets an "error" record and a line on stderr, and the run goes on.

- `--resume` skips the photos OUT.jsonl already holds (errors included: delete their
  lines to try them again), after cutting off a last line that a crash left half
  written.
- `--shard I/N` keeps the I-th (0-based) of N disjoint parts of the sorted input list
  (every N-th photo from the I-th), so N machines, or a scheduler's array of N jobs
  (SLURM job arrays, Kubernetes indexed jobs), each take one part with I from their
  index, and each writes its own OUT.jsonl.
- `--workers K` reads photos in K processes, each loading the pipeline once; the
  parent writes the records, in the same order as one process would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# A pool that breaks this many times without reading a photo in between is not
# meeting one bad photo: the run stops.
MAX_BREAKS_IN_A_ROW = 3
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".heif"}


def expand(inputs: Iterable[Path]) -> list[Path]:
    """Files and the image files under folders (recursively), sorted by path, each once."""
    paths = set()
    for item in inputs:
        if item.is_dir():
            paths.update(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            paths.add(item)
    return sorted(paths, key=str)


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N; ValueError otherwise (argparse shows its message)."""
    index, _, count = text.partition("/")
    try:
        index_value, count_value = int(index), int(count)
    except ValueError:
        raise ValueError(f"{text!r} is not I/N (for example 0/4)") from None
    if count_value < 1 or not 0 <= index_value < count_value:
        raise ValueError(f"{text!r}: need 0 <= I < N")
    return index_value, count_value


def take_shard(paths: list[Path], index: int, count: int) -> list[Path]:
    """The index-th of `count` disjoint parts of the sorted list: every count-th photo
    from the index-th, so each part mixes the collection's folders evenly."""
    return sorted(paths, key=str)[index::count]


def recorded_paths(jsonl: Path) -> set[str]:
    """The paths OUT.jsonl holds records of. A last line without its newline (a crash
    while writing it) is cut off the file, so that appending starts on a fresh line."""
    done: set[str] = set()
    if not jsonl.exists():
        return done
    complete = 0  # bytes up to the end of the last whole line
    with jsonl.open("rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                break
            complete += len(line)
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                print(f"warning: {jsonl}: a line that is not a record, left as it is", file=sys.stderr)
    if complete < jsonl.stat().st_size:
        with jsonl.open("r+b") as file:
            file.truncate(complete)
    return done


@dataclass(frozen=True)
class Settings:
    """What each process needs to read photos: the pipeline's settings, and where annotated copies go."""

    weights: str | None = None
    min_score: float | None = None
    thorough: bool = False
    annotated: Path | None = None
    smallest_face: float | None = None


class PhotoReader:
    """Photo path -> record, with a pipeline loaded once (one per process)."""

    def __init__(self, settings: Settings):
        from jaxkp import load_pipeline

        self.settings = settings
        self.pipeline = load_pipeline(settings.weights, settings.min_score, thorough=settings.thorough,
                                      smallest_face=settings.smallest_face)

    def __call__(self, path: Path) -> dict[str, Any]:
        from jaxkp.inference import ImageError, load_photo

        try:
            # Only an annotated copy needs the colours (at full size, to draw on); the
            # pipeline reads a photo in gray, a JPEG as its luma alone (read_photo).
            rgb = None if self.settings.annotated is None else load_photo(path)
            result = self.pipeline(path if rgb is None else rgb)
        except ImageError as error:
            return {"path": str(path), "error": str(error)}
        except Exception as error:  # one odd file must not end a run over a collection
            return {"path": str(path), "error": f"{type(error).__name__}: {error}"}
        if rgb is not None:
            self.write_annotated(path, rgb, result)
        return {"path": str(path), **result}

    def write_annotated(self, path: Path, rgb: Any, result: dict[str, Any]) -> None:
        import cv2

        from jaxkp.checkpoint import write_atomic
        from jaxkp.draw import annotate

        assert self.settings.annotated is not None
        png = cv2.imencode(".png", cv2.cvtColor(annotate(rgb, result), cv2.COLOR_RGB2BGR))[1]
        write_atomic(self.settings.annotated / (path.stem + ".annotated.png"), png.tobytes())


# The reader of a worker process, made once by its initialiser, or why it could not be.
_WORKER_READER: PhotoReader | None = None
_WORKER_FAILURE: Exception | None = None


def _start_worker(settings: Settings, threads: int) -> None:
    global _WORKER_READER, _WORKER_FAILURE
    import cv2

    # K workers share the machine's cores: thread pools sized for all of them in each
    # worker only fight over them (on 2 cores, 2 workers read at about half the rate
    # with XLA's default pools as with single-threaded ones). XLA reads its flags when
    # JAX starts, which in a spawned worker is after this.
    if threads == 1 and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    cv2.setNumThreads(threads)
    try:
        _WORKER_READER = PhotoReader(settings)
    except Exception as error:  # weights that cannot load: told to the parent with the first task
        _WORKER_FAILURE = error


def _worker_ready() -> int:
    """This worker's process id once its pipeline is loaded (or the reason it could not be)."""
    if _WORKER_READER is None:
        raise _WORKER_FAILURE or RuntimeError("worker started without its pipeline")
    time.sleep(0.05)  # long enough for the other workers to take the round's other calls
    return os.getpid()


def _read_in_worker(path: Path) -> dict[str, Any]:
    if _WORKER_READER is None:
        raise _WORKER_FAILURE or RuntimeError("worker started without its pipeline")
    return _WORKER_READER(path)


def read_in_processes(paths: Iterable[Path], settings: Settings, workers: int,
                      on_lost: Callable[[Path], None] | None = None) -> Iterator[dict[str, Any]]:
    """Records of `paths` read by `workers` spawned processes, in the order of `paths`,
    with at most a few photos per worker started and not yet taken (memory stays
    bounded however long the list). Returns once every worker has its pipeline, so a
    progress bar started then times reading only. A worker that dies (a decoder crash,
    the memory killer) takes the photos in flight with it: each is passed to `on_lost`
    and given no record (a later --resume tries it again), and a fresh pool goes on."""
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    # Spawned, not forked: forking a process that runs JAX's threads can deadlock.
    context = multiprocessing.get_context("spawn")

    def new_pool() -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                   initargs=(settings, threads))
        try:
            ready: set[int] = set()
            for _ in range(4):  # a worker that is ready first may answer twice in a round
                ready.update(future.result() for future in [pool.submit(_worker_ready) for _ in range(workers)])
                if len(ready) >= workers:
                    break
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return pool

    def records(pool: ProcessPoolExecutor) -> Iterator[dict[str, Any]]:
        window = 4 * workers
        breaks = 0  # pools broken since the last photo read
        pending: deque[tuple[Path, Future]] = deque()
        remaining = iter(paths)
        try:
            while True:
                while len(pending) < window:
                    path = next(remaining, None)
                    if path is None:
                        break
                    pending.append((path, pool.submit(_read_in_worker, path)))
                if not pending:
                    return
                path, future = pending.popleft()
                try:
                    record = future.result()
                except BrokenProcessPool:
                    breaks += 1
                    if breaks > MAX_BREAKS_IN_A_ROW:
                        raise RuntimeError(f"worker processes died {breaks} times in a row without reading a "
                                           "photo; out of memory?") from None
                    lost = [path] + [queued for queued, _ in pending]
                    pending.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    for queued in lost:
                        if on_lost is not None:
                            on_lost(queued)
                    pool = new_pool()
                    continue
                breaks = 0
                yield record
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return records(new_pool())


def read_photos(paths: list[Path], settings: Settings, workers: int = 1,
                on_lost: Callable[[Path], None] | None = None) -> Iterator[dict[str, Any]]:
    """A record per photo, in order: in this process for one worker, else in `workers` processes."""
    if workers <= 1:
        reader = PhotoReader(settings)
        return (reader(path) for path in paths)
    return read_in_processes(paths, settings, workers, on_lost)


@dataclass
class Tally:
    images: int = 0
    faces: int = 0
    errors: int = 0
    lost: int = 0


def run(paths: list[Path], settings: Settings, sink: Callable[[dict[str, Any]], None], workers: int = 1,
        log: IO[str] = sys.stderr) -> Tally:
    """Reads every photo, hands each record to `sink` in order, reports unreadable
    photos and faceless ones on their own lines, and shows a progress bar (rate, time left)."""
    from tqdm import tqdm

    tally = Tally()
    if not paths:
        return tally
    lost: list[Path] = []  # photos a dead worker took with it, reported as the run goes on
    # Made before the bar starts, so that loading the pipeline does not count against the rate.
    records = read_photos(paths, settings, workers, lost.append)
    with tqdm(total=len(paths), unit="image", file=log, disable=len(paths) < 2, dynamic_ncols=True) as bar:
        def report_lost() -> None:
            for path in lost:
                tqdm.write(f"lost {path}: its worker process died (no record; --resume tries it again)", file=log)
            tally.lost += len(lost)
            bar.update(len(lost))
            lost.clear()

        for record in records:
            report_lost()
            sink(record)
            if "error" in record:
                tally.errors += 1
                tqdm.write(f"skipped {record['path']}: {record['error']}", file=log)
            else:
                tally.images += 1
                tally.faces += len(record["faces"])
                if not record["faces"]:
                    tqdm.write(f"{record['path']}: no face found", file=log)
            bar.update(1)
        report_lost()
    return tally


def jsonl_writer(file: IO[str]) -> Callable[[dict[str, Any]], None]:
    """A sink that writes each record as one line and flushes it at once."""
    def write(record: dict[str, Any]) -> None:
        file.write(json.dumps(record, separators=(",", ":")) + "\n")
        file.flush()

    return write
