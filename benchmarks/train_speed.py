"""Training throughput: the input pipeline alone, the bare jitted step, and the whole loop.

    python benchmarks/train_speed.py --data-dir ../shared/data/youtube-faces-keypoints \
        [--config heatmap-haar] [--workers 1 2] [--worker-kinds process thread]

Prints images/s (median of repeats) for the recipe's batch size (or --batch-size)
on every local device: the input pipeline alone for each worker count and kind
(processes or threads that make a batch's examples; one worker is the calling
thread), the bare step, and the whole loop with the largest worker count of the
first kind; and what a full run of the recipe would take at that rate.
Without --data-dir the figures use generated images of the data's median size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from train import data  # noqa: E402
from train.config import CONFIGS  # noqa: E402
from train.train import Trainer, epoch_batches, make_mesh  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--config", default="reference", choices=sorted(CONFIGS))
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="input worker counts to time")
    parser.add_argument("--worker-kinds", nargs="+", choices=["process", "thread"], default=["process", "thread"],
                        help="kinds of input workers to time (the first also feeds the whole loop)")
    parser.add_argument("--compute-dtype", choices=["float32", "bfloat16"], help="default: the recipe's")
    args = parser.parse_args()
    config = CONFIGS[args.config]
    config = config.replace(batch_size=args.batch_size or config.batch_size,
                            compute_dtype=args.compute_dtype or config.compute_dtype)
    args.batch_size = config.batch_size
    trainer = Trainer(config, make_mesh())

    if args.data_dir:
        dataset = data.load_dataset(args.data_dir, limit=args.batch_size * args.steps)
    else:
        rng = np.random.default_rng(0)
        count = args.batch_size * args.steps
        dataset = data.Dataset([f"p_{i}.jpg" for i in range(count)],
                               [rng.integers(0, 255, (201, 184), np.uint8) for _ in range(count)],
                               rng.uniform(20, 160, (count, 68, 2)).astype(np.float32))
    batch = next(epoch_batches(config, dataset, np.random.default_rng(0)))
    trainer.step(batch.images, batch.keypoints).block_until_ready()  # compile

    pipeline = {}
    for kind in args.worker_kinds:
        for count in args.workers:
            if count == 1 and kind != args.worker_kinds[0]:
                continue  # one worker is the calling thread, whatever the kind
            workers = data.input_workers(dataset, count, kind)
            try:
                if workers:  # start-up (spawning, shared memory) is paid once per run, not per epoch
                    list(epoch_batches(config, dataset, np.random.default_rng(99), workers=workers))
                rates = []
                for repeat in range(args.repeats):
                    start = time.perf_counter()
                    count_made = sum(len(b.images) for b in epoch_batches(
                        config, dataset, np.random.default_rng(repeat), workers=workers))
                    rates.append(count_made / (time.perf_counter() - start))
            finally:
                if workers:
                    workers.close()
            pipeline[(count if count > 1 else 1, kind if count > 1 else "in-thread")] = statistics.median(rates)

    bare = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = trainer.step(batch.images, batch.keypoints)
        loss.block_until_ready()
        bare.append(args.steps * args.batch_size / (time.perf_counter() - start))

    loop = []
    workers = data.input_workers(dataset, max(args.workers), args.worker_kinds[0])
    for repeat in range(args.repeats):
        start = time.perf_counter()
        batches = data.prefetch(epoch_batches(config, dataset, np.random.default_rng(repeat), workers=workers))
        steps = 0
        for batch in batches:
            loss = trainer.step(batch.images, batch.keypoints)
            steps += 1
        loss.block_until_ready()
        loop.append(steps * args.batch_size / (time.perf_counter() - start))

    devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    print(f"recipe {args.config} ({config.network} network, {config.compute_dtype}); devices: {devices}; "
          f"batch {args.batch_size}")
    if workers:
        workers.close()
    for (count, kind), rate in pipeline.items():
        print(f"input pipeline alone, {count} worker(s), {kind}: {rate:.0f} images/s (median of {args.repeats})")
    print(f"bare jitted step: {statistics.median(bare):.1f} images/s (median of {args.repeats})")
    print(f"whole loop with input pipeline ({max(args.workers)} {args.worker_kinds[0]} workers): "
          f"{statistics.median(loop):.1f} images/s "
          f"(median of {args.repeats})")
    epoch_images = 3100  # training images after the person-disjoint validation split
    minutes = config.epochs * epoch_images / statistics.median(loop) / 60
    print(f"-> {config.epochs} epochs of {epoch_images} images: {minutes:.1f} min")


if __name__ == "__main__":
    main()
