"""Where a photo's time goes in the pipeline, stage by stage, per image set.

    .venv/bin/python benchmarks/pipeline_profile.py \\
        --images ../shared/data/ibug-300w-train ../shared/data/youtube-faces-keypoints --limit 300 \\
        --composites 100 --synthetic 1280x960 1600x1200 --synthetic-count 30 [--json profile.json]

Image sets:
- `--images DIR ...`: a folder in the data layout (`training/` and `training_frames_keypoints.csv`, several rows
  per photo allowed) is read with its labels; any other folder is read as plain images (jpg, jpeg, png, webp,
  bmp, tif, tiff, heic), unlabelled. `--limit N` takes N photos from each, evenly spaced over the sorted names.
- `--composites N`: N 640x480 composites (train.composites, seed `--seed`) of the faces of the labelled folders
  (every face labelled), encoded as JPEG quality 92 in memory.
- `--synthetic WxH ...`: `--synthetic-count` photos of each size from jaxkp.examples.compose_faces, holding 1 to
  `--max-faces` copies of the astronaut's head in turn (unlabelled; "faces placed" says how many), JPEG 92.

Each photo is decoded by the pipeline's own reader (read_photo, timed: "decode"), converted to gray as the
pipeline does (timed apart: "grayscale"), then given to the pipeline as a Photo: `pipeline(photo)` is the
"whole" row (decode excluded; grayscale, face finding, pose and the result dict included; "whole, CPU
time" is the process's CPU time in it, all threads, which a loaded machine inflates less than the wall time).
Its stages are timed inside that one call by wrapping the pipeline's own methods on its instances (load_pipeline()'s
pipeline, pipeline.detector, pipeline.model; see INSTRUMENTED), so the stages add up to the whole:

- detector: the cascade passes (FaceDetector.propose_from, one row per source), the detection copy and the
  boxes' concatenation (propose less its sources: negative when the passes run at once in threads, whose times
  overlap), merge and ordering (the detector less propose);
- gate: the proposal gate's 48-px glance at every merged proposal (jaxkp.gate; ProposalGate.passing: its
  warps and its network call), for weights that have one;
- first read: KeypointModel.read_faces on the proposals the gate passes (how many, in "proposals read"), split into the
  network (readout: padding, the jitted forward, back to NumPy) and the rest (framing matrices, warps to
  224x224, keypoints back to photo pixels);
- judge: the face score's threshold and duplicates, the second look (look_again) and the rescue, each with
  its own network reads;
- pose: head_pose for each face kept (the result dict's pose);
- other: whole less the rows above (grayscale inside the call, the result dict, Python glue).

Medians and means over the set's photos, in milliseconds. On labelled sets, "recall" counts the labelled
faces that get a box of their own (train.find_faces.match, jaxkp.detect.holds), among the proposals and among
the faces kept. Batch shapes are compiled before timing; each set's first three photos warm up untimed. The
load average before and after each set is printed: compare variants side by side in one run, not across runs.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import jaxkp.inference  # noqa: E402
from jaxkp import load_pipeline  # noqa: E402
from jaxkp.examples import compose_faces  # noqa: E402
from jaxkp.inference import FaceKeypointPipeline, read_photo  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
JPEG_QUALITY = 92
WARM_UP_PHOTOS = 3

# The methods timed inside pipeline(photo), per object: the pipeline calls them through its instances
# (self.find_faces, self.detector.propose, self.model.read_faces, ...), so wrapping them on the instance
# times them in place. A method a future pipeline lacks is left out; add new stages here.
INSTRUMENTED = {
    "pipeline": ("find_faces", "judge", "look_again", "rescue"),
    "detector": ("propose", "propose_from"),
    # read_faces reads through readout (keypoints, evidence and the heatmaps' spread); predict is its
    # two-output form for callers outside the pipeline.
    "model": ("read_faces", "readout"),
    "gate": ("passing",),
}


@dataclass
class ProfilePhoto:
    """One photo of a set: its encoded bytes or path, and what is known of its faces."""

    name: str
    source: Path | bytes
    keypoints: np.ndarray | None = None  # (F, 68, 2) every labelled face, or None
    placed: int | None = None  # faces put on a synthetic photo


@dataclass
class ImageSet:
    title: str
    photos: list[ProfilePhoto]


@dataclass
class Recorder:
    """Times of the wrapped methods in one pipeline call, keyed by their call path
    ("find_faces/read_faces/readout"), and how many items each call handled.

    Each thread keeps its own path; a call made in a worker thread (passes run at once) is filed under the
    path of the thread that started the pipeline call. Such calls overlap in time, so their rows can add up
    to more than the row they are under."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    items: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    results: dict[str, Any] = field(default_factory=dict)
    main_thread: int = field(default_factory=threading.get_ident)
    stacks: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        for table in (self.seconds, self.items, self.calls, self.results):
            table.clear()

    def enter(self, label: str) -> tuple[list[str], int]:
        """This thread's call path with `label` added, and the depth to cut it back to on return (a worker
        thread's outermost call starts from the main thread's path and leaves nothing behind)."""
        stack = self.stacks[threading.get_ident()]
        depth = len(stack)
        if not stack and threading.get_ident() != self.main_thread:
            stack.extend(self.stacks[self.main_thread])
        stack.append(label)
        return stack, depth

    def wrap(self, owner: Any, name: str, label: Callable[[tuple[Any, ...]], str]) -> None:
        method = getattr(owner, name)

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack, depth = self.enter(label(args))
            path = "/".join(stack)
            start = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            finally:
                del stack[depth:]
            seconds = time.perf_counter() - start
            with self.lock:
                self.seconds[path] += seconds
                self.calls[path] += 1
                self.items[path] += count_items(name, args, result)
                self.results.setdefault(path, result)
            return result

        setattr(owner, name, timed)


