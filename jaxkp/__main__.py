"""`python -m jaxkp predict IMAGE_OR_FOLDER... [--json OUT.json | --jsonl OUT.jsonl] [--out DIR]`,
`python -m jaxkp align IMAGE_OR_FOLDER... --out DIR [--size 256] [--template ffhq|arcface]`
and `python -m jaxkp video IN [--out OUT.mp4] [--json OUT.json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def predict(args: argparse.Namespace) -> int:
    from jaxkp.checkpoint import WeightsError, write_atomic
    from jaxkp.collection import Settings, expand, jsonl_writer, recorded_paths, run, take_shard

    paths = expand(args.inputs)
    if not paths:
        print("error: no images found in " + ", ".join(map(str, args.inputs)), file=sys.stderr)
        return 1
    if args.shard:
        paths = take_shard(paths, *args.shard)
    if args.jsonl and args.jsonl.exists() and args.jsonl.stat().st_size and not args.resume:
        print(f"error: {args.jsonl} exists; pass --resume to go on with it, or remove it", file=sys.stderr)
        return 1
    if args.resume:
        done = recorded_paths(args.jsonl)
        before = len(paths)
        paths = [path for path in paths if str(path) not in done]
        print(f"{before - len(paths)} image(s) already in {args.jsonl}, {len(paths)} to go", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.weights, args.min_score, args.thorough, args.out, args.smallest_face)
    try:
        if args.jsonl:
            with args.jsonl.open("a", encoding="utf-8") as file:
                tally = run(paths, settings, jsonl_writer(file), args.workers)
            print(f"{tally.images} image(s), {tally.faces} face(s) -> {args.jsonl}"
                  + (f"; {tally.errors} unreadable" if tally.errors else "")
                  + (f"; {tally.lost} lost with a worker" if tally.lost else ""))
            return 1 if tally.errors + tally.lost and not tally.images else 0
        records: list[dict] = []
        tally = run(paths, settings, lambda record: records.append(record) if "error" not in record else None,
                    args.workers)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = json.dumps(records, indent=None if args.json else 2)
    if args.json:
        write_atomic(args.json, (text + "\n").encode())
        print(f"{len(records)} image(s), {tally.faces} face(s) -> {args.json}")
    else:
        print(text)
    return 1 if tally.errors + tally.lost and not records else 0


def align(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxkp import load_pipeline
    from jaxkp.align import align_face, crop_record, png_bytes, records_json
    from jaxkp.checkpoint import WeightsError, write_atomic
    from jaxkp.collection import expand
    from jaxkp.inference import ImageError, load_photo

    try:
        pipeline = load_pipeline(args.weights, args.min_score, thorough=args.thorough, smallest_face=args.smallest_face)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    paths = expand(args.inputs)
    if not paths:
        print("error: no images found in " + ", ".join(map(str, args.inputs)), file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    records, stems, failures = [], set(), 0
    for path in tqdm(paths, unit="image", file=sys.stderr, disable=len(paths) < 2):
        try:
            rgb = load_photo(path)  # crops come from the full-size photo
            result = pipeline(rgb)
        except ImageError as error:
            failures += 1
            tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
            continue
        if not result["faces"]:
            tqdm.write(f"{path}: no face found", file=sys.stderr)
        # Two inputs with one stem (a/x.jpg, b/x.png) would overwrite each other's crops.
        stem, copy = path.stem, 1
        while stem in stems:
            copy += 1
            stem = f"{path.stem}-{copy}"
        stems.add(stem)
        for index, face in enumerate(result["faces"]):
            crop, matrix = align_face(rgb, face["keypoints"], args.size, args.template)
            name = f"{stem}_{index}.png"
            write_atomic(args.out / name, png_bytes(crop))
            records.append(crop_record(name, str(path), index, args.template, args.size, matrix))
    write_atomic(args.out / "aligned.json", records_json(records).encode())
    print(f"{len(records)} aligned face(s) from {len(paths) - failures} image(s) -> {args.out}")
    return 1 if failures and failures == len(paths) else 0


def video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxkp import load_pipeline
    from jaxkp.checkpoint import WeightsError, write_atomic
    from jaxkp.video import VideoBudget, VideoError, process_video

    if not args.input.is_file():
        print(f"error: no such file: {args.input}", file=sys.stderr)
        return 1
    try:
        pipeline = load_pipeline(args.weights, args.min_score, thorough=args.thorough, smallest_face=args.smallest_face)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with tqdm(unit="frame", file=sys.stderr) as bar:
        def progress(done: int, expected: int) -> None:
            bar.total = expected
            bar.update(done - bar.n)

        try:
            record = process_video(pipeline, args.input, args.out, VideoBudget(max_seconds=args.max_seconds), progress)
        except VideoError as error:
            print(f"error: {args.input}: {error}", file=sys.stderr)
            return 1
    faces = sum(len(frame["faces"]) for frame in record["frames"])
    if args.json:
        write_atomic(args.json, (json.dumps(record) + "\n").encode())
    print(f"{len(record['frames'])} frames at {record['fps']:g} fps, {faces} face detections"
          + (f" -> {args.out}" if args.out else "") + (f", {args.json}" if args.json else ""))
    return 0


def shard_setting(text: str) -> tuple[int, int]:
    from jaxkp.collection import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def share_setting(text: str) -> float:
    from jaxkp.detect import MAX_SMALLEST_FACE

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_SMALLEST_FACE:
        raise argparse.ArgumentTypeError(f"a share of the shorter side, over 0 and at most {MAX_SMALLEST_FACE}: {text}")
    return value


def score_setting(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxkp")
    # How the commands load the pipeline.
    pipeline_options = argparse.ArgumentParser(add_help=False)
    pipeline_options.add_argument("--weights",
                                  help="folder or Hub repo id[@revision] (default: JAXKP_WEIGHTS, else checkpoints/)")
    pipeline_options.add_argument("--min-score", type=score_setting, metavar="S",
                                  help="leave out faces the network scores under S in [0, 1] (default: the weights' "
                                       "threshold)")
    pipeline_options.add_argument("--thorough", action="store_true",
                                  help="run every face proposal source (more faces that lean or turn away, about twice "
                                       "the detector's time)")
    pipeline_options.add_argument("--smallest-face", type=share_setting, metavar="F",
                                  help="look for faces of at least F of the image's shorter side (default 0.05; 0.1 "
                                       "suits portraits and small groups: face finding a quarter to two fifths "
                                       "cheaper)")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("predict", parents=[pipeline_options],
                                  help="faces and 68 keypoints for images or folders of images")
    command.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    written = command.add_mutually_exclusive_group()
    written.add_argument("--json", type=Path, help="write a list of {path, image, faces} here at the end")
    written.add_argument("--jsonl", type=Path, metavar="OUT.jsonl",
                         help="write one {path, image, faces} line per image as it goes (unreadable images: "
                              "{path, error}); for collections")
    command.add_argument("--resume", action="store_true", help="skip the images OUT.jsonl already holds")
    command.add_argument("--shard", type=shard_setting, metavar="I/N",
                         help="take the I-th (0-based) of N disjoint parts of the sorted input list")
    command.add_argument("--workers", type=positive, default=1, metavar="K",
                         help="read images in K processes (default 1: this one)")
    command.add_argument("--out", type=Path, help="write annotated PNGs into this folder")
    command = commands.add_parser("align", parents=[pipeline_options],
                                  help="aligned face crops (FFHQ or ArcFace template) and their matrices")
    command.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    command.add_argument("--out", type=Path, required=True,
                         help="write <stem>_<face>.png per face and aligned.json here")
    command.add_argument("--size", type=positive, default=256, help="crop side in pixels (default 256)")
    command.add_argument("--template", choices=("ffhq", "arcface"), default="ffhq",
                         help="ffhq: FFHQ's eye-and-mouth square; arcface: the 5-point 112 px template, scaled")
    command = commands.add_parser("video", parents=[pipeline_options],
                                  help="track faces through a video: annotated MP4 and per-frame JSON")
    command.add_argument("input", type=Path, metavar="IN")
    command.add_argument("--out", type=Path, help="write the annotated video here (H.264 MP4, no audio)")
    command.add_argument("--json", type=Path, help="write one record per frame here")
    command.add_argument("--max-seconds", type=float, help="refuse longer videos")
    args = parser.parse_args(argv)
    if args.command == "predict" and args.resume and not args.jsonl:
        parser.error("--resume goes with --jsonl")
    return {"predict": predict, "align": align, "video": video}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
