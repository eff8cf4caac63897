"""Model time per face of networks side by side, in one process.

    python benchmarks/network_speed.py [--networks heatmap heatmap56] [--rounds 30] [--calls 10]

Each network (fresh weights, eval mode) is read through the jitted forward that
serving uses (`readout`, else the call) on uint8 patches made float as the
pipeline makes them. The networks take turns, `calls` calls each per round, so a
change in the machine's load falls on all of them; each figure is the median over
every call, per face, at batch 1 and batch 8. Pass `--fine-channels` to time
heatmap56 at other widths of its 56x56 level.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxkp.model import NETWORKS, HeatmapNet56  # noqa: E402


def forward(graph: nnx.GraphDef, state: nnx.State, images: jax.Array):
    model = nnx.merge(graph, state)
    inputs = images.astype(jax.numpy.float32) / 127.5 - 1.0
    return model.readout(inputs) if hasattr(model, "readout") else model(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=["heatmap", "heatmap56"], choices=sorted(NETWORKS))
    parser.add_argument("--fine-channels", type=int, nargs="*", default=[],
                        help="also time heatmap56 with these widths of its 56x56 level")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10, help="calls per network per round")
    args = parser.parse_args()
    models = {name: NETWORKS[name](nnx.Rngs(params=0, dropout=1)) for name in args.networks}
    for width in args.fine_channels:
        models[f"heatmap56 (fine {width})"] = HeatmapNet56(nnx.Rngs(params=0, dropout=1), fine_channels=width)
    step = jax.jit(forward, static_argnums=0)
    for size in (1, 8):
        patches = jax.numpy.asarray(np.random.default_rng(0).integers(0, 255, (size, 224, 224, 1), np.uint8))
        times: dict[str, list[float]] = {name: [] for name in models}
        split = {}
        for name, model in models.items():
            model.eval()
            split[name] = nnx.split(model)
            jax.block_until_ready(step(*split[name], patches))  # compile
        for _ in range(args.rounds):
            for name in models:
                for _ in range(args.calls):
                    start = time.perf_counter()
                    jax.block_until_ready(step(*split[name], patches))
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times[next(iter(models))])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"batch {size}: {name:<22} {1000 * median / size:6.2f} ms per face  ({median / base:.2f}x)")


if __name__ == "__main__":
    main()
