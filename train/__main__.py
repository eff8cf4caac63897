"""`python -m train`: train a keypoint network and write its checkpoint to a workdir."""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--input-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="workers that make each batch (default: up to 4, one per core)")
    parser.add_argument("--input-worker-kind", choices=["process", "thread"], default="process",
                        help="processes (default: they scale with cores) or threads")
    multi = parser.add_argument_group(
        "several processes (one per host or per GPU), through JAX's own runtime; each flag falls back to "
        "its environment variable, and with --distributed alone a cluster launcher's (SLURM, Open MPI, "
        "Kubernetes) settings are detected")
    multi.add_argument("--coordinator", metavar="HOST:PORT", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                       help="process 0's address, the same for every process (JAX_COORDINATOR_ADDRESS)")
    multi.add_argument("--num-processes", type=int, default=env_int("JAX_NUM_PROCESSES"),
                       help="how many processes take part (JAX_NUM_PROCESSES)")
    multi.add_argument("--process-id", type=int, default=env_int("JAX_PROCESS_ID"),
                       help="this process's index, 0 .. N-1 (JAX_PROCESS_ID)")
    multi.add_argument("--distributed", action="store_true",
                       help="initialise several processes from a cluster launcher's environment")
    multi.add_argument("--heartbeat-timeout", type=int, default=100, metavar="SECONDS",
                       help="a process silent this long counts as dead, and the others stop with an error")
    return parser.parse_args(argv)


def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def initialize_processes(args: argparse.Namespace) -> None:
    """Joins JAX's multi-process runtime when asked to; on CPU, collectives go over gloo."""
    if not (args.distributed or args.coordinator or args.num_processes):
        return
    import jax

    # Only the CPU backend reads this; GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id, heartbeat_timeout_seconds=args.heartbeat_timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "learning_rate", "seed")
                 if getattr(args, k) is not None}
    config = CONFIGS[args.config].replace(**overrides)
    workdir = args.workdir or Path("runs") / args.config

    initialize_processes(args)
    import jax

    from train.data import DataError
    from train.train import TrainingError, train_and_evaluate

    try:
        records = train_and_evaluate(config, args.data_dir, workdir, args.input_workers,
                                     args.input_worker_kind)
    except (DataError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() == 1:
            raise
        # A peer died: the collectives fail here at once. JAX's own shutdown would then
        # wait for the dead peer at a barrier and abort, so leave without it.
        print(f"error: process {jax.process_index()} lost contact with the other processes of this run "
              f"({str(error).splitlines()[0][:200]}); the last completed epoch is kept in {workdir}: "
              f"start every process again with the same command to resume", file=sys.stderr, flush=True)
        os._exit(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to resume from the last completed epoch in {workdir}",
              file=sys.stderr)
        return 130
    if records and jax.process_index() == 0:
        print(f"done: {workdir} (last epoch: " + ", ".join(
            f"{k}={v:.4f}" for k, v in records[-1].items() if k.startswith(("val_loss", "nme"))) + ")")
    if args.push_to_hub and jax.process_index() == 0:
        from train.push import push

        return push(workdir, args.push_to_hub, args.private)
    return 0


if __name__ == "__main__":
    sys.exit(main())
