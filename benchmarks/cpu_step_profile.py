"""Where the reference recipe's training step spends its time on a CPU, and what the
first convolution costs in other formulations.

    python benchmarks/cpu_step_profile.py [--batch-size 16] [--repeats 20]

Prints milliseconds (medians) for: the whole jitted training step; the forward
pass; each convolution's forward and weight gradient on its own (the first conv,
5x5 over 224x224x1 -> 220x220x32, is the one that dominates); and the first
conv's forward and weight gradient computed other ways: in NCHW layout, and as
explicit patches ("im2col": 25 shifted views times a 25x32 matrix), which is
how a CPU library would do a 1-channel convolution.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from train.config import CONFIGS  # noqa: E402
from train.train import Trainer, make_mesh  # noqa: E402


def median_ms(function, repeats: int, *args) -> float:
    jax.block_until_ready(function(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def conv_nhwc(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_nchw(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))


def patches_1ch(x: jax.Array, size: int) -> jax.Array:
    """(B, H, W, 1) -> (B, H-size+1, W-size+1, size*size): the shifted views of a 1-channel image."""
    height, width = x.shape[1] - size + 1, x.shape[2] - size + 1
    return jnp.concatenate([x[:, i:i + height, j:j + width, :] for i in range(size) for j in range(size)], axis=-1)


def conv_im2col(x: jax.Array, w: jax.Array) -> jax.Array:
    size = w.shape[0]
    return patches_1ch(x, size) @ w.reshape(size * size, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    batch, repeats = args.batch_size, args.repeats
    rng = np.random.default_rng(0)
    config = CONFIGS["reference"].replace(batch_size=batch)
    trainer = Trainer(config, make_mesh())
    images = rng.integers(0, 255, (batch, 224, 224, 1), np.uint8)
    keypoints = rng.uniform(-1, 1, (batch, 68, 2)).astype(np.float32)
    print(f"{jax.devices()[0].device_kind}, batch {batch}, medians of {repeats}")
    print(f"whole training step (reference):         {median_ms(trainer.step, repeats, images, keypoints):7.1f} ms")

    x = jnp.asarray(rng.standard_normal((batch, 224, 224, 1)), jnp.float32)
    shapes = {"conv1 5x5 1->32 @224": ((batch, 224, 224, 1), (5, 5, 1, 32)),
              "conv2 3x3 32->64 @73": ((batch, 73, 73, 32), (3, 3, 32, 64)),
              "conv3 3x3 64->128 @23": ((batch, 23, 23, 64), (3, 3, 64, 128))}
    for name, (x_shape, w_shape) in shapes.items():
        xs = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
        ws = jnp.asarray(rng.standard_normal(w_shape), jnp.float32) * 0.1
        out = conv_nhwc(xs, ws)
        g = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
        forward = jax.jit(conv_nhwc)
        weight_grad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv_nhwc(x, w), w)[1](g)[0])
        input_grad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv_nhwc(x, w), x)[1](g)[0])
        print(f"{name}: forward {median_ms(forward, repeats, xs, ws):6.1f} ms, "
              f"weight gradient {median_ms(weight_grad, repeats, xs, ws, g):6.1f} ms, "
              f"input gradient {median_ms(input_grad, repeats, xs, ws, g):6.1f} ms")

    w = jnp.asarray(rng.standard_normal((5, 5, 1, 32)), jnp.float32) * 0.1
    g = jnp.asarray(rng.standard_normal((batch, 220, 220, 32)), jnp.float32)
    x_nchw, g_nchw, w_oihw = x.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    np.testing.assert_allclose(conv_im2col(x, w), conv_nhwc(x, w), rtol=2e-4, atol=2e-4)
    variants = {
        "conv1 NHWC (XLA conv)": (conv_nhwc, x, w, g),
        "conv1 NCHW (XLA conv)": (conv_nchw, x_nchw, w_oihw, g_nchw),
        "conv1 im2col matmul": (conv_im2col, x, w, g),
    }
    for name, (conv, xs, ws, gs) in variants.items():
        forward = jax.jit(conv)
        weight_grad = jax.jit(lambda x, w, g, conv=conv: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
        print(f"{name:<24} forward {median_ms(forward, repeats, xs, ws):6.1f} ms, "
              f"weight gradient {median_ms(weight_grad, repeats, xs, ws, gs):6.1f} ms")


if __name__ == "__main__":
    main()
