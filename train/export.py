"""`python -m train.export WORKDIR DEST`: copy a finished run into a folder the app serves.

DEST gets exactly what a Hub push uploads: model.safetensors, config.json,
metrics.jsonl, loss_curve.png and the generated model card (README.md). This is
how `checkpoints/` is made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxkp.checkpoint import WeightsError, load_weights, write_atomic
from jaxkp.hub import PushError, release_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--name", default="jaxkp", help="the model's name in its card")
    args = parser.parse_args(argv)
    try:
        load_weights(args.workdir)  # refuse to ship weights that do not load
        for name, content in release_files(args.workdir, args.name).items():
            write_atomic(args.dest / name, content if isinstance(content, bytes) else content.read_bytes())
    except (WeightsError, PushError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.workdir} -> {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
