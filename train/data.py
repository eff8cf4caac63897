"""The training input pipeline: data sets in the YouTube-Faces keypoint layout,
augmentation, batches, and the worker pools that make them. Serving never needs it
(nothing in jaxkp/ imports train/).

A data folder holds `<split>/` (images) and `<split>_frames_keypoints.csv`
(a header row, then `name, x0, y0, ..., x67, y67` in image pixels). Every
image is decoded once, to grayscale uint8, when the dataset is loaded.

All geometry goes through one 2x3 affine matrix per example that maps
original-image pixels to network-input pixels (jaxkp.geometry builds them);
the same matrix warps the image and the keypoints, and its inverse maps
predictions back.
"""

from __future__ import annotations

import csv
import multiprocessing
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxkp.geometry import (
    DETECTOR_BOX_MEDIAN,
    DETECTOR_BOX_STD,
    FLIP_INPUT,
    MIRROR,
    Region,
    apply_affine,
    box_framing_matrix,
    detector_framing_matrix,
    full_image_matrix,
    normalize_keypoints,
    random_crop_matrix,
    rotation_about_input_centre,
    warp_to_input,
)
from jaxkp.model import INPUT_SIZE, NUM_KEYPOINTS


class DataError(ValueError):
    """Bad data on disk; the message names the file or CSV row."""


@dataclass
class Dataset:
    """Decoded images (grayscale uint8, each its own size) and their keypoints."""

    names: list[str]
    images: list[np.ndarray]
    keypoints: np.ndarray  # (N, 68, 2) float32, original-image pixels
    # (N, 4) Haar boxes x, y, w, h (NaN where none was found), when a recipe frames by them.
    face_boxes: np.ndarray | None = None
    # (N,) index of the data set (the recipe's `datasets` order) each example came from;
    # None: all from one.
    sources: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def source_ids(self) -> np.ndarray:
        return np.zeros(len(self), np.int32) if self.sources is None else self.sources

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(
            [self.names[i] for i in indices],
            [self.images[i] for i in indices],
            self.keypoints[indices],
            None if self.face_boxes is None else self.face_boxes[indices],
            None if self.sources is None else self.sources[indices],
        )

    @staticmethod
    def concatenate(parts: list[Dataset]) -> Dataset:
        """One dataset from several, each example tagged with its part's index in `sources`."""
        boxes = [part.face_boxes for part in parts]
        return Dataset(
            [name for part in parts for name in part.names],
            [image for part in parts for image in part.images],
            np.concatenate([part.keypoints for part in parts]),
            None if any(b is None for b in boxes) else np.concatenate(boxes),
            np.concatenate([np.full(len(part), index, np.int32) for index, part in enumerate(parts)]),
        )


def read_keypoints_csv(csv_path: Path) -> tuple[list[str], np.ndarray]:
    """Reads names and (N, 68, 2) keypoints, naming the row of any bad value.

    Row numbers count the header as row 1, as a spreadsheet shows them.
    """
    expected = 1 + 2 * NUM_KEYPOINTS
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise DataError(f"keypoints file not found: {csv_path}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{csv_path}: cannot parse as CSV ({error})") from None
    names, values = [], np.empty((max(len(rows) - 1, 0), 2 * NUM_KEYPOINTS))
    for index, row in enumerate(rows[1:]):
        line = index + 2
        if not row:
            raise DataError(f"{csv_path}: row {line} is empty")
        if len(row) != expected:
            raise DataError(f"{csv_path}: row {line} has {len(row)} columns, "
                            f"expected {expected} (name + 136 coordinates)")
        if not row[0].strip():
            raise DataError(f"{csv_path}: row {line} has an empty image name")
        for column, text in enumerate(row[1:]):
            try:
                values[index, column] = float(text)
            except ValueError:
                values[index, column] = np.nan
            if not np.isfinite(values[index, column]):
                raise DataError(
                    f"{csv_path}: row {line} ({row[0]}): coordinate {column} is {text!r}, not a finite number"
                )
        names.append(row[0].strip())
    if not names:
        raise DataError(f"{csv_path} holds no rows after the header")
    return names, values.reshape(-1, NUM_KEYPOINTS, 2).astype(np.float32)


def read_gray(path: Path) -> np.ndarray:
    """Decodes any image OpenCV reads (PNG named .jpg too) to grayscale uint8."""
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        raise DataError(f"cannot decode image: {path}")
    return image