def count_items(name: str, args: tuple[Any, ...], result: Any) -> int:
    """What one call handled: proposals made, faces read, patches through the network."""
    if name in ("propose", "propose_from"):
        return len(result)
    if name == "passing":  # the gate: the merged proposals it was shown
        return len(args[1])
    if name in ("read_faces", "readout"):
        return len(args[1] if name == "read_faces" else args[0])
    return 0


@contextmanager
def instrumented(pipeline: FaceKeypointPipeline) -> Iterator[Recorder]:
    """The pipeline with its stages timed into a Recorder (and head_pose, which the result dict
    calls through jaxkp.inference); everything restored on exit."""
    recorder = Recorder()
    owners = {"pipeline": pipeline, "detector": pipeline.detector, "model": pipeline.model,
              "gate": pipeline.model.gate if pipeline.gated else None}
    source_names = [source.name for source in pipeline.detector.sources]
    wrapped = []
    for owner_name, methods in INSTRUMENTED.items():
        owner = owners[owner_name]
        if owner is None:
            continue
        for method in methods:
            if not hasattr(owner, method):
                continue
            label = ((lambda args: f"propose_from[{source_names[args[0]]}]") if method == "propose_from"
                     else (lambda args, method=method: method))
            recorder.wrap(owner, method, label)
            wrapped.append((owner, method))
    head_pose = jaxkp.inference.head_pose
    recorder.wrap(jaxkp.inference, "head_pose", lambda args: "head_pose")
    try:
        yield recorder
    finally:
        jaxkp.inference.head_pose = head_pose
        for owner, method in wrapped:
            delattr(owner, method)  # the instance attribute goes; the class's method shows again


