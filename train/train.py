"""The training loop: jitted MSE step under Adam, data parallel over a device mesh.

Layout follows Flax's examples: small pure step functions, a loop that owns
the I/O, and one workdir per run holding everything the run wrote.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from safetensors import safe_open
from safetensors.numpy import load_file, save
from tqdm import tqdm

from jaxkp import checkpoint, geometry, metrics
from jaxkp.detect import TRAINING_SOURCES, FaceDetector, nearest_face_boxes
from jaxkp.model import INPUT_SIZE, NUM_KEYPOINTS, create_model, soft_argmax
from train import data
from train.config import Config, DataSource
from train.plot import write_loss_curve

TRAIN_STATE_FILE = "train_state.safetensors"
METRICS_FILE = "metrics.jsonl"


class TrainingError(RuntimeError):
    """The run cannot go on; the message says why and what was kept."""


def to_input(images: jax.Array) -> jax.Array:
    """uint8 pixels -> float32 in [-1, 1]."""
    return images.astype(jnp.float32) / 127.5 - 1.0


# Wing loss (Feng et al., CVPR 2018) parameters, in network-input pixels.
WING_WIDTH, WING_CURVATURE = 10.0, 2.0


def keypoint_loss(name: str, predicted: jax.Array, target: jax.Array) -> jax.Array:
    """Mean loss over coordinates; targets are normalised to [-1, 1] (1 = 112 input pixels)."""
    error = predicted - target
    if name == "mse":
        return jnp.mean(error**2)
    if name == "l1":
        return jnp.mean(jnp.abs(error))
    if name == "wing":
        pixels = jnp.abs(error) * (INPUT_SIZE / 2)
        offset = WING_WIDTH - WING_WIDTH * jnp.log1p(WING_WIDTH / WING_CURVATURE)
        near = WING_WIDTH * jnp.log1p(pixels / WING_CURVATURE)
        return jnp.mean(jnp.where(pixels < WING_WIDTH, near, pixels - offset))
    raise ValueError(f"unknown loss {name!r}")


def heatmap_loss(logits: jax.Array, target: jax.Array, sigma: float) -> jax.Array:
    """Mean over keypoints (and the batch) of the Kullback-Leibler divergence from a
    Gaussian target to each keypoint's spatial softmax (DSNT's heatmap regulariser,
    Nibali et al. 2018): the cross-entropy less the target's own entropy, which has
    the same gradient but is 0 for a map that matches its target exactly.

    logits: (B, H, W, K); target: (B, K, 2) in soft_argmax's [-1, 1] units (cell i's
    centre at (i + 0.5) / size * 2 - 1); sigma in cells. The target is the Gaussian
    sampled at the cell centres and normalised over the map; it is separable, so it is
    the product of an x and a y distribution.

    A point outside the map (|x| or |y| > 1, as jitter and rotation put some) gets no
    heatmap term: a target clipped to the border would teach a peak where the point is
    not, and the coordinate loss already pulls such points as far out as the map lets
    them go. The mean is over the points on the map.
    """
    batch, height, width, keypoints = logits.shape
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(batch, height * width, keypoints), axis=1)
    log_p = log_p.reshape(batch, height, width, keypoints)

    def axis_target(coordinate: jax.Array, size: int) -> jax.Array:
        """(B, K) positions -> (B, size, K) log-probabilities of the target along one axis."""
        centres = (jnp.arange(size) + 0.5) / size * 2 - 1
        cells = (centres[None, :, None] - coordinate[:, None, :]) * (size / 2)  # distance in cells
        return jax.nn.log_softmax(-0.5 * (cells / sigma) ** 2, axis=1)

    log_qx, log_qy = axis_target(target[..., 0], width), axis_target(target[..., 1], height)
    qx, qy = jnp.exp(log_qx), jnp.exp(log_qy)
    cross_entropy = -jnp.einsum("bhk,bwk,bhwk->bk", qy, qx, log_p)
    entropy = -(qx * log_qx).sum(axis=1) - (qy * log_qy).sum(axis=1)
    on_map = jnp.all(jnp.abs(target) <= 1.0, axis=-1)
    return jnp.sum(jnp.where(on_map, cross_entropy - entropy, 0.0)) / jnp.maximum(on_map.sum(), 1)


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> optax.ScalarOrSchedule:
    """The rate by step: `schedule` after a linear warmup of `warmup_epochs` from zero."""
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "constant":
        return optax.warmup_constant_schedule(0.0, config.learning_rate, warmup) if warmup else config.learning_rate
    if config.schedule == "cosine":
        total = max(config.epochs * steps_per_epoch, max(1, warmup) + 1)
        return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, max(1, warmup), total)
    raise ValueError(f"unknown schedule {config.schedule!r}")


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    learning_rate = learning_rate_schedule(config, steps_per_epoch)
    if config.weight_decay:
        return optax.adamw(learning_rate, weight_decay=config.weight_decay)
    return optax.adam(learning_rate)


class WithConventions(nnx.Module):
    """A network plus a learnt per-point offset (normalised input units) for each data
    set's mark-up convention, in the photo's own frame: a mirrored example gets its
    offsets mirrored, so a mark-up that sits to one side (not only a symmetric one)
    is learnt too. Data set 0's offset is zero: its mark-up is the one the network
    itself outputs and serves; called without `sources`, this is the network."""

    def __init__(self, network: nnx.Module, count: int):
        self.network = network
        self.offsets = nnx.Param(jnp.zeros((count - 1, NUM_KEYPOINTS, 2)))

    def all_offsets(self) -> jax.Array:
        return jnp.concatenate([jnp.zeros((1, NUM_KEYPOINTS, 2)), self.offsets[...]])

    def example_offsets(self, sources: jax.Array, flipped: jax.Array | None = None) -> jax.Array:
        """Each example's offsets (B, 68, 2): its data set's, mirrored where it was flipped."""
        offsets = self.all_offsets()[sources]
        if flipped is not None:
            mirrored = offsets[:, data.FLIP_PERMUTATION] * jnp.array([-1.0, 1.0])
            offsets = jnp.where(flipped[:, None, None], mirrored, offsets)
        return offsets

    def __call__(self, images: jax.Array, sources: jax.Array | None = None,
                 flipped: jax.Array | None = None) -> jax.Array:
        predicted = self.network(images)
        if sources is None:
            return predicted
        return predicted + self.example_offsets(sources, flipped)


def train_step(
    model_graph: nnx.GraphDef,
    optimizer_graph: nnx.GraphDef,
    loss: str,
    model_state: nnx.State,
    optimizer_state: nnx.State,
    images: jax.Array,
    keypoints: jax.Array,
    sources: jax.Array,
    flipped: jax.Array,
    heatmap_weight: float = 0.0,
    heatmap_sigma: float = 1.0,
) -> tuple[nnx.State, nnx.State, jax.Array]:
    """One optimizer step on the loss between predicted and true normalised keypoints
    (each example's in its own data set's mark-up, where the model learns several),
    plus, with `heatmap_weight` (static, as are `loss` and `heatmap_sigma`), that
    weight times heatmap_loss."""
    model = nnx.merge(model_graph, model_state)
    optimizer = nnx.merge(optimizer_graph, optimizer_state)

    def loss_fn(model: nnx.Module) -> jax.Array:
        inputs = to_input(images)
        if not heatmap_weight:
            predicted = model(inputs, sources, flipped) if isinstance(model, WithConventions) else model(inputs)
            return keypoint_loss(loss, predicted.astype(jnp.float32), keypoints)
        # The same forward pass, keeping the logits; the heatmaps give the network's own
        # (the first data set's) mark-up, so their target is the true points less the
        # example's convention offset. The coordinate loss learns the offsets; the heatmap
        # target holds them fixed (stop_gradient), or the heatmap loss would move them too.
        network = model.network if isinstance(model, WithConventions) else model
        logits = network.heatmaps(inputs)[0]
        offsets = model.example_offsets(sources, flipped) if isinstance(model, WithConventions) else 0.0
        predicted = soft_argmax(logits) + offsets
        return (keypoint_loss(loss, predicted.astype(jnp.float32), keypoints)
                + heatmap_weight * heatmap_loss(logits, keypoints - jax.lax.stop_gradient(offsets), heatmap_sigma))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state(model), nnx.state(optimizer), loss


def average_step(average_state: nnx.State, model_state: nnx.State, decay: jax.Array) -> nnx.State:
    """The moving average of the weights one step on: every float array (parameters and
    BatchNorm statistics) keeps `decay` of its average; the rest (RNG state) is copied."""
    def mix(average: jax.Array, current: jax.Array) -> jax.Array:
        if jnp.issubdtype(current.dtype, jnp.floating):
            return decay * average + (1 - decay) * current
        return current

    return jax.tree.map(mix, average_state, model_state)


def predict_step(model_graph: nnx.GraphDef, model_state: nnx.State, images: jax.Array) -> jax.Array:
    """Normalised keypoints (B, 68, 2) from an eval-mode graph."""
    return nnx.merge(model_graph, model_state)(to_input(images))


class Trainer:
    """Holds the model and optimizer as (graph, state) pairs and the jitted steps."""

    def __init__(self, config: Config, mesh: jax.sharding.Mesh, steps_per_epoch: int = 1, num_sources: int = 1,
                 start_offsets: np.ndarray | None = None):
        """`start_offsets` (num_sources - 1, 68, 2): the other data sets' convention offsets
        to start from (initial_markup_offsets); zeros without."""
        self.config = config
        self.mesh = mesh
        self.data_sharding = NamedSharding(mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        model = initial_model(config)
        if config.heatmap_loss_weight and not hasattr(model, "heatmaps"):
            raise TrainingError(f"heatmap_loss_weight needs a network with heatmaps; {config.network!r} has none")
        set_compute_dtype(model, config.compute_dtype)
        if num_sources > 1:
            model = WithConventions(model, num_sources)
            if start_offsets is not None:
                model.offsets.set_value(jnp.asarray(start_offsets, jnp.float32))
        optimizer = nnx.Optimizer(model, make_optimizer(config, steps_per_epoch), wrt=nnx.Param)
        model.eval()
        self.eval_graph = nnx.graphdef(model)
        model.train()
        self.model_graph, model_state = nnx.split(model)
        self.optimizer_graph, optimizer_state = nnx.split(optimizer)
        self.model_state = self.replicate(model_state)
        self.optimizer_state = self.replicate(optimizer_state)
        # The weights served and validated, with `ema_decay`: their moving average.
        self.average_state = self.replicate(model_state) if config.ema_decay else None
        self._average_step = jax.jit(average_step, donate_argnums=0)
        self._train_step = jax.jit(train_step, static_argnums=(0, 1, 2), donate_argnums=(3, 4),
                                   static_argnames=("heatmap_weight", "heatmap_sigma"))
        self._predict_step = jax.jit(predict_step, static_argnums=0)

    def replicate(self, tree: Any) -> Any:
        """Host values -> the same value on every device of every process (device_put
        reaches only this process's devices)."""
        def put(leaf: Any) -> jax.Array:
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                data = jax.make_array_from_process_local_data(self.replicated, np.asarray(jax.random.key_data(leaf)))
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
            return jax.make_array_from_process_local_data(self.replicated, np.asarray(leaf))

        return jax.tree.map(put, tree)

    def global_batch(self, array: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(self.data_sharding, array)

    def step(self, images: np.ndarray, keypoints: np.ndarray, sources: np.ndarray | None = None,
             flipped: np.ndarray | None = None) -> jax.Array:
        sources = np.zeros(len(images), np.int32) if sources is None else sources.astype(np.int32)
        flipped = np.zeros(len(images), bool) if flipped is None else flipped.astype(bool)
        self.model_state, self.optimizer_state, loss = self._train_step(
            self.model_graph,
            self.optimizer_graph,
            self.config.loss,
            self.model_state,
            self.optimizer_state,
            self.global_batch(images),
            self.global_batch(keypoints),
            self.global_batch(sources),
            self.global_batch(flipped),
            heatmap_weight=self.config.heatmap_loss_weight,
            heatmap_sigma=self.config.heatmap_sigma,
        )
        if self.average_state is not None:
            self.average_state = self._average_step(self.average_state, self.model_state,
                                                    jnp.float32(self.config.ema_decay))
        return loss

    @property
    def served_state(self) -> nnx.State:
        """The weights that predict, validate and are saved: the average where there is one."""
        return self.model_state if self.average_state is None else self.average_state

    def as_trained(self) -> Trainer:
        """This trainer seen without its moving average (the same arrays; for validating
        the trained weights beside the average)."""
        trained = copy.copy(self)
        trained.average_state = None
        return trained

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predictions for a whole batch that every process holds; each computes its share."""
        local = len(images) // jax.process_count()
        mine = images[jax.process_index() * local : (jax.process_index() + 1) * local]
        predictions = self._predict_step(self.eval_graph, self.served_state, self.global_batch(mine))
        return np.asarray(multihost_utils.process_allgather(predictions, tiled=True))

    def model(self) -> nnx.Module:
        """The current network (without convention offsets) as an eval-mode module on the host."""
        model = nnx.merge(self.eval_graph, jax.device_get(self.served_state))
        return model.network if isinstance(model, WithConventions) else model

    def convention_offsets(self) -> np.ndarray:
        """(num_sources, 68, 2) learnt offsets from the served mark-up to each data set's; zeros for one."""
        model = nnx.merge(self.eval_graph, jax.device_get(self.served_state))
        if isinstance(model, WithConventions):
            return np.asarray(model.all_offsets())
        return np.zeros((1, NUM_KEYPOINTS, 2))

    # Resumable state: model and optimizer (RNG counters included), and the moving
    # average where there is one, in one file.
    def _resumable(self) -> tuple[nnx.State, ...]:
        states = (self.model_state, self.optimizer_state)
        return states if self.average_state is None else (*states, self.average_state)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return checkpoint.tree_to_arrays(jax.device_get(self._resumable()))

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        states = [self.replicate(state) for state in checkpoint.arrays_to_tree(self._resumable(), arrays)]
        self.model_state, self.optimizer_state = states[:2]
        if self.average_state is not None:
            self.average_state = states[2]


def initial_model(config: Config) -> nnx.Module:
    """The recipe's network, freshly initialised or, with `init_from`, loaded from those
    weights. Weights of another network (heatmap's for heatmap56) fill every tensor of
    the same name, which must then have the same shape; the rest stay freshly
    initialised, and the log names them."""
    if config.init_from is None:
        return create_model(config.network, seed=config.seed)
    from jaxkp.weights import resolve_weights

    try:
        model, saved = checkpoint.load_weights(resolve_weights(config.init_from))
    except checkpoint.WeightsError as error:
        raise TrainingError(f"cannot start from {config.init_from}: {error}") from None
    if saved["network"] != config.network:
        source, model = model, create_model(config.network, seed=config.seed)
        new, unused = load_shared_tensors(model, checkpoint.model_arrays(source),
                                          f"{config.init_from} ({saved['network']!r})")
        log(f"{config.network!r} started from the {saved['network']!r} network in {config.init_from}: "
            f"freshly initialised: {', '.join(new) or 'none'}" + (f"; not used: {', '.join(unused)}" if unused else ""))
    model.train()
    return model


def initial_markup_offsets(config: Config, sources: list[DataSource]) -> np.ndarray | None:
    """With `init_from`, the convention offsets its run learnt for this recipe's other data
    sets (num_sources - 1, 68, 2), so a run continued from another starts in their
    mark-ups, as a moving average of its weights must (else they restart at zero, and the
    average lags behind while they are relearnt). None where it served another mark-up or
    learnt no offset for one of them."""
    if config.init_from is None or len(sources) < 2:
        return None
    from jaxkp.weights import resolve_weights

    saved = checkpoint.read_config(resolve_weights(config.init_from))
    known = saved.get("markup_offsets", {})
    if saved.get("markup") != sources[0].name or any(source.name not in known for source in sources[1:]):
        return None
    return np.array([known[source.name] for source in sources[1:]], np.float32)


def load_shared_tensors(model: nnx.Module, arrays: dict[str, np.ndarray], source: str) -> tuple[list[str], list[str]]:
    """Copies into `model` each of `arrays` (checkpoint.model_arrays names) that it has;
    returns the model's tensors that were not there (left as they were) and the arrays
    the model has no tensor for. A tensor of another shape is an error, as is sharing none."""
    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    variables = {".".join(map(str, path)): variable for path, variable in nnx.to_flat_state(state)}
    new = [name for name in variables if name not in arrays]
    if len(new) == len(variables):
        raise TrainingError(f"cannot start from {source}: it shares no tensor with the recipe's network")
    for name, variable in variables.items():
        if name in arrays:
            value = variable.get_value()
            if arrays[name].shape != value.shape:
                raise TrainingError(f"cannot start from {source}: tensor {name} has shape {arrays[name].shape}, "
                                    f"the recipe's network needs {value.shape}")
            variable.set_value(jnp.asarray(arrays[name], dtype=value.dtype))
    nnx.update(model, state)
    return new, sorted(set(arrays) - set(variables))


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def set_compute_dtype(model: nnx.Module, name: str) -> None:
    """Makes every layer compute in `name` while its parameters stay float32 (each
    NNX layer casts its inputs and parameters to its `dtype`)."""
    if name not in COMPUTE_DTYPES:
        raise TrainingError(f"unknown compute_dtype {name!r}; choose one of {sorted(COMPUTE_DTYPES)}")
    for _, module in nnx.iter_modules(model):
        if isinstance(module, (nnx.Conv, nnx.Linear, nnx.BatchNorm)):
            module.dtype = COMPUTE_DTYPES[name]


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device of every process, for data parallelism."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def evaluate(trainer: Trainer, dataset: data.Dataset, batch_size: int, framing: str = "whole-image",
             crop: tuple[float, float, float, float] | None = None, markup_offset: np.ndarray | None = None,
             ) -> tuple[dict[str, float], np.ndarray]:
    """Validation metrics (MSE in normalised units, NME etc. in pixels) and pixel predictions;
    with `markup_offset` (normalised units), also the NME of the predictions moved by it,
    under "own_markup/" (a data set's own mark-up, for a network that learnt several)."""
    predicted, moved, squared_errors = [], [], []
    for batch, valid in data.eval_batches(dataset, batch_size, framing, crop):
        normalised = trainer.predict(batch.images)[:valid]
        squared_errors.append(np.mean((normalised - batch.keypoints[:valid]) ** 2, axis=(1, 2)))
        for points, matrix in zip(normalised, batch.matrices[:valid]):
            predicted.append(geometry.keypoints_to_image(points, matrix))
            if markup_offset is not None:
                moved.append(geometry.keypoints_to_image(points + markup_offset, matrix))
    predicted = np.stack(predicted)
    summary = {"val_loss": float(np.concatenate(squared_errors).mean()),
               **metrics.summarize(predicted, dataset.keypoints)}
    if moved:
        summary.update({f"own_markup/{k}": v for k, v in metrics.summarize(np.stack(moved), dataset.keypoints).items()
                        if k.startswith("nme")})
    return summary, predicted


def epoch_batches(config: Config, dataset: data.Dataset, rng: np.random.Generator, **sharding: Any
                  ) -> Iterator[data.Batch]:
    """One epoch of training batches: the reference's random crop, or the recipe's
    augmentation (`sharding`: this process's shard and the workers' map, see
    data.shuffled_batches)."""
    if config.framing == "whole-image":
        return data.train_batches(dataset, config.batch_size, rng, config.crop_min_fraction, **sharding)
    return data.augmented_batches(dataset, config.batch_size, rng, config.augmentation or data.Augmentation(),
                                  config.crop, **sharding)


def read_metrics(workdir: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    path = workdir / METRICS_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if record["epoch"] <= up_to_epoch]


def data_sources(config: Config, data_dirs: list[Path]) -> list[DataSource]:
    """The recipe's data set for each folder, in the recipe's order (its first is served)."""
    if not config.datasets:
        return [DataSource(Path(d).name) for d in data_dirs]
    by_name = {Path(d).name: d for d in data_dirs}
    wanted = [source.name for source in config.datasets]
    if sorted(by_name) != sorted(wanted):
        raise TrainingError(f"this recipe trains on folders named {', '.join(wanted)}; "
                            f"got {', '.join(sorted(by_name)) or 'none'}")
    return list(config.datasets)


def load_sources(config: Config, data_dirs: list[Path]) -> tuple[list[DataSource], data.Dataset, data.Dataset]:
    """Each data set loaded, split (by person or photo, seeded) and, for recipes that
    frame by the detector, given its Haar boxes; then the training parts and the
    validation parts joined, each example tagged with its data set."""
    sources = data_sources(config, data_dirs)
    by_name = {Path(d).name: Path(d) for d in data_dirs}
    train_parts, val_parts = [], []
    for source in sources:
        dataset = data.load_dataset(by_name[source.name], "training", limit=config.max_images)
        train_idx, val_idx = data.split_by_person(dataset.names, config.val_fraction, config.seed, source.holdout)
        if config.framing == "haar-box":
            start = time.perf_counter()
            dataset.face_boxes = nearest_face_boxes(FaceDetector(TRAINING_SOURCES), dataset.images, dataset.keypoints)
            log(f"{source.name}: Haar boxes on {np.isfinite(dataset.face_boxes[:, 0]).mean():.1%} of the images "
                f"in {time.perf_counter() - start:.0f} s; the rest are framed from their keypoints")
        log(f"{source.name}: {len(train_idx)} training / {len(val_idx)} validation images, "
            f"held out by {source.holdout}")
        train_parts.append(dataset.subset(train_idx))
        val_parts.append(dataset.subset(val_idx))
    return sources, data.Dataset.concatenate(train_parts), data.Dataset.concatenate(val_parts)


def epoch_subset(dataset: data.Dataset, sources: list[DataSource], rng: np.random.Generator) -> np.ndarray:
    """The examples (indices into `dataset`) of one epoch: each data set's drawn
    `sampling_weight` times (a fraction draws that share of it at random)."""
    ids = dataset.source_ids()
    chosen = []
    for index, source in enumerate(sources):
        members = np.flatnonzero(ids == index)
        whole, fraction = divmod(source.sampling_weight, 1.0)
        chosen += [members] * int(whole)
        if fraction:
            chosen.append(rng.permutation(members)[: int(round(fraction * len(members)))])
    return np.concatenate(chosen)


def evaluate_sources(trainer: Trainer, val_set: data.Dataset, sources: list[DataSource], batch_size: int,
                     framing: str, crop: tuple[float, float, float, float] | None) -> dict[str, float]:
    """Validation figures: the first data set's under plain names, and every data set's
    under `<name>/`, in the served mark-up and, for the others, in their own
    (`<name>/own_markup/`, the served output plus the learnt convention offset)."""
    ids = val_set.source_ids()
    offsets = trainer.convention_offsets()
    summary: dict[str, float] = {}
    for index, source in enumerate(sources):
        part = val_set.subset(np.flatnonzero(ids == index))
        if not len(part):
            continue
        figures, _ = evaluate(trainer, part, batch_size, framing, crop, offsets[index] if index > 0 else None)
        if index == 0:
            summary.update(figures)
        if len(sources) == 1:
            break
        summary.update({f"{source.name}/{k}": v for k, v in figures.items()})
    return summary


def train_and_evaluate(config: Config, data_dirs: Path | str | list[Path | str], workdir: Path | str,
                       input_workers: int = 1, worker_kind: str = "process") -> list[dict[str, Any]]:
    """Trains `config` on the data in `data_dirs`, resuming from `workdir` if a run is there.

    After each epoch the workdir gets model.safetensors + config.json (the
    export), train_state.safetensors (to resume), metrics.jsonl and
    loss_curve.png. Returns the per-epoch metric records. Each process makes only
    its share of every global batch, over `input_workers` workers (processes, or
    threads: `worker_kind`); only process 0 writes the workdir.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dirs = [Path(d) for d in (data_dirs if isinstance(data_dirs, (list, tuple)) else [data_dirs])]
    num_devices = jax.device_count()
    if config.batch_size % num_devices:
        raise TrainingError(f"batch size {config.batch_size} is not a multiple of the {num_devices} devices")
    eval_batch_size = -(-config.eval_batch_size // num_devices) * num_devices

    sources, train_set, val_set = load_sources(config, data_dirs)
    if len(train_set) < config.batch_size:
        raise TrainingError(f"{len(train_set)} training images is fewer than one batch of {config.batch_size}")
    log(f"{len(train_set)} training / {len(val_set)} validation images, {num_devices} device(s)")

    steps = len(epoch_subset(train_set, sources, np.random.default_rng(0))) // config.batch_size
    trainer = Trainer(config, make_mesh(), steps, num_sources=len(sources),
                      start_offsets=initial_markup_offsets(config, sources))
    start_epoch = 0
    state_path = workdir / TRAIN_STATE_FILE
    if state_path.exists():
        with safe_open(state_path, "np") as saved:
            saved_meta = saved.metadata()
        saved_config = Config.from_dict(json.loads(saved_meta["train_config"]))
        if saved_config.replace(epochs=config.epochs) != config:
            raise TrainingError(f"{workdir} holds a run with another config; pick a new --workdir")
        trainer.restore(load_file(state_path))
        start_epoch = int(saved_meta["epochs_done"])
        log(f"resuming from {state_path} after epoch {start_epoch}")
    records = read_metrics(workdir, start_epoch)

    process_index, process_count = jax.process_index(), jax.process_count()
    workers = data.input_workers(train_set, input_workers, worker_kind)
    try:
        return run_epochs(config, trainer, train_set, val_set, sources, workdir, start_epoch, records, steps,
                          eval_batch_size, {"shard": (process_index, process_count), "workers": workers})
    finally:
        if workers:
            workers.close()


def run_epochs(config: Config, trainer: Trainer, train_set: data.Dataset, val_set: data.Dataset,
               sources: list[DataSource], workdir: Path, start_epoch: int, records: list[dict[str, Any]], steps: int,
               eval_batch_size: int, sharding: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs after `start_epoch`: train, validate, save (process 0); returns all records."""
    process_index = jax.process_index()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        # A fresh generator per epoch makes the data order independent of resumes.
        rng = np.random.default_rng([config.seed, epoch])
        indices = epoch_subset(train_set, sources, rng)
        batches = data.prefetch(epoch_batches(config, train_set, rng, indices=indices, **sharding))
        losses = []
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="step", file=sys.stderr,
                  disable=process_index != 0, dynamic_ncols=True) as progress:
            for batch in batches:
                losses.append(trainer.step(batch.images, batch.keypoints, batch.sources, batch.flipped))
                if len(losses) % 10 == 0 or len(losses) == steps:
                    recent = float(np.mean(jax.device_get(losses[-10:])))
                    if not np.isfinite(recent):
                        raise TrainingError(
                            f"loss became {recent} in epoch {epoch}; stopped. The last good checkpoint "
                            f"(epoch {start_epoch if not records else records[-1]['epoch']}) is kept in {workdir}"
                        )
                    rate = len(losses) * config.batch_size / (time.perf_counter() - start)
                    progress.set_postfix(loss=f"{recent:.4f}", img_s=f"{rate:.1f}")
                progress.update(1)
        train_loss = float(np.mean(jax.device_get(losses)))
        train_seconds = time.perf_counter() - start
        if not np.isfinite(train_loss):
            raise TrainingError(f"loss became {train_loss} in epoch {epoch}; stopped, "
                                f"last good checkpoint kept in {workdir}")
        record = {"epoch": epoch, "train_loss": train_loss, "train_seconds": round(train_seconds, 2),
                  "images_per_second": round(steps * config.batch_size / train_seconds, 1)}
        if len(val_set):
            record.update(evaluate_sources(trainer, val_set, sources, eval_batch_size, config.framing, config.crop))
            if trainer.average_state is not None:
                trained = evaluate_sources(trainer.as_trained(), val_set, sources, eval_batch_size, config.framing,
                                           config.crop)
                record.update({f"trained/{k}": v for k, v in trained.items() if "nme_mean" in k})
        records.append(record)
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if process_index == 0:
            save_epoch(trainer, config, workdir, epoch, records, sources)
    return records


