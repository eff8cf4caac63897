"""Keypoint networks in Flax NNX.

`ReferenceNet` is the reference architecture (see DEVELOPERS.md); other
networks may be added beside it and chosen by name through `NETWORKS`.
Inputs are NHWC: (batch, 224, 224, 1) grayscale in [-1, 1]; outputs are
(batch, 68, 2) keypoints in [-1, 1] about the image centre.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

NUM_KEYPOINTS = 68
INPUT_SIZE = 224

# PyTorch's kaiming_normal_ (fan_in, gain sqrt(2)) draws from an untruncated
# normal; JAX's he_normal truncates, so spell the variance scaling out.
kaiming_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _pool_3x3(x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    h, w = height // 3, width // 3
    x = x[:, : h * 3, : w * 3, :]
    return x.reshape(batch, h, 3, w, 3, channels).max(axis=(2, 4))


@jax.custom_vjp
def max_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3 max-pool with stride 3 (floor mode), NHWC.

    The windows do not overlap, so a reshape and a max replace the windowed
    pool, whose gradient is a slow select-and-scatter on XLA's CPU backend.
    The custom gradient is one fused compare-and-select pass (2.4x faster
    than differentiating the max at conv1's size); it sends the gradient to
    every tied maximum, which only differs where inputs tie exactly.
    """
    return _pool_3x3(x)


def _max_pool_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    pooled = _pool_3x3(x)
    return pooled, (x, pooled)


def _max_pool_bwd(residuals: tuple[jax.Array, jax.Array], grad: jax.Array) -> tuple[jax.Array]:
    x, pooled = residuals
    batch, height, width, channels = x.shape
    h, w = pooled.shape[1:3]

    def upsample(a: jax.Array) -> jax.Array:
        a = jnp.broadcast_to(a[:, :, None, :, None, :], (batch, h, 3, w, 3, channels))
        return a.reshape(batch, h * 3, w * 3, channels)

    grad_x = jnp.where(x[:, : h * 3, : w * 3] == upsample(pooled), upsample(grad), 0.0)
    grad_x = jnp.pad(grad_x, ((0, 0), (0, height - h * 3), (0, width - w * 3), (0, 0)))
    return (grad_x.astype(x.dtype),)


max_pool_3x3.defvjp(_max_pool_fwd, _max_pool_bwd)