def rows_of(recorder: Recorder, source_names: list[str], whole: float) -> dict[str, float]:
    """One photo's stage times in seconds (the table's rows), from the recorded call paths."""
    seconds = recorder.seconds

    def total(predicate: Callable[[str], bool]) -> float:
        return sum(value for path, value in seconds.items() if predicate(path))

    find_faces = seconds.get("find_faces", 0.0)
    first_read = seconds.get("find_faces/read_faces", 0.0)
    first_network = seconds.get("find_faces/read_faces/readout", 0.0)
    judge = seconds.get("find_faces/judge", 0.0)
    look_again = total(lambda p: p.endswith("/look_again"))
    rescue = total(lambda p: p.endswith("/rescue"))
    propose = seconds.get("find_faces/propose", 0.0)
    sources = {name: seconds.get(f"find_faces/propose/propose_from[{name}]", 0.0) for name in source_names}
    gate = seconds.get("find_faces/passing", 0.0)
    detector = find_faces - gate - first_read - judge
    pose = seconds.get("head_pose", 0.0)
    rows = {"detector (proposals, merged)": detector}
    rows |= {f"  cascade: {name}": value for name, value in sources.items()}
    rows |= {
        "  detection copy, concatenation": propose - sum(sources.values()),
        "  merge and order": detector - propose,
        "gate (48-px glance at each proposal)": gate,
        "first read (proposals the gate passes)": first_read,
        "  network (readout)": first_network,
        "  framing, warps, back to pixels": first_read - first_network,
        "judge": judge,
        "  second look (look_again)": look_again,
        "  rescue": rescue,
        "  threshold, duplicates, order": judge - look_again - rescue,
        "network, all reads": total(lambda p: p.endswith("/readout")),
        "pose (head_pose)": pose,
        "other (grayscale, result dict)": whole - find_faces - pose,
    }
    return rows


def counts_of(recorder: Recorder) -> dict[str, float]:
    items = recorder.items
    found = recorder.results.get("find_faces")
    return {
        "proposals before merge": items.get("find_faces/propose", 0),
        "proposals merged (shown to the gate)": items.get("find_faces/passing", 0),
        "proposals read (first read)": items.get("find_faces/read_faces", 0),
        "faces read again (second look)": sum(v for p, v in items.items() if p.endswith("look_again/read_faces")),
        "faces read again (rescue)": sum(v for p, v in items.items() if p.endswith("rescue/read_faces")),
        "network calls": sum(v for p, v in recorder.calls.items() if p.endswith("/readout")),
        "faces kept": len(found.faces) if found is not None else 0,
    }


def match_count(boxes: np.ndarray, faces: np.ndarray) -> int:
    from train.find_faces import match  # the project's recall measure (train/ is in the checkout)

    return match(boxes, faces)


def profile_set(pipeline: FaceKeypointPipeline, image_set: ImageSet) -> dict[str, Any]:
    """Per photo: decode, grayscale and the instrumented pipeline call; per set: the summary."""
    source_names = [source.name for source in pipeline.detector.sources]
    load_before = os.getloadavg()
    for photo in image_set.photos[:WARM_UP_PHOTOS]:
        pipeline(read_photo(photo.source))
    records = []
    labelled = proposed = kept = 0
    with instrumented(pipeline) as recorder:
        for photo in image_set.photos:
            start = time.perf_counter()
            decoded = read_photo(photo.source)
            decode = time.perf_counter() - start
            start = time.perf_counter()
            cv2.cvtColor(decoded.rgb, cv2.COLOR_RGB2GRAY)
            grayscale = time.perf_counter() - start
            recorder.clear()
            start, cpu_start = time.perf_counter(), time.process_time()
            pipeline(decoded)
            whole, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            rows = {"decode (read_photo)": decode, "grayscale (cvtColor, timed apart)": grayscale,
                    "whole pipeline(photo)": whole, "whole, CPU time of all threads": cpu}
            rows |= rows_of(recorder, source_names, whole)
            counts = counts_of(recorder)
            if photo.placed is not None:
                counts["faces placed"] = photo.placed
            found = recorder.results.get("find_faces")
            if photo.keypoints is not None and found is not None:
                scale = np.tile(decoded.scale, 2)  # working pixels -> the labels' (original) pixels
                labelled += len(photo.keypoints)
                proposed += match_count(found.proposals.boxes * scale, photo.keypoints)
                kept += match_count(found.faces.boxes * scale, photo.keypoints)
            records.append({"name": photo.name, "size": [decoded.width, decoded.height],
                            "ms": {k: 1000 * v for k, v in rows.items()}, "counts": counts})
    summary = {
        "title": image_set.title, "photos": len(records), "load_before": load_before, "load_after": os.getloadavg(),
        "records": records,
    }
    if labelled:
        summary["recall"] = {"labelled faces": labelled, "proposals": proposed / labelled, "kept": kept / labelled}
    return summary