def load_dataset(data_dir: Path | str, split: str = "training", limit: int | None = None) -> Dataset:
    """Loads `<data_dir>/<split>/` and `<data_dir>/<split>_frames_keypoints.csv`."""
    data_dir = Path(data_dir)
    names, keypoints = read_keypoints_csv(data_dir / f"{split}_frames_keypoints.csv")
    if limit is not None:
        names, keypoints = names[:limit], keypoints[:limit]
    images = [read_gray(data_dir / split / name) for name in names]
    return Dataset(names, images, keypoints)


def person_of(name: str) -> str:
    """`Luis_Fonsi_21.jpg` -> `Luis_Fonsi`: the name before the last underscore."""
    return Path(name).stem.rsplit("_", 1)[0]


# How a data set's validation split is held out: by person (video frames, several
# per person, named `<First_Last>_<frame>`) or by photo (each photo its own person).
HOLDOUTS = {"person": person_of, "photo": lambda name: Path(name).stem}


def split_by_person(names: list[str], val_fraction: float, seed: int, holdout: str = "person"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val) such that no person (as `holdout` names them) appears in both."""
    if holdout not in HOLDOUTS:
        raise ValueError(f"unknown holdout {holdout!r}; choose one of {sorted(HOLDOUTS)}")
    identity = HOLDOUTS[holdout]
    people = sorted({identity(name) for name in names})
    rng = np.random.default_rng(seed)
    num_val = max(1, round(val_fraction * len(people))) if val_fraction > 0 else 0
    val_people = set(rng.permutation(people)[:num_val].tolist())
    is_val = np.array([identity(name) in val_people for name in names])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --- augmentation (the improved recipe) ------------------------------------------

# A horizontally flipped face's point i is the original's point FLIP_PERMUTATION[i]
# (the 68-point scheme's mirror map, one home: jaxkp.geometry).
FLIP_PERMUTATION = MIRROR

@dataclass(frozen=True)
class Augmentation:
    """Geometric and photometric jitter; all geometry lands in one affine matrix."""

    flip: bool = False
    max_rotation_degrees: float = 0.0
    framing_jitter: float = 0.0  # in units of the measured spread of detector boxes
    brightness: float = 0.0  # +- fraction of the range
    contrast: float = 0.0  # +- fraction
    # Real-photo degradations, each applied with this probability: Gaussian blur
    # (sigma up to 2 input pixels), JPEG re-encoding (quality 20..90), and a random
    # occluding patch (up to 40% of the side, flat or noise) as hands and glasses do.
    blur: float = 0.0
    jpeg: float = 0.0
    occlusion: float = 0.0


def face_framing_matrix(dataset: Dataset, index: int, crop: Region | None,
                        jitter: np.ndarray | None = None) -> np.ndarray:
    """Frames example `index` by its Haar box when the dataset has one, else by a box
    placed on its keypoints as the detector places it. `jitter` (4 numbers, in units
    of DETECTOR_BOX_STD) moves and scales the box."""
    jitter = np.zeros(4) if jitter is None else jitter
    box = None if dataset.face_boxes is None else dataset.face_boxes[index]
    if box is None or not np.isfinite(box).all():
        return detector_framing_matrix(dataset.keypoints[index], DETECTOR_BOX_MEDIAN + jitter * DETECTOR_BOX_STD, crop)
    # The spread is in units of the keypoints' box, about 1/1.18 of the Haar box.
    shift = jitter * DETECTOR_BOX_STD / DETECTOR_BOX_MEDIAN[2:].mean()
    x, y, w, h = box
    side = w * np.sqrt((1 + shift[2]) * (1 + shift[3]))
    return box_framing_matrix(np.array([x + shift[0] * w, y + shift[1] * h, side, side]), crop)


def augmented_matrix(dataset: Dataset, index: int, rng: np.random.Generator, augmentation: Augmentation,
                     crop: Region | None = None) -> tuple[np.ndarray, bool]:
    """Detector-style framing with jitter, then rotation and flip; returns (matrix, flipped)."""
    jitter = augmentation.framing_jitter * np.clip(rng.normal(size=4), -2, 2)
    matrix = np.vstack([face_framing_matrix(dataset, index, crop, jitter), [0, 0, 1]])
    if augmentation.max_rotation_degrees:
        angle = rng.uniform(-augmentation.max_rotation_degrees, augmentation.max_rotation_degrees)
        matrix = rotation_about_input_centre(angle) @ matrix
    flipped = bool(augmentation.flip and rng.random() < 0.5)
    if flipped:
        matrix = FLIP_INPUT @ matrix
    return matrix[:2], flipped


def target_keypoints(points: np.ndarray, matrix: np.ndarray, flipped: bool) -> np.ndarray:
    """Normalised keypoints as the network must predict them for this transform."""
    mapped = normalize_keypoints(apply_affine(matrix, points))
    return mapped[FLIP_PERMUTATION] if flipped else mapped


def jitter_photometric(patch: np.ndarray, rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray:
    if not (augmentation.brightness or augmentation.contrast):
        return patch
    contrast = 1 + rng.uniform(-augmentation.contrast, augmentation.contrast)
    brightness = 255 * rng.uniform(-augmentation.brightness, augmentation.brightness)
    mean = patch.mean()
    return np.clip((patch - mean) * contrast + mean + brightness, 0, 255).astype(np.uint8)


def degrade(patch: np.ndarray, rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray:
    """Blur, JPEG artefacts and occlusion, each with its probability; keypoints do not move."""
    if augmentation.blur and rng.random() < augmentation.blur:
        patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.5, 2.0))
    if augmentation.jpeg and rng.random() < augmentation.jpeg:
        quality = int(rng.integers(20, 91))
        patch = cv2.imdecode(cv2.imencode(".jpg", patch, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)
    if augmentation.occlusion and rng.random() < augmentation.occlusion:
        height, width = (rng.uniform(0.1, 0.4, size=2) * INPUT_SIZE).astype(int)
        top, left = rng.integers(0, INPUT_SIZE - height), rng.integers(0, INPUT_SIZE - width)
        patch = patch.copy()
        if rng.random() < 0.5:
            patch[top : top + height, left : left + width] = rng.integers(0, 256)
        else:
            patch[top : top + height, left : left + width] = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return patch


def augmented_example(dataset: Dataset, index: int, rng: np.random.Generator, augmentation: Augmentation,
                      crop: Region | None = None) -> Example:
    """Example `index` under detector-style framing and `augmentation`."""
    matrix, flipped = augmented_matrix(dataset, index, rng, augmentation, crop)
    patch = jitter_photometric(warp_to_input(dataset.images[index], matrix), rng, augmentation)
    return Example(degrade(patch, rng, augmentation), target_keypoints(dataset.keypoints[index], matrix, flipped),
                   matrix, int(dataset.source_ids()[index]), flipped)


def augmented_batches(
    dataset: Dataset, batch_size: int, rng: np.random.Generator, augmentation: Augmentation,
    crop: Region | None = None, **sharding: Any,
) -> Iterator[Batch]:
    """One epoch of shuffled batches under detector-style framing and `augmentation`
    (`sharding`: shuffled_batches' shard, workers and indices)."""
    return shuffled_batches(dataset, batch_size, rng, partial(augmented_example, augmentation=augmentation, crop=crop),
                            **sharding)


# --- batches ------------------------------------------------------------------


@dataclass
class Batch:
    images: np.ndarray  # (B, 224, 224, 1) uint8
    keypoints: np.ndarray  # (B, 68, 2) float32 in [-1, 1]
    matrices: np.ndarray  # (B, 2, 3) original -> input pixels
    sources: np.ndarray  # (B,) int32 data set of each example (its mark-up convention)
    # (B,) bool: shown mirrored (its mark-up's offsets mirror too); None for unaugmented batches.
    flipped: np.ndarray | None = None

    @staticmethod
    def concatenate(parts: list[Batch]) -> Batch:
        """One batch of `parts`' examples, in order (all augmented, or none)."""
        flipped = None if parts[0].flipped is None else np.concatenate([part.flipped for part in parts])
        return Batch(np.concatenate([part.images for part in parts]),
                     np.concatenate([part.keypoints for part in parts]),
                     np.concatenate([part.matrices for part in parts]),
                     np.concatenate([part.sources for part in parts]),
                     flipped)


@dataclass
class Example:
    image: np.ndarray  # (224, 224) uint8
    keypoints: np.ndarray  # (68, 2) in [-1, 1]
    matrix: np.ndarray  # (2, 3) original -> input pixels
    source: int
    flipped: bool = False


def make_batch(dataset: Dataset, indices: np.ndarray, matrices: list[np.ndarray]) -> Batch:
    images = np.stack([warp_to_input(dataset.images[i], m) for i, m in zip(indices, matrices)])
    keypoints = np.stack(
        [normalize_keypoints(apply_affine(m, dataset.keypoints[i])) for i, m in zip(indices, matrices)]
    )
    return Batch(images[..., None], keypoints.astype(np.float32), np.stack(matrices), dataset.source_ids()[indices])


EXAMPLES_PER_TASK = 8
# A task: the examples to make, as (index in the dataset, seed of its generator).
Task = list[tuple[int, int]]


def make_examples(make_example: Callable[[Dataset, int, np.random.Generator], Example], dataset: Dataset,
                  task: Task) -> Batch:
    """A task's examples, stacked: a worker process sends a few buffers, not a pickled
    object per example."""
    made = [make_example(dataset, index, np.random.default_rng(seed)) for index, seed in task]
    return Batch(np.stack([e.image for e in made])[..., None], np.stack([e.keypoints for e in made]).astype(np.float32),
                 np.stack([e.matrix for e in made]), np.array([e.source for e in made], np.int32),
                 np.array([e.flipped for e in made]))


def in_order(submit: Callable[[Task], Callable[[], Batch]], tasks: Iterator[Task], window: int
             ) -> Iterator[Batch]:
    """Results of `tasks` in order (`submit` starts one and returns what waits for its
    result), with at most `window` started and not yet taken: the workers run ahead of
    the consumer (the next batch is made while this one trains) without making a whole
    epoch in memory."""
    pending: deque[Callable[[], Batch]] = deque()
    for task in tasks:
        pending.append(submit(task))
        if len(pending) >= window:
            yield pending.popleft()()
    while pending:
        yield pending.popleft()()


class ThreadWorkers:
    """Examples made on threads of this process (OpenCV's warps release the GIL, Python's
    per-example work does not: two threads barely beat one on augmented recipes)."""

    def __init__(self, count: int):
        self.pool = ThreadPoolExecutor(count)
        self.window = 4 * count

    def run(self, make_example: Callable, dataset: Dataset, tasks: Iterator[Task]) -> Iterator[Batch]:
        return in_order(lambda task: self.pool.submit(make_examples, make_example, dataset, task).result, tasks,
                        self.window)

    def close(self) -> None:
        self.pool.shutdown()


# A worker process's view of the shared dataset, and the block its images live in.
_WORKER_DATASET: Dataset | None = None
_WORKER_MEMORY: shared_memory.SharedMemory | None = None


def _attach(memory_name: str, shapes: list[tuple[int, int]], offsets: list[int], names: list[str],
            keypoints: np.ndarray, face_boxes: np.ndarray | None, sources: np.ndarray | None) -> None:
    """Worker initialiser: the dataset, its images read in place from the shared memory."""
    global _WORKER_DATASET, _WORKER_MEMORY
    # Spawned workers share the parent's resource tracker, so attaching registers
    # nothing new; the parent unlinks the block when it closes the workers.
    _WORKER_MEMORY = shared_memory.SharedMemory(name=memory_name)
    images = [np.ndarray(shape, np.uint8, buffer=_WORKER_MEMORY.buf, offset=offset)
              for shape, offset in zip(shapes, offsets)]
    _WORKER_DATASET = Dataset(names, images, keypoints, face_boxes, sources)


def _make_in_worker(make_example: Callable, task: Task) -> Batch:
    assert _WORKER_DATASET is not None, "worker started without its dataset"
    return make_examples(make_example, _WORKER_DATASET, task)


class ProcessWorkers:
    """Examples made by worker processes, which scale with cores where threads do not.

    The dataset's images are copied once into one block of shared memory that every
    worker maps (no copy per worker, none per task); a task carries only indices and
    seeds, and a task's examples come back as a few stacked arrays. Workers are
    spawned, not forked (forking a process that runs JAX's threads can deadlock),
    so, as with any spawning pool, a script that makes them must guard its entry
    point with `if __name__ == "__main__":`.
    """

    def __init__(self, dataset: Dataset, count: int):
        self.dataset = dataset
        sizes = [image.size for image in dataset.images]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        self.memory = shared_memory.SharedMemory(create=True, size=max(1, int(sum(sizes))))
        for image, offset in zip(dataset.images, offsets):
            np.ndarray(image.shape, np.uint8, buffer=self.memory.buf, offset=offset)[:] = image
        self.window = 4 * count
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(count, initializer=_attach, initargs=(
            self.memory.name, [image.shape for image in dataset.images], offsets, dataset.names,
            dataset.keypoints, dataset.face_boxes, dataset.sources))

    def run(self, make_example: Callable, dataset: Dataset, tasks: Iterator[Task]) -> Iterator[Batch]:
        if dataset is not self.dataset:
            raise ValueError("process workers hold one dataset; pass it, and choose examples by `indices`")
        return in_order(lambda task: self.pool.apply_async(_make_in_worker, (make_example, task)).get, tasks,
                        self.window)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
        self.memory.close()
        self.memory.unlink()


Workers = ThreadWorkers | ProcessWorkers


def input_workers(dataset: Dataset, count: int, kind: str = "process") -> Workers | None:
    """`count` workers of `kind` ("process" or "thread") for `dataset`; None (make examples
    in the calling thread) for a count of 1 or less."""
    if count <= 1:
        return None
    if kind not in ("process", "thread"):
        raise ValueError(f"unknown worker kind {kind!r}; choose process or thread")
    return ProcessWorkers(dataset, count) if kind == "process" else ThreadWorkers(count)


def shuffled_batches(
    dataset: Dataset, batch_size: int, rng: np.random.Generator,
    make_example: Callable[[Dataset, int, np.random.Generator], Example],
    shard: tuple[int, int] = (0, 1), workers: Workers | None = None, indices: np.ndarray | None = None,
) -> Iterator[Batch]:
    """One epoch of shuffled global batches of `batch_size`, the last partial one dropped.

    `indices`: the examples of the epoch (an example may repeat); default every one.
    Yields only shard (index, count)'s rows of each global batch, so each process
    makes only its share. Every example has its own generator, seeded from `rng`
    by its place in the epoch, so the data are the same whatever the number of
    processes, or of `workers` (threads or processes) that make the examples.
    """
    shard_index, shard_count = shard
    if batch_size % shard_count:
        raise ValueError(f"batch size {batch_size} does not split into {shard_count} shards")
    local = batch_size // shard_count
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    order = indices[rng.permutation(len(indices))]
    seeds = rng.integers(0, 2**63, size=len(order))

    starts = range(0, len(order) - batch_size + 1, batch_size)
    # Workers take chunks of examples: one task per example costs more than it gains.
    batch_tasks = [[[(int(order[p]), int(seeds[p]))
                     for p in range(chunk, min(chunk + EXAMPLES_PER_TASK, first + local))]
                    for chunk in range(first, first + local, EXAMPLES_PER_TASK)]
                   for first in (start + shard_index * local for start in starts)]
    tasks = (task for tasks in batch_tasks for task in tasks)
    made = workers.run(make_example, dataset, tasks) if workers else (
        make_examples(make_example, dataset, task) for task in tasks)
    for tasks_of_batch in batch_tasks:
        yield Batch.concatenate([next(made) for _ in tasks_of_batch])


def cropped_example(dataset: Dataset, index: int, rng: np.random.Generator, crop_min_fraction: float) -> Example:
    """The reference recipe's example: a random crop of the whole image, rescaled."""
    matrix = random_crop_matrix(dataset.images[index], rng, crop_min_fraction)
    return Example(warp_to_input(dataset.images[index], matrix),
                   normalize_keypoints(apply_affine(matrix, dataset.keypoints[index])), matrix,
                   int(dataset.source_ids()[index]))


def train_batches(
    dataset: Dataset, batch_size: int, rng: np.random.Generator, crop_min_fraction: float, **sharding: Any,
) -> Iterator[Batch]:
    """One epoch of shuffled, randomly cropped batches; the last partial batch is dropped
    (`sharding`: shuffled_batches' shard, workers and indices)."""
    return shuffled_batches(dataset, batch_size, rng, partial(cropped_example, crop_min_fraction=crop_min_fraction),
                            **sharding)


def eval_batches(dataset: Dataset, batch_size: int, framing: str = "whole-image",
                 crop: Region | None = None) -> Iterator[tuple[Batch, int]]:
    """Deterministic batches in order; the last is padded by repeating, with its real size.

    `framing` (jaxkp.geometry.FRAMINGS): "whole-image" shows each image whole; the
    box framings frame the face by its Haar box (`dataset.face_boxes`) where it has
    one, else as the median Haar box around its keypoints would.
    """
    for start in range(0, len(dataset), batch_size):
        indices = np.arange(start, min(start + batch_size, len(dataset)))
        valid = len(indices)
        indices = np.pad(indices, (0, batch_size - valid), mode="edge")
        if framing == "whole-image":
            matrices = [full_image_matrix(dataset.images[i]) for i in indices]
        else:
            matrices = [face_framing_matrix(dataset, i, crop) for i in indices]
        yield make_batch(dataset, indices, matrices), valid


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs a batch iterator in a background thread (OpenCV releases the GIL)."""
    items: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def worker() -> None:
        try:
            for item in iterator:
                items.put(item)
        except BaseException as error:  # re-raised in the consumer
            items.put(error)
        items.put(done)

    threading.Thread(target=worker, daemon=True).start()
    while (item := items.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