class ReferenceNet(nnx.Module):
    """The reference network: three conv blocks, two dense layers.

    224 -conv5-> 220 -pool-> 73 -conv3-> 71 -pool-> 23 -conv3-> 21 -pool-> 7;
    7*7*128 = 6272 -> 512 -> 136.
    """

    def __init__(self, rngs: nnx.Rngs):
        conv = dict(padding="VALID", kernel_init=kaiming_normal, rngs=rngs)
        self.conv1 = nnx.Conv(1, 32, (5, 5), **conv)
        self.drop1 = nnx.Dropout(0.1, rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), **conv)
        # PyTorch's BatchNorm momentum 0.1 is a 0.9 decay of the running stats.
        self.bn2 = nnx.BatchNorm(64, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.drop2 = nnx.Dropout(0.2, rngs=rngs)
        self.conv3 = nnx.Conv(64, 128, (3, 3), **conv)
        self.drop3 = nnx.Dropout(0.3, rngs=rngs)
        self.fc1 = nnx.Linear(7 * 7 * 128, 512, kernel_init=torch_linear_init, rngs=rngs)
        self.bn_fc1 = nnx.BatchNorm(512, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.fc2 = nnx.Linear(512, 2 * NUM_KEYPOINTS, kernel_init=torch_linear_init, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        # ReLU and max-pool commute, so the ReLU runs on the 9x smaller pooled map.
        x = nnx.relu(max_pool_3x3(self.conv1(images)))
        x = self.drop1(x)
        x = max_pool_3x3(nnx.relu(self.bn2(self.conv2(x))))
        x = self.drop2(x)
        x = nnx.relu(max_pool_3x3(self.conv3(x)))
        x = self.drop3(x)
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.bn_fc1(self.fc1(x)))
        x = self.fc2(x)
        return x.reshape(x.shape[0], NUM_KEYPOINTS, 2)


class ConvBlock(nnx.Module):
    """3x3 conv (no bias: BatchNorm follows), BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_channels, out_channels, (3, 3), strides=stride, padding="SAME", use_bias=False,
                             kernel_init=kaiming_normal, rngs=rngs)
        self.bn = nnx.BatchNorm(out_channels, momentum=0.9, epsilon=1e-5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x)))


def space_to_depth(images: jax.Array, block: int = 4) -> jax.Array:
    """(B, 224, 224, 1) -> (B, 56, 56, 16): each 4x4 patch becomes 16 channels."""
    batch, size = images.shape[0], INPUT_SIZE // block
    return (images.reshape(batch, size, block, size, block, 1).transpose(0, 1, 3, 2, 4, 5)
            .reshape(batch, size, size, block * block))


class CompactNet(nnx.Module):
    """A faster, stronger variant for CPU serving: space-to-depth, then strided conv blocks.

    224x224x1 -> (4x4 space-to-depth) 56x56x16 -> 56x56x32 -> 28x28x64 (x2) ->
    14x14x128 (x2) -> 7x7x256 (x2) -> 12544 -> 256 -> 136. The reshape replaces
    the reference's full-resolution 5x5 conv, whose 220x220x32 activations
    dominate its cost on a CPU, and stride-2 convs replace the 3x3/3 pools.
    """

    def __init__(self, rngs: nnx.Rngs, widths: tuple[int, int, int, int] = (32, 64, 128, 256)):
        w0, w1, w2, w3 = widths
        self.blocks = nnx.List([
            ConvBlock(16, w0, 1, rngs),
            ConvBlock(w0, w1, 2, rngs), ConvBlock(w1, w1, 1, rngs),
            ConvBlock(w1, w2, 2, rngs), ConvBlock(w2, w2, 1, rngs),
            ConvBlock(w2, w3, 2, rngs), ConvBlock(w3, w3, 1, rngs),
        ])
        self.init_head(7 * 7 * w3, rngs)

    def init_head(self, features: int, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(features, 256, kernel_init=torch_linear_init, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.fc2 = nnx.Linear(256, 2 * NUM_KEYPOINTS, kernel_init=torch_linear_init, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x

    def __call__(self, images: jax.Array) -> jax.Array:
        batch = images.shape[0]
        x = self.features(space_to_depth(images))
        x = self.drop(nnx.relu(self.fc1(x.reshape(batch, -1))))
        return self.fc2(x).reshape(batch, NUM_KEYPOINTS, 2)


class ResidualBlock(nnx.Module):
    """Two 3x3 conv-BatchNorm layers around an identity shortcut (He et al. 2016).

    `starts_as_identity`: the last BatchNorm's scale starts at zero (Goyal et al. 2017), so
    on a ReLU'd (non-negative) input the fresh block passes its input through unchanged:
    a block added to trained weights starts by changing nothing, then learns.
    """

    def __init__(self, channels: int, rngs: nnx.Rngs, starts_as_identity: bool = False):
        self.first = ConvBlock(channels, channels, 1, rngs)
        self.conv = nnx.Conv(channels, channels, (3, 3), padding="SAME", use_bias=False,
                             kernel_init=kaiming_normal, rngs=rngs)
        self.bn = nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs,
                                scale_init=nnx.initializers.zeros_init() if starts_as_identity else
                                nnx.initializers.ones_init())

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(x + self.bn(self.conv(self.first(x))))


def residual_stages(widths: tuple[int, ...], depths: tuple[int, ...], rngs: nnx.Rngs,
                    starts_as_identity: bool = False) -> list[list[nnx.Module]]:
    """The layers of each stage on the 16-channel space-to-depth map: a conv block
    (stride 2 after the first stage), then `depth` residual blocks."""
    stages, channels = [], 16
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        stride = 1 if stage == 0 else 2
        stages.append([ConvBlock(channels, width, stride, rngs),
                       *(ResidualBlock(width, rngs, starts_as_identity) for _ in range(depth))])
        channels = width
    return stages


class ResidualNet(CompactNet):
    """CompactNet's input reshape and stride-2 stages with residual blocks in them:
    the compact network underfits (its error on training people is close to its
    validation error), and shortcuts let a deeper stack train. A 1x1 conv narrows
    the last map before the dense head so the weights stay under 10 MB.

    224x224x1 -> 56x56x16 -> 56x56x32 -> 28x28x64 (+1 block) -> 14x14x128 (+2)
    -> 7x7x256 (+2) -> 7x7x64 -> 3136 -> 256 -> 136.
    """

    def __init__(self, rngs: nnx.Rngs, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (0, 1, 2, 2), head_channels: int = 64):
        self.blocks = nnx.List([layer for stage in residual_stages(widths, depths, rngs) for layer in stage])
        self.narrow = nnx.Conv(widths[-1], head_channels, (1, 1), use_bias=False, kernel_init=kaiming_normal, rngs=rngs)
        self.narrow_bn = nnx.BatchNorm(head_channels, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.init_head(7 * 7 * head_channels, rngs)

    def features(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.narrow_bn(self.narrow(super().features(x))))


def upsample_2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling, NHWC."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def spatial_softmax(logits: jax.Array) -> jax.Array:
    """(B, H, W, K) heatmap logits -> each keypoint's distribution over the map's cells."""
    batch, height, width, keypoints = logits.shape
    # float32 whatever the layers computed in: a softmax over 784 cells needs its precision.
    weights = jax.nn.softmax(logits.astype(jnp.float32).reshape(batch, height * width, keypoints), axis=1)
    return weights.reshape(batch, height, width, keypoints)


def _moments(weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each keypoint's mean (B, K, 2) and summed x and y variance (B, K) under its
    spatial softmax, in [-1, 1] about the centre."""
    _, height, width, _ = weights.shape
    # Cell i covers [i, i + 1) of the map, so its centre sits at (i + 0.5) / size.
    xs = (jnp.arange(width) + 0.5) / width * 2 - 1
    ys = (jnp.arange(height) + 0.5) / height * 2 - 1
    column, row = weights.sum(axis=1), weights.sum(axis=2)  # (B, W, K) and (B, H, K)
    x, y = jnp.einsum("bwk,w->bk", column, xs), jnp.einsum("bhk,h->bk", row, ys)
    variance = jnp.einsum("bwk,w->bk", column, xs**2) - x**2 + jnp.einsum("bhk,h->bk", row, ys**2) - y**2
    return jnp.stack([x, y], axis=-1), variance


def soft_argmax(logits: jax.Array) -> jax.Array:
    """(B, H, W, K) heatmap logits -> (B, K, 2) expected (x, y) in [-1, 1] about the centre.

    The expectation under a spatial softmax (integral regression, Sun et al.
    2018) is differentiable and finer than the map's cells.
    """
    return _moments(spatial_softmax(logits))[0]


def heatmap_spread(logits: jax.Array) -> jax.Array:
    """(B, H, W, K) heatmap logits -> (B, K): how widely each keypoint's spatial softmax
    spreads about its expectation (the root of its x and y variances summed), in the
    normalised units of soft_argmax. A network unsure where a point is spreads it out."""
    return jnp.sqrt(jnp.maximum(_moments(spatial_softmax(logits))[1], 1e-12))


class HeatmapNet(nnx.Module):
    """ResidualNet's stages with a top-down decoder (as in feature pyramids) and one
    heatmap per keypoint at 28x28, read out by soft-argmax. Regressing coordinates
    through a dense layer makes the network learn where things are from scratch;
    a heatmap keeps the convolutions' translation equivariance and lets the
    28x28 map, which has fine detail, place each point while the 7x7 map, which
    sees the whole face, says which point is which.

    224x224x1 -> 56x56x16 -> 56x56x32 -> 28x28x64 -> 14x14x128 -> 7x7x256;
    7 -> 14 -> 28 with 1x1 lateral convs from each stage, a conv block at 14
    and 28, then 68 heatmaps of 28x28.
    """

    def __init__(self, rngs: nnx.Rngs, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (0, 1, 2, 2), decoder_channels: int = 64, starts_as_identity: bool = False):
        self.stages = nnx.List([nnx.List(stage) for stage in residual_stages(widths, depths, rngs, starts_as_identity)])
        self.lateral = nnx.List([nnx.Conv(width, decoder_channels, (1, 1), kernel_init=kaiming_normal, rngs=rngs)
                                 for width in widths[1:]])
        self.merge = nnx.List([ConvBlock(decoder_channels, decoder_channels, 1, rngs) for _ in widths[2:]])
        # No bias: the softmax over positions cancels a per-map constant.
        self.heatmap = nnx.Conv(decoder_channels, NUM_KEYPOINTS, (1, 1), use_bias=False, rngs=rngs)

    def stage_outputs(self, images: jax.Array) -> list[jax.Array]:
        """Each stage's output: the 56, 28, 14 and 7 maps."""
        x = space_to_depth(images)
        outputs = []
        for stage in self.stages:
            for layer in stage:
                x = layer(x)
            outputs.append(x)
        return outputs

    def decode(self, stage_outputs: list[jax.Array]) -> jax.Array:
        """The top-down decoder's 28x28 map (B, 28, 28, decoder_channels)."""
        # stage_outputs[1:] are the 28, 14 and 7 maps; walk them from coarse to fine.
        fine_maps = stage_outputs[1:]
        x = self.lateral[-1](fine_maps[-1])
        for level in range(len(fine_maps) - 2, -1, -1):
            x = self.merge[level](upsample_2x(x) + self.lateral[level](fine_maps[level]))
        return x

    def heatmaps(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Heatmap logits (B, 28, 28, 68) and the coarsest stage's map (B, 7, 7, C)."""
        stage_outputs = self.stage_outputs(images)
        return self.heatmap(self.decode(stage_outputs)), stage_outputs[-1]

    def __call__(self, images: jax.Array) -> jax.Array:
        return soft_argmax(self.heatmaps(images)[0])

    def keypoints_and_evidence(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keypoints, and what the network's face score reads (B, 68 + C): how peaked
        each keypoint's heatmap is (the log of its softmax maximum: a face puts each
        point somewhere, a shirt spreads it out) and the coarsest map averaged over
        the input (what the network sees as a whole)."""
        keypoints, evidence, _ = self.readout(images)
        return keypoints, evidence

    def readout(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """keypoints_and_evidence, and each keypoint's heatmap_spread (B, 68), from one pass."""
        logits, coarse = self.heatmaps(images)
        batch, height, width, keypoints = logits.shape
        log_weights = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(batch, height * width, keypoints), axis=1)
        peaks = log_weights.max(axis=1)
        pooled = coarse.astype(jnp.float32).mean(axis=(1, 2))
        # One softmax for the points and their spread.
        points, variance = _moments(spatial_softmax(logits))
        return points, jnp.concatenate([peaks, pooled], axis=-1), jnp.sqrt(jnp.maximum(variance, 1e-12))


class HeatmapNet56(HeatmapNet):
    """HeatmapNet with one more decoder level: 68 heatmaps at 56x56 (4 input pixels a
    cell instead of 8), the first stage's 56x56 map giving the finer detail.

    The 28x28 decoder map is narrowed (1x1 conv, at 28x28 where it is 4x cheaper; a
    1x1 conv commutes with the nearest-neighbour upsampling), upsampled and added to a
    1x1 lateral from the 56x56 stage; a conv block merges them at `fine_channels` (the
    56x56 level dominates the added cost). Its heatmaps are HeatmapNet's 28x28 logits
    upsampled plus a correction read from the 56x56 map by a zero-initialised 1x1 conv,
    so every HeatmapNet tensor keeps its name and shape and, started from HeatmapNet
    weights, this network first gives exactly their keypoints (the soft-argmax of a
    nearest-neighbour-upsampled map is the original's: each cell's four sub-cells
    average to its centre), then learns the finer level as a refinement. Adding the
    correction to the logits equals adding a 64-channel feature map before the shared
    heatmap conv (both are linear), without a 64-channel map and a 64->68 conv at 56x56.
    """

    def __init__(self, rngs: nnx.Rngs, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (0, 1, 2, 2), decoder_channels: int = 64, fine_channels: int = 32):
        super().__init__(rngs, widths, depths, decoder_channels)
        self.fine_narrow = nnx.Conv(decoder_channels, fine_channels, (1, 1), use_bias=False,
                                    kernel_init=kaiming_normal, rngs=rngs)
        self.fine_lateral = nnx.Conv(widths[0], fine_channels, (1, 1), kernel_init=kaiming_normal, rngs=rngs)
        self.fine_merge = ConvBlock(fine_channels, fine_channels, 1, rngs)
        self.fine_heatmap = nnx.Conv(fine_channels, NUM_KEYPOINTS, (1, 1), use_bias=False,
                                     kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def heatmaps(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Heatmap logits (B, 56, 56, 68) and the coarsest stage's map (B, 7, 7, C)."""
        stage_outputs = self.stage_outputs(images)
        x = self.decode(stage_outputs)
        fine = self.fine_merge(upsample_2x(self.fine_narrow(x)) + self.fine_lateral(stage_outputs[0]))
        return upsample_2x(self.heatmap(x)) + self.fine_heatmap(fine), stage_outputs[-1]


class DeepHeatmapNet(HeatmapNet):
    """HeatmapNet with more residual blocks where its points are placed: one more in the
    28x28 and 14x14 stages and one after the decoder's 28x28 merge, which the heatmaps
    are read from (issue 22: HeatmapNet's error on its own training photos, 0.033, was
    nearly its validation error, 0.037, so it underfits). Every HeatmapNet tensor keeps
    its name and shape, and each added block starts as the identity, so started from
    HeatmapNet weights this network first gives exactly their keypoints.

    224x224x1 -> 56x56x32 -> 28x28x64 (+2 blocks) -> 14x14x128 (+3) -> 7x7x256 (+2);
    the decoder as HeatmapNet's, then a residual block at 28x28, then 68 heatmaps.
    """

    def __init__(self, rngs: nnx.Rngs, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (0, 2, 3, 2), decoder_channels: int = 64, refine_blocks: int = 1):
        super().__init__(rngs, widths, depths, decoder_channels, starts_as_identity=True)
        self.refine = nnx.List([ResidualBlock(decoder_channels, rngs, starts_as_identity=True)
                                for _ in range(refine_blocks)])

    def decode(self, stage_outputs: list[jax.Array]) -> jax.Array:
        x = super().decode(stage_outputs)
        for block in self.refine:
            x = block(x)
        return x


NETWORKS: dict[str, type[nnx.Module]] = {
    "reference": ReferenceNet, "compact": CompactNet, "residual": ResidualNet, "heatmap": HeatmapNet,
    "heatmap56": HeatmapNet56, "heatmap-deep": DeepHeatmapNet,
}


def create_model(network: str, seed: int = 0) -> nnx.Module:
    """Builds the named network with freshly initialised weights."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[network](nnx.Rngs(params=seed, dropout=seed + 1))


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (BatchNorm statistics excluded)."""
    params = nnx.state(model, nnx.Param)
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
