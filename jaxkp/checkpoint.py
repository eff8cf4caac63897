"""Weights on disk: `model.safetensors` + `config.json`, never pickles.

`model.safetensors` holds the network's parameters and BatchNorm statistics
under dotted names (`conv1.kernel`, `bn2.mean`, ...); `config.json` names the
network so a loader can build it before filling it. Every write goes to a
temporary file in the same folder and is renamed into place, so a crash or
kill never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from jaxkp.model import INPUT_SIZE, NETWORKS, NUM_KEYPOINTS, create_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "jaxkp"
# fc1's float32 kernel alone is 12.8 MB and a Space refuses files over 10 MB;
# kernels of 64k elements or more are stored as float16 (relative rounding
# 5e-4) and loaded back as float32.
HALF_PRECISION_MIN_SIZE = 1 << 16


class WeightsError(ValueError):
    """Weights that cannot serve the network; the message names the problem."""


def write_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; shipped files must be readable
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def model_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm statistics as {dotted name: numpy array}."""
    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    return {".".join(map(str, path)): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(state)}


def tree_to_arrays(tree: Any) -> dict[str, np.ndarray]:
    """Any pytree (optimizer state, RNG keys too) as {path: numpy array}."""
    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arrays[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return arrays


def arrays_to_tree(template: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of tree_to_arrays, checking every leaf against the template."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths_and_leaves:
        name = jax.tree_util.keystr(path)
        if name not in arrays:
            raise WeightsError(f"missing tensor {name}")
        value = arrays[name]
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaves.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)))
            continue
        if value.shape != leaf.shape:
            raise WeightsError(f"tensor {name} has shape {value.shape}, expected {leaf.shape}")
        leaves.append(value.astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def model_config(network: str, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "network": network,
        "input_size": INPUT_SIZE,
        "num_keypoints": NUM_KEYPOINTS,
        **extra,
    }


def save_weights(model: nnx.Module, config: dict[str, Any], directory: Path | str) -> None:
    """Writes model.safetensors and config.json into `directory`."""
    directory = Path(directory)
    arrays = {
        name: value.astype(np.float16) if value.size >= HALF_PRECISION_MIN_SIZE else value
        for name, value in model_arrays(model).items()
    }
    write_atomic(directory / WEIGHTS_FILE, save(arrays, metadata={"format": FORMAT}))
    write_json(directory / CONFIG_FILE, config)


def read_config(directory: Path | str) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"no {CONFIG_FILE} in {directory}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a jaxkp config (expected \"format\": \"{FORMAT}\")")
    network = config.get("network")
    if network not in NETWORKS:
        raise WeightsError(f"{path} names network {network!r}, which jaxkp does not have (known: {sorted(NETWORKS)})")
    if config.get("input_size") != INPUT_SIZE or config.get("num_keypoints") != NUM_KEYPOINTS:
        raise WeightsError(
            f"{path} is for input {config.get('input_size')} and {config.get('num_keypoints')} keypoints; "
            f"jaxkp needs {INPUT_SIZE} and {NUM_KEYPOINTS}"
        )
    return config


def fill_module(module: nnx.Module, arrays: dict[str, np.ndarray], path: Path, what: str) -> None:
    """Sets `module`'s parameters and BatchNorm statistics from `arrays` (dotted names, as
    model_arrays writes them), read from `path`; `what` names the module in errors. Raises
    WeightsError for a tensor too many, missing, misshapen or not finite. The module's
    own values may be shapes only (built_from_arrays)."""
    state = nnx.state(module, (nnx.Param, nnx.BatchStat))
    expected = {".".join(map(str, path_tuple)): var.get_value() for path_tuple, var in nnx.to_flat_state(state)}
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise WeightsError(f"{path} has tensors {what} lacks: {', '.join(unexpected[:5])}")
    for path_tuple, var in nnx.to_flat_state(state):
        name = ".".join(map(str, path_tuple))
        if name not in arrays:
            raise WeightsError(f"{path} is missing tensor {name}")
        value = arrays[name]
        if value.shape != expected[name].shape:
            raise WeightsError(f"{path}: tensor {name} has shape {value.shape}, expected {expected[name].shape}")
        if not np.all(np.isfinite(value)):
            raise WeightsError(f"{path}: tensor {name} holds NaN or infinite values")
        var.set_value(jax.numpy.asarray(value, dtype=expected[name].dtype))
    nnx.update(module, state)


# What a weights file does not hold: dropout's random streams.
NOT_STORED = nnx.Not(nnx.Any(nnx.Param, nnx.BatchStat))


def built_from_arrays(build: Callable[[], nnx.Module], arrays: dict[str, np.ndarray], path: Path,
                      what: str) -> nnx.Module:
    """`build()`'s module holding `arrays` (see fill_module), without running its weights'
    initialisers: each is a separately compiled random draw, and building the heatmap
    network eagerly took 5.8 of the 7 s that loading its weights took, for values the file
    then replaces. The module is built as shapes only; its dropout streams, if it has any,
    are computed by one jitted build whose initialisers XLA drops as unused, so they are
    the values `build()` gives."""
    module = nnx.eval_shape(build)
    if jax.tree.leaves(nnx.state(module, NOT_STORED)):
        nnx.update(module, jax.jit(lambda: nnx.state(build(), NOT_STORED))())
    fill_module(module, arrays, path, what)
    return module


def load_weights(directory: Path | str) -> tuple[nnx.Module, dict[str, Any]]:
    """Builds the network named in config.json and fills it, in eval mode.

    Raises WeightsError naming the problem for a missing, corrupt or truncated
    file, a missing tensor, a wrong shape, or a config for another network.
    """
    directory = Path(directory)
    config = read_config(directory)
    path = directory / WEIGHTS_FILE
    try:
        arrays = load_file(path)
    except FileNotFoundError:
        raise WeightsError(f"no {WEIGHTS_FILE} in {directory}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is corrupt or truncated ({error})") from None
    model = built_from_arrays(lambda: create_model(config["network"]), arrays, path, f"the {config['network']} network")
    model.eval()
    return model, config
