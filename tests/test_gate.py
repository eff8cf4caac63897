"""The proposal gate: what it reads of a proposal, its weights on disk, its training loop on
generated data, its place in the pipeline, and the shipped gate on real validation photos."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest
from flax import nnx

from jaxkp import geometry, load_pipeline
from jaxkp.checkpoint import WeightsError
from jaxkp.gate import GATE_FILE, GATE_SIZE, GateNet, ProposalGate, gate_patches
from jaxkp.inference import load_photo
from jaxkp.weights import BUNDLED_WEIGHTS
from photos import ASTRONAUT
from synthetic import draw_face
from test_detect import non_face_crops
from train import data
from train.face_gate import fit


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline()


@pytest.fixture(scope="module")
def astronaut_gray() -> np.ndarray:
    return cv2.cvtColor(load_photo(ASTRONAUT), cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("angle", [0.0, 25.0])
def test_a_gate_patch_is_the_networks_view_at_48_pixels(astronaut_gray, angle):
    """The gate reads the region (and turn) the keypoint network reads, at 48 px, from a
    shrunk copy of the photo: the full read's input shrunk to 48 px agrees with it."""
    crop = (-0.25, -0.1, 1.5, 1.5)
    big = cv2.resize(astronaut_gray, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # a 2048-px photo
    for box in (np.array([170.0, 60, 130, 130]), np.array([170.0, 60, 130, 130]) * 4):
        photo = astronaut_gray if box[2] < 200 else big
        patch = gate_patches(photo, box[None], np.array([angle]), crop)[0]
        full = geometry.warp_to_input(photo, geometry.box_framing_matrix(box, crop, angle))
        expected = cv2.resize(full, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA)
        assert patch.shape == (GATE_SIZE, GATE_SIZE) and patch.dtype == np.uint8
        difference = np.abs(patch.astype(float) - expected).mean()
        assert difference < 4 and np.corrcoef(patch.ravel(), expected.ravel())[0, 1] > 0.97
        # A framing off by a tenth of the box is far from it: the check sees framing errors.
        shifted = gate_patches(photo, (box + [box[2] / 10, 0, 0, 0])[None], np.array([angle]), crop)[0]
        assert np.abs(shifted.astype(float) - expected).mean() > 2 * difference


def test_patches_of_any_box_on_any_photo():
    """Boxes far larger than the photo, far outside it, or turned all the way: a patch each,
    never an error (a photo of one row included)."""
    rng = np.random.default_rng(1)
    for height, width in ((1, 1), (1, 900), (700, 3), (40, 40), (1500, 2000)):
        photo = rng.integers(0, 256, (height, width), dtype=np.uint8)
        boxes = np.array([[-50.0, -50, 1e6, 1e6], [0, 0, 0.5, 0.5], [1e5, -1e5, 30, 30], [0, 0, width, width]])
        patches = gate_patches(photo, boxes, np.array([0.0, 90, -170, 25]), (-0.25, -0.1, 1.5, 1.5))
        assert patches.shape == (4, GATE_SIZE, GATE_SIZE) and patches.dtype == np.uint8


def test_gate_weights_round_trip_and_bad_files_are_refused(tmp_path):
    gate = ProposalGate(GateNet(nnx.Rngs(3)), (-0.25, -0.1, 1.5, 1.5), 0.2, {"figures": {"auc": 0.9}})
    entry = gate.save(tmp_path)
    assert entry["file"] == GATE_FILE and entry["input_size"] == GATE_SIZE and entry["figures"] == {"auc": 0.9}
    patches = np.random.default_rng(0).integers(0, 256, (40, GATE_SIZE, GATE_SIZE), dtype=np.uint8)
    again = ProposalGate.load(tmp_path, json.loads(json.dumps(entry)))
    np.testing.assert_allclose(again.probabilities(patches), gate.probabilities(patches), rtol=1e-6)
    assert again.threshold == 0.2 and again.crop == gate.crop
    with pytest.raises(WeightsError, match="reads 32 px"):
        ProposalGate.load(tmp_path, {**entry, "input_size": 32})
    (tmp_path / GATE_FILE).write_bytes((tmp_path / GATE_FILE).read_bytes()[:100])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        ProposalGate.load(tmp_path, entry)
    (tmp_path / GATE_FILE).unlink()
    with pytest.raises(WeightsError, match="no gate.safetensors"):
        ProposalGate.load(tmp_path, entry)


def test_the_gate_learns_generated_faces_from_non_faces():
    """The training loop on generated data: drawn faces against noise, gradients, stripes
    and face-free textures; separated on fresh draws of both."""
    rng = np.random.default_rng(0)

    def faces(count: int) -> list[np.ndarray]:
        drawn = []
        for _ in range(count):
            image, _ = draw_face(rng, 96, 96)
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            drawn.append(cv2.resize(gray, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA))
        return drawn

    def others(count: int) -> list[np.ndarray]:
        return [cv2.resize(c, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA) for c in non_face_crops(rng, count)]

    patches = np.stack(faces(300) + others(300))
    labels = np.array([1] * 300 + [0] * 300, np.int32)
    gate = ProposalGate(fit(patches, labels, epochs=8, batch_size=64), (-0.25, -0.1, 1.5, 1.5), 0.5)
    scores = gate.probabilities(np.stack(faces(50) + others(50)))
    assert np.mean(scores[:50] >= 0.5) >= 0.9 and np.mean(scores[50:] < 0.5) >= 0.9


def test_the_pipeline_reads_only_what_the_gate_passes(pipeline, astronaut_gray):
    if pipeline.model.gate is None:
        pytest.skip("the bundled weights have no gate")
    model = pipeline.model
    ungated = dataclasses.replace(pipeline, gated=False).find_faces(astronaut_gray)
    gated = pipeline.find_faces(astronaut_gray)
    assert len(gated.proposals) <= len(ungated.proposals)
    np.testing.assert_allclose(gated.faces.boxes, ungated.faces.boxes)  # the astronaut's face passes
    original = model.gate
    closed = copy.copy(original)
    closed.threshold = 1.01  # a gate that passes nothing: no full read, no face
    try:
        model.gate = closed
        assert len(pipeline.find_faces(astronaut_gray).faces) == 0
    finally:
        model.gate = original
    assert not load_pipeline(thorough=True).gated


def test_weights_without_a_gate_read_every_proposal(tmp_path, astronaut_gray):
    for name in ("model.safetensors", "config.json"):
        shutil.copy(BUNDLED_WEIGHTS / name, tmp_path / name)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("face_gate", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    pipeline = load_pipeline(tmp_path)
    assert pipeline.model.gate is None
    found = pipeline.find_faces(astronaut_gray)
    assert len(found.proposals) == len(pipeline.detector(astronaut_gray, 32)) and len(found.faces) == 1


def test_the_shipped_gate_passes_the_validation_faces(pipeline, real_300w_dir, real_data_dir):
    """Every labelled face the ungated pipeline finds on validation photos, the gated one
    finds too (to within one face in a hundred), while it reads fewer proposals."""
    from train.evaluate import validation_part
    from train.find_faces import group_photos, match

    if pipeline.model.gate is None:
        pytest.skip("the bundled weights have no gate")
    ungated = dataclasses.replace(pipeline, gated=False)
    found = {"gated": 0, "ungated": 0}
    read = {"gated": 0, "ungated": 0}
    faces = 0
    for data_dir in (real_300w_dir, real_data_dir):
        val = validation_part(data.load_dataset(data_dir), data_dir, pipeline.model.config["train_config"])
        for photo in group_photos(val)[::6]:
            faces += len(photo.keypoints)
            for name, each in (("gated", pipeline), ("ungated", ungated)):
                result = each.find_faces(photo.image)
                found[name] += match(result.faces.boxes, photo.keypoints)
                read[name] += len(result.proposals)
    assert found["gated"] >= found["ungated"] - max(1, faces // 100)
    assert read["gated"] < read["ungated"]


def test_training_a_gate_needs_weights_with_a_face_score(tiny_run, synthetic_data_dir, capsys):
    from train.face_gate import main

    workdir, _ = tiny_run  # the reference network: no heatmaps, no face score
    assert main(["--weights", str(workdir), "--data-dir", str(synthetic_data_dir), "--dry-run"]) == 1
    assert "no face score" in capsys.readouterr().err