def describe(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.fmean(values)


def format_summary(summary: dict[str, Any]) -> str:
    records = summary["records"]
    sizes = np.array([record["size"] for record in records])
    megapixels = sizes.prod(axis=1) / 1e6
    load = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(summary["load_before"], summary["load_after"]))
    lines = [f"### {summary['title']}",
             f"{len(records)} photos, {np.median(sizes[:, 0]):.0f}x{np.median(sizes[:, 1]):.0f} px median "
             f"({megapixels.min():.2f} to {megapixels.max():.2f} MP); load average 1/5/15 min before/after: {load}",
             "", "| stage | median ms | mean ms | share of whole (means) |", "| --- | ---: | ---: | ---: |"]
    whole_mean = statistics.fmean(record["ms"]["whole pipeline(photo)"] for record in records)
    for stage in records[0]["ms"]:
        median, mean = describe([record["ms"][stage] for record in records])
        apart = stage.startswith(("decode", "grayscale", "whole,"))
        share = "" if apart else f"{100 * mean / max(whole_mean, 1e-9):.0f} %"
        name = "↳ " + stage.strip() if stage.startswith("  ") else stage
        lines.append(f"| {name} | {median:.2f} | {mean:.2f} | {share} |")
    lines += ["", "| per photo | median | mean | max |", "| --- | ---: | ---: | ---: |"]
    for name in records[0]["counts"]:
        values = [record["counts"][name] for record in records]
        median, mean = describe(values)
        lines.append(f"| {name} | {median:g} | {mean:.2f} | {max(values):g} |")
    if "recall" in summary:
        recall = summary["recall"]
        lines += ["", f"recall of the {recall['labelled faces']} labelled faces: proposals {recall['proposals']:.3f}, "
                      f"faces kept {recall['kept']:.3f}"]
    return "\n".join(lines)


def sample(items: list[Any], limit: int | None) -> list[Any]:
    """`limit` items evenly spaced over `items` (all of them without a limit)."""
    if limit is None or limit >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]


def is_data_layout(folder: Path) -> bool:
    return (folder / "training").is_dir() and (folder / "training_frames_keypoints.csv").is_file()


def labelled_photos(folder: Path) -> dict[str, np.ndarray]:
    """Photo name -> (F, 68, 2) keypoints of every face labelled on it (CSV order)."""
    from train.data import read_keypoints_csv

    names, keypoints = read_keypoints_csv(folder / "training_frames_keypoints.csv")
    faces: dict[str, list[np.ndarray]] = defaultdict(list)
    for name, points in zip(names, keypoints):
        faces[name].append(points)
    return {name: np.stack(points) for name, points in faces.items()}


def folder_set(folder: Path, limit: int | None) -> ImageSet:
    if is_data_layout(folder):
        labels = labelled_photos(folder)
        names = sample(sorted(labels), limit)
        photos = [ProfilePhoto(name, folder / "training" / name, labels[name]) for name in names]
        return ImageSet(f"{folder.name} ({len(photos)} of {len(labels)} photos, labelled)", photos)
    paths = sample(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES), limit)
    if not paths:
        raise SystemExit(f"error: no images in {folder}")
    return ImageSet(f"{folder.name} ({len(paths)} photos)", [ProfilePhoto(p.name, p) for p in paths])


def encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def composite_set(folders: list[Path], count: int, seed: int) -> ImageSet:
    from train import data
    from train.composites import make_composites

    faces = data.Dataset.concatenate([data.load_dataset(folder) for folder in folders])
    composites = make_composites(faces, count, seed)
    photos = [ProfilePhoto(f"composite_{i:04d}", encode_jpeg(c.image), c.keypoints) for i, c in enumerate(composites)]
    names = " + ".join(folder.name for folder in folders)
    return ImageSet(f"composites of {names} faces ({count}, 640x480, seed {seed}, JPEG {JPEG_QUALITY})", photos)


def synthetic_set(size: tuple[int, int], count: int, max_faces: int) -> ImageSet:
    photos = []
    for index in range(count):
        faces = 1 + index % max_faces
        photos.append(ProfilePhoto(f"synthetic_{index:03d}", encode_jpeg(compose_faces(faces, size, seed=index)),
                                placed=faces))
    return ImageSet(f"compose_faces at {size[0]}x{size[1]} ({count} photos, 1 to {max_faces} faces, "
                    f"JPEG {JPEG_QUALITY})", photos)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT") from None


def machine_line() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"commit {commit}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
            f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads; "
            f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, nargs="*", default=[], help="data-layout or plain image folders")
    parser.add_argument("--limit", type=int, help="photos taken from each folder (evenly spaced; default all)")
    parser.add_argument("--composites", type=int, default=0, help="this many composites of the labelled faces")
    parser.add_argument("--composite-faces", type=Path, nargs="*",
                        help="data-layout folders whose faces the composites use (default: the labelled --images)")
    parser.add_argument("--seed", type=int, default=0, help="the composites' seed")
    parser.add_argument("--synthetic", type=parse_size, nargs="*", default=[], metavar="WxH",
                        help="compose_faces photos of these sizes")
    parser.add_argument("--synthetic-count", type=int, default=30, help="photos per synthetic size")
    parser.add_argument("--max-faces", type=int, default=5, help="synthetic photos hold 1 to this many faces")
    parser.add_argument("--weights", help="folder or Hub repo id (default: JAXKP_WEIGHTS, else the bundled)")
    parser.add_argument("--thorough", action="store_true", help="profile the thorough detector")
    parser.add_argument("--smallest-face", type=float, help="load_pipeline's smallest_face (default: its own)")
    parser.add_argument("--json", type=Path, help="write every photo's stage times and counts here")
    args = parser.parse_args(argv)
    if not (args.images or args.composites or args.synthetic):
        parser.error("give --images, --composites or --synthetic")

    sets = [folder_set(folder, args.limit) for folder in args.images]
    if args.composites:
        folders = args.composite_faces or [folder for folder in args.images if is_data_layout(folder)]
        if not folders:
            parser.error("--composites needs labelled faces: a data-layout folder in --images or --composite-faces")
        sets.append(composite_set(folders, args.composites, args.seed))
    sets += [synthetic_set(size, args.synthetic_count, args.max_faces) for size in args.synthetic]

    pipeline = load_pipeline(args.weights, thorough=args.thorough, smallest_face=args.smallest_face)
    pipeline.compile()  # no photo pays for a compile
    python = Path(sys.executable)
    python = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    print(f"# pipeline profile\n\n`{' '.join([str(python), *sys.argv])}`\n\n{machine_line()}; "
          f"sources {', '.join(s.name for s in pipeline.detector.sources)}; threshold {pipeline.threshold:g}, "
          f"second look {'on' if pipeline.looks_twice else 'off'}\n", flush=True)
    summaries = []
    for image_set in sets:
        summary = profile_set(pipeline, image_set)
        summaries.append(summary)
        print(format_summary(summary) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
