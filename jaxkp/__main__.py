"""`python -m jaxkp predict IMAGE_OR_FOLDER... [--json OUT.json] [--out DIR]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


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
        pipeline = load_pipeline(args.weights)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxkp")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("predict", help="faces and 68 keypoints for images or folders of images")
    command.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    command.add_argument("--json", type=Path, help="write a list of {path, image, faces} here")
    command.add_argument("--out", type=Path, help="write annotated PNGs into this folder")
    command.add_argument("--weights", help="folder or Hub repo id[@revision] (default: JAXKP_WEIGHTS, else checkpoints/)")
    args = parser.parse_args(argv)
    return predict(args)


if __name__ == "__main__":
    sys.exit(main())
