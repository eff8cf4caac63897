import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxkp.geometry import denormalize_keypoints
from jaxkp.model import ReferenceNet, _pool_3x3, count_params, create_model, max_pool_3x3, soft_argmax


def test_reference_net_shapes_and_parameter_count():
    model = create_model("reference")
    assert count_params(model) == 3_375_880
    model.eval()
    x = jnp.zeros((2, 224, 224, 1))
    x = model.conv1(x)
    assert x.shape == (2, 220, 220, 32)
    x = max_pool_3x3(x)
    assert x.shape == (2, 73, 73, 32)
    x = model.conv2(x)
    assert x.shape == (2, 71, 71, 64)
    x = max_pool_3x3(x)
    assert x.shape == (2, 23, 23, 64)
    x = model.conv3(x)
    assert x.shape == (2, 21, 21, 128)
    x = max_pool_3x3(x)
    assert x.shape == (2, 7, 7, 128)
    assert x.reshape(2, -1).shape == (2, 6272)
    assert model.fc1(x.reshape(2, -1)).shape == (2, 512)
    assert model(jnp.zeros((2, 224, 224, 1))).shape == (2, 68, 2)


def test_conv_init_is_untruncated_kaiming_normal():
    kernel = np.asarray(create_model("reference", seed=3).conv2.kernel.get_value())
    fan_in = 3 * 3 * 32
    assert abs(kernel.std() - np.sqrt(2.0 / fan_in)) < 0.01 * np.sqrt(2.0 / fan_in) * 10
    # A truncated normal never reaches 2 standard deviations; an untruncated one often does.
    assert np.abs(kernel).max() > 2.5 * np.sqrt(2.0 / fan_in)


def test_dropout_and_batchnorm_differ_between_train_and_eval():
    model = create_model("reference")
    images = jax.random.uniform(jax.random.key(0), (4, 224, 224, 1), minval=-1, maxval=1)
    model.eval()
    first, second = model(images), model(images)
    np.testing.assert_array_equal(first, second)
    mean_before = np.asarray(model.bn_fc1.mean.get_value()).copy()
    model.train()
    train_a, train_b = model(images), model(images)
    assert not np.allclose(train_a, train_b)  # fresh dropout masks
    assert not np.allclose(mean_before, model.bn_fc1.mean.get_value())  # running stats moved
    model.eval()
    assert not np.allclose(first, model(images))


def test_pool_gradient_matches_autodiff_of_plain_max():
    x = jax.random.normal(jax.random.key(1), (2, 11, 10, 3))  # not multiples of 3: floor mode
    weights = jax.random.normal(jax.random.key(2), (2, 3, 3, 3))
    ours = jax.grad(lambda x: jnp.sum(max_pool_3x3(x) * weights))(x)
    plain = jax.grad(lambda x: jnp.sum(_pool_3x3(x) * weights))(x)
    np.testing.assert_allclose(ours, plain)
    windowed = nnx.max_pool(x, (3, 3), strides=(3, 3))
    np.testing.assert_allclose(max_pool_3x3(x), windowed)


def test_networks_are_registered_by_name():
    assert isinstance(create_model("reference"), ReferenceNet)
    try:
        create_model("nope")
    except ValueError as error:
        assert "reference" in str(error)
    else:
        raise AssertionError("unknown network accepted")


