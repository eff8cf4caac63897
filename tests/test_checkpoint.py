import json

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxkp import checkpoint
from jaxkp.checkpoint import WeightsError, load_weights, save_weights
from jaxkp.model import create_model
from jaxkp.weights import BUNDLED_WEIGHTS, resolve_weights


@pytest.fixture
def weights_dir(tmp_path):
    model = create_model("reference", seed=5)
    save_weights(model, checkpoint.model_config("reference"), tmp_path / "good")
    return tmp_path / "good"


def test_round_trip_keeps_every_tensor(weights_dir):
    original = checkpoint.model_arrays(create_model("reference", seed=5))
    loaded, config = load_weights(weights_dir)
    assert config["network"] == "reference"
    for name, value in checkpoint.model_arrays(loaded).items():
        tolerance = 1e-3 * np.abs(original[name]).max() if value.size >= checkpoint.HALF_PRECISION_MIN_SIZE else 0
        np.testing.assert_allclose(value, original[name], atol=tolerance, err_msg=name)
    assert (weights_dir / "model.safetensors").stat().st_size < 10_000_000


def test_loading_builds_the_network_its_initialisers_would_and_fills_it(tmp_path):
    """Loading builds the network as shapes only, so its initialisers never run: every
    variable, dropout's random streams included, must still be what a network built
    eagerly and then filled holds, and it must compute the same, in eval and train mode. (The
    reference network has dropout, so random streams to rebuild; the heatmap network none.)"""
    network = "reference"
    eager = create_model(network)
    generator = np.random.default_rng(7)
    arrays = {name: generator.normal(0, 0.05, value.shape).astype(value.dtype)
              for name, value in checkpoint.model_arrays(eager).items()}
    loaded = checkpoint.built_from_arrays(lambda: create_model(network), arrays, tmp_path, network)
    checkpoint.fill_module(eager, arrays, tmp_path, network)
    expected, got = (checkpoint.tree_to_arrays(nnx.state(m)) for m in (eager, loaded))
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name
    images = jax.random.uniform(jax.random.key(1), (2, 224, 224, 1), minval=-1, maxval=1)
    for mode in ("eval", "train"):
        getattr(eager, mode)(), getattr(loaded, mode)()
        np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(eager(images)), err_msg=mode)


def rewrite_tensors(folder, change):
    arrays = load_file(folder / "model.safetensors")
    change(arrays)
    save_file(arrays, folder / "model.safetensors")


@pytest.mark.parametrize("damage, message", [
    (lambda d: rewrite_tensors(d, lambda a: a.__setitem__("fc2.kernel", np.zeros((512, 10), np.float32))),
     "fc2.kernel has shape"),
    (lambda d: rewrite_tensors(d, lambda a: a.pop("bn2.mean")), "missing tensor bn2.mean"),
    (lambda d: rewrite_tensors(d, lambda a: a.__setitem__("head.extra", np.zeros(3, np.float32))), "lacks: head.extra"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100_000]),
     "corrupt or truncated"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "corrupt or truncated"),
    (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                           "network": "resnet50"})), "resnet50"),
    (lambda d: (d / "config.json").write_text('{"architectures": ["BertModel"]}'), "not a jaxkp config"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: rewrite_tensors(d, lambda a: a["conv1.bias"].__setitem__(0, np.nan)), "NaN"),
])
def test_bad_weights_are_refused_with_the_problem_named(weights_dir, damage, message):
    damage(weights_dir)
    with pytest.raises(WeightsError, match=message):
        load_weights(weights_dir)


def test_weights_setting_resolves_folders_and_rejects_nonsense(weights_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("JAXKP_WEIGHTS", raising=False)
    assert resolve_weights(None) == BUNDLED_WEIGHTS
    assert resolve_weights(str(weights_dir)) == weights_dir
    monkeypatch.setenv("JAXKP_WEIGHTS", str(weights_dir))
    assert resolve_weights(None) == weights_dir
    with pytest.raises(WeightsError, match="not a Hub repo id"):
        resolve_weights("no/such/folder")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(WeightsError, match="not a file"):
        resolve_weights(str(tmp_path / "file.bin"))


def test_bundled_weights_load_and_fit_a_space():
    """checkpoints/ holds the best recipe's full run; checkpoints/reference/ the reference recipe's."""
    _, best = load_weights(BUNDLED_WEIGHTS)
    _, reference = load_weights(BUNDLED_WEIGHTS / "reference")
    assert best["epochs_done"] == best["train_config"]["epochs"]
    assert reference["network"] == "reference" and reference["epochs_done"] == 35
    assert reference["train_config"]["batch_size"] == 16 and reference["train_config"]["learning_rate"] == 1e-3
    for folder in (BUNDLED_WEIGHTS, BUNDLED_WEIGHTS / "reference"):
        assert {"model.safetensors", "config.json", "metrics.jsonl", "README.md"} <= {p.name for p in folder.iterdir()}
    for path in BUNDLED_WEIGHTS.rglob("*"):
        assert path.stat().st_size < 10_000_000, path
