"""`python -m train`: train a keypoint network and write its checkpoint to a workdir."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.config import CONFIGS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("--config", default="reference", choices=sorted(CONFIGS), help="recipe (default: reference)")
    parser.add_argument("--data-dir", type=Path, nargs="+", required=True,
                        help="folder(s) with training/ and training_frames_keypoints.csv; a recipe that names "
                             "its data sets matches them by folder name")
    parser.add_argument("--workdir", type=Path, help="output folder (default: runs/CONFIG); rerun to resume")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size, split over all devices")
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--push-to-hub", metavar="USER/NAME", help="after training, publish the run to this Hub repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() (coordinator from the environment)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "learning_rate", "seed")
                 if getattr(args, k) is not None}
    config = CONFIGS[args.config].replace(**overrides)
    workdir = args.workdir or Path("runs") / args.config

    import jax

    if args.distributed:
        jax.distributed.initialize()

    from jaxkp.data import DataError
    from train.train import TrainingError, train_and_evaluate

    try:
        records = train_and_evaluate(config, args.data_dir, workdir)
    except (DataError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to resume from the last completed epoch in {workdir}",
              file=sys.stderr)
        return 130
    if records:
        print(f"done: {workdir} (last epoch: " + ", ".join(
            f"{k}={v:.4f}" for k, v in records[-1].items() if k.startswith(("val_loss", "nme"))) + ")")
    if args.push_to_hub and jax.process_index() == 0:
        from train.push import push

        return push(workdir, args.push_to_hub, args.private)
    return 0


if __name__ == "__main__":
    sys.exit(main())