@pytest.mark.parametrize("network", ["compact", "residual", "heatmap", "heatmap56", "heatmap-deep"])
def test_variant_shapes_and_weights_fit_a_space(tmp_path, network):
    from jaxkp import checkpoint

    model = create_model(network)
    model.eval()
    assert model(jnp.zeros((3, 224, 224, 1))).shape == (3, 68, 2)
    checkpoint.save_weights(model, checkpoint.model_config(network), tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size < 10_000_000
    loaded, config = checkpoint.load_weights(tmp_path)
    assert config["network"] == network
    images = jax.random.uniform(jax.random.key(0), (2, 224, 224, 1), minval=-1, maxval=1)
    np.testing.assert_allclose(loaded(images), model(images), atol=2e-2)


def test_soft_argmax_reads_a_peak_as_its_cell_centre_in_input_pixels():
    logits = np.full((1, 28, 28, 3), -1e4, np.float32)
    logits[0, 5, 20, 0] = 0.0  # row 5, column 20: one sharp peak
    logits[0, 0, 0, 1] = 0.0  # the top-left cell
    logits[0, 10, 3, 2] = logits[0, 10, 4, 2] = 0.0  # two equal peaks side by side
    pixels = denormalize_keypoints(np.asarray(soft_argmax(jnp.asarray(logits)))[0])
    # A 28x28 map over the 224-pixel input: cell i spans pixels [8i, 8i + 8).
    np.testing.assert_allclose(pixels, [[20.5 * 8, 5.5 * 8], [4.0, 4.0], [4.0 * 8, 10.5 * 8]], atol=1e-3)
    # Flat logits put every point at the centre.
    np.testing.assert_allclose(soft_argmax(jnp.zeros((2, 28, 28, 68))), 0.0, atol=1e-6)


def test_wing_loss_is_log_near_zero_linear_beyond_and_continuous():
    from train.train import WING_CURVATURE, WING_WIDTH, keypoint_loss

    def wing(pixels: float) -> float:
        return float(keypoint_loss("wing", jnp.array([pixels / 112.0]), jnp.array([0.0])))

    assert wing(0.0) == 0.0
    np.testing.assert_allclose(wing(1.0), WING_WIDTH * np.log1p(1.0 / WING_CURVATURE), rtol=1e-5)
    np.testing.assert_allclose(wing(WING_WIDTH - 1e-3), wing(WING_WIDTH + 1e-3), atol=1e-2)
    np.testing.assert_allclose(wing(40.0) - wing(30.0), 10.0, rtol=1e-4)  # slope 1 in the linear part
    assert float(keypoint_loss("l1", jnp.array([0.5, -0.5]), jnp.zeros(2))) == 0.5


def test_heatmap56_reads_out_what_heatmap_does_at_twice_the_resolution():
    """56x56 heatmaps, the same kinds of outputs as HeatmapNet's (the face score and the
    uncertainty read the evidence and the spread unchanged), and every HeatmapNet tensor
    under the same name and shape, so HeatmapNet weights fill them; with those weights
    and the new level as initialised (its last conv zero) the keypoints are HeatmapNet's."""
    from jaxkp import checkpoint

    coarse, fine = create_model("heatmap", seed=1), create_model("heatmap56", seed=2)
    coarse.eval()
    fine.eval()
    images = jax.random.uniform(jax.random.key(0), (2, 224, 224, 1), minval=-1, maxval=1)
    logits, pooled_map = fine.heatmaps(images)
    assert logits.shape == (2, 56, 56, 68) and pooled_map.shape == (2, 7, 7, 256)
    points, evidence, spread = fine.readout(images)
    coarse_points, coarse_evidence, _ = coarse.readout(images)
    assert points.shape == (2, 68, 2) and spread.shape == (2, 68)
    assert evidence.shape == coarse_evidence.shape == (2, 68 + 256)
    keypoints, same_evidence = fine.keypoints_and_evidence(images)
    np.testing.assert_array_equal(keypoints, points)
    np.testing.assert_array_equal(same_evidence, evidence)

    shared = checkpoint.model_arrays(coarse)
    state = nnx.state(fine, (nnx.Param, nnx.BatchStat))
    for path, variable in nnx.to_flat_state(state):
        name = ".".join(map(str, path))
        if name in shared:
            assert shared[name].shape == variable.get_value().shape, name
            variable.set_value(jnp.asarray(shared[name]))
    assert set(shared) <= set(checkpoint.model_arrays(fine))
    nnx.update(fine, state)
    np.testing.assert_allclose(fine(images), coarse_points, atol=1e-6)


def test_heatmap_deep_started_from_heatmap_weights_gives_their_keypoints_then_can_change_them():
    """heatmap-deep holds every HeatmapNet tensor under its name and shape; its added
    blocks start as the identity, so with HeatmapNet weights it reads what HeatmapNet
    reads. The added blocks are real: once their last scale is not zero, the points move."""
    from jaxkp import checkpoint
    from train.train import load_shared_tensors

    base, deep = create_model("heatmap", seed=1), create_model("heatmap-deep", seed=2)
    new, unused = load_shared_tensors(deep, checkpoint.model_arrays(base), "heatmap")
    assert not unused and new and all(name.startswith(("stages.1.2.", "stages.2.3.", "refine.0.")) for name in new)
    base.eval()
    deep.eval()
    images = jax.random.uniform(jax.random.key(0), (2, 224, 224, 1), minval=-1, maxval=1)
    base_points, base_evidence, base_spread = base.readout(images)
    points, evidence, spread = deep.readout(images)
    np.testing.assert_allclose(points, base_points, atol=1e-5)
    np.testing.assert_allclose(spread, base_spread, atol=1e-5)
    np.testing.assert_allclose(evidence, base_evidence, atol=1e-4)
    deep.refine[0].bn.scale.set_value(jnp.ones_like(deep.refine[0].bn.scale.get_value()))
    assert float(jnp.abs(deep(images) - base_points).max()) > 1e-3