def save_epoch(trainer: Trainer, config: Config, workdir: Path, epoch: int, records: list[dict[str, Any]],
               sources: list[DataSource] | None = None) -> None:
    """Writes the epoch's files, each atomically. train_state.safetensors goes last:
    resuming reads only it (its metadata carries the epoch count), so once it
    exists the other files do too, and a kill between two writes only makes the
    same command redo that epoch."""
    extra: dict[str, Any] = {} if config.crop is None else {"crop": list(config.crop)}
    if sources and len(sources) > 1:
        # The network outputs the first data set's mark-up; these offsets (normalised
        # input units, added to the output) give each data set's own.
        extra["markup"] = sources[0].name
        extra["markup_offsets"] = {source.name: np.round(offset, 5).tolist()
                                   for source, offset in zip(sources[1:], trainer.convention_offsets()[1:])}
    model_config = checkpoint.model_config(
        config.network, epochs_done=epoch, train_config=config.to_dict(), validation=records[-1], **extra)
    checkpoint.save_weights(trainer.model(), model_config, workdir)
    checkpoint.write_atomic(workdir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records).encode())
    write_loss_curve(records, workdir / "loss_curve.png", config.loss)
    meta = {"epochs_done": str(epoch), "train_config": json.dumps(config.to_dict())}
    checkpoint.write_atomic(workdir / TRAIN_STATE_FILE, save(trainer.state_arrays(), metadata=meta))


def log(message: str) -> None:
    if jax.process_index() == 0:
        tqdm.write(message, file=sys.stderr)
