"""`python -m jaxkp predict IMAGE_OR_FOLDER... [--json OUT.json] [--out DIR]`
and `python -m jaxkp video IN [--out OUT.mp4] [--json OUT.json]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".heif"}


def expand(inputs: list[Path]) -> list[Path]:
    paths = []
    for item in inputs:
        if item.is_dir():
            paths.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(item)
    return paths


def predict(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from jaxkp import load_pipeline
    from jaxkp.checkpoint import WeightsError, write_atomic
    from jaxkp.draw import annotate
    from jaxkp.inference import ImageError, load_photo

    try:
        pipeline = load_pipeline(args.weights, args.min_score, thorough=args.thorough)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    paths = expand(args.inputs)
    if not paths:
        print("error: no images found in " + ", ".join(map(str, args.inputs)), file=sys.stderr)
        return 1
    results, failures = [], 0
    for path in tqdm(paths, unit="image", file=sys.stderr, disable=len(paths) < 2):
        try:
            rgb = load_photo(path)
            result = pipeline(rgb)
        except ImageError as error:
            failures += 1
            tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
            continue
        results.append({"path": str(path), **result})
        if not result["faces"]:
            tqdm.write(f"{path}: no face found", file=sys.stderr)
        if args.out:
            target = args.out / (path.stem + ".annotated.png")
            png = cv2.imencode(".png", cv2.cvtColor(annotate(rgb, result), cv2.COLOR_RGB2BGR))[1]
            write_atomic(target, png.tobytes())
    text = json.dumps(results, indent=None if args.json else 2)
    if args.json:
        write_atomic(args.json, (text + "\n").encode())
        print(f"{len(results)} image(s), {sum(len(r['faces']) for r in results)} face(s) -> {args.json}")
    else:
        print(text)
    return 1 if failures and not results else 0


def video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxkp import load_pipeline
    from jaxkp.checkpoint import WeightsError, write_atomic
    from jaxkp.video import VideoError, process_video

    if not args.input.is_file():
        print(f"error: no such file: {args.input}", file=sys.stderr)
        return 1
    try:
        pipeline = load_pipeline(args.weights, args.min_score, thorough=args.thorough)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with tqdm(unit="frame", file=sys.stderr) as bar:
        def progress(done: int, expected: int) -> None:
            bar.total = expected
            bar.update(done - bar.n)

        try:
            record = process_video(pipeline, args.input, args.out, args.max_seconds, progress)
        except VideoError as error:
            print(f"error: {args.input}: {error}", file=sys.stderr)
            return 1
    faces = sum(len(frame["faces"]) for frame in record["frames"])
    if args.json:
        write_atomic(args.json, (json.dumps(record) + "\n").encode())
    print(f"{len(record['frames'])} frames at {record['fps']:g} fps, {faces} face detections"
          + (f" -> {args.out}" if args.out else "") + (f", {args.json}" if args.json else ""))
    return 0


def score_setting(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxkp")
    # How both commands load the pipeline.
    pipeline_options = argparse.ArgumentParser(add_help=False)
    pipeline_options.add_argument("--weights",
                                  help="folder or Hub repo id[@revision] (default: JAXKP_WEIGHTS, else checkpoints/)")
    pipeline_options.add_argument("--min-score", type=score_setting, metavar="S",
                                  help="leave out faces the network scores under S in [0, 1] (default: the weights' "
                                       "threshold)")
    pipeline_options.add_argument("--thorough", action="store_true",
                                  help="run every face proposal source (more faces that lean or turn away, about twice "
                                       "the detector's time)")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("predict", parents=[pipeline_options],
                                  help="faces and 68 keypoints for images or folders of images")
    command.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    command.add_argument("--json", type=Path, help="write a list of {path, image, faces} here")
    command.add_argument("--out", type=Path, help="write annotated PNGs into this folder")
    command = commands.add_parser("video", parents=[pipeline_options],
                                  help="track faces through a video: annotated MP4 and per-frame JSON")
    command.add_argument("input", type=Path, metavar="IN")
    command.add_argument("--out", type=Path, help="write the annotated video here (H.264 MP4, no audio)")
    command.add_argument("--json", type=Path, help="write one record per frame here")
    command.add_argument("--max-seconds", type=float, help="refuse longer videos")
    args = parser.parse_args(argv)
    return predict(args) if args.command == "predict" else video(args)


if __name__ == "__main__":
    sys.exit(main())
