"""Push and pull through real huggingface_hub code against a local Hub server.

Each step that speaks to the Hub runs the project's own commands in a subprocess,
because huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE at import.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hub_server import HubServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_local_test_token"

# For each weights source after the photo: the folder the weights came from, and a hash
# of the network's raw outputs on the photo (one process, one environment, many sources).
PREDICT = """
import hashlib, sys, numpy as np, cv2
from jaxkp.weights import resolve_weights, load_model
from jaxkp.inference import load_photo
gray = cv2.cvtColor(load_photo(sys.argv[1]), cv2.COLOR_RGB2GRAY)
for source in sys.argv[2:]:
    folder = resolve_weights(source)
    model = load_model(folder)
    points = model.read_faces(gray, np.array([[200.0, 80.0, 100.0, 100.0]])).keypoints
    print(folder)
    print(hashlib.sha256(np.ascontiguousarray(points).tobytes()).hexdigest())
"""


def run(args, env, timeout=300):
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return result


def predict(env: dict, *sources: str) -> tuple[list[tuple[str, str]], str]:
    """[(folder, digest) per source], and the process's log."""
    from photos import ASTRONAUT

    result = run([sys.executable, "-c", PREDICT, str(ASTRONAUT), *sources], env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()[-2 * len(sources):]
    return list(zip(lines[::2], lines[1::2])), result.stderr


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def hub_environment(hub: HubServer, home: Path) -> dict[str, str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(home),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("JAXKP_WEIGHTS", None)
    env.pop("HF_HUB_OFFLINE", None)
    return env


@pytest.fixture(scope="module")
def hub():
    with HubServer(TOKEN) as server:
        yield server


@pytest.fixture
def hub_env(hub, tmp_path):
    return hub_environment(hub, tmp_path / "hf_home")


@pytest.fixture(scope="module")
def pushed_run(hub, synthetic_data_dir, tmp_path_factory):
    """One epoch of the tiny recipe, trained and pushed by the training command itself
    (once for the module): (its workdir, a copy of it as pushed, the repo, the command's
    output). The round trip trains on in the workdir; the copy stays as it was."""
    folder = tmp_path_factory.mktemp("pushed_run")
    workdir, repo = folder / "run", f"user/jaxkp-{uuid.uuid4().hex[:8]}"
    result = run([sys.executable, "-m", "train", "--config", "tiny", "--epochs", "1", "--data-dir",
                  str(synthetic_data_dir), "--workdir", str(workdir), "--push-to-hub", repo],
                 hub_environment(hub, folder / "hf_home"))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, shutil.copytree(workdir, folder / "as_pushed"), repo, result


@pytest.mark.slow
def test_train_push_pull_round_trip(hub, hub_env, pushed_run, synthetic_data_dir, tmp_path):
    from train.config import CONFIGS
    from train.train import train_and_evaluate

    workdir, as_pushed, repo, result = pushed_run
    first_revision = result.stdout.split("at revision ")[1].split()[0]
    uploaded = hub.hub.repos[repo].commits[first_revision]
    assert {"model.safetensors", "config.json", "metrics.jsonl", "loss_curve.png", "README.md"} <= set(uploaded)
    card = uploaded["README.md"].decode()
    assert "library_name: jaxkp" in card and "pipeline_tag: keypoint-detection" in card
    assert "Wolf, Lior" in card and "nme_mean" not in card and "NME, mean" in card
    assert uploaded["model.safetensors"] == (as_pushed / "model.safetensors").read_bytes()

    # Train on (the same run resumed for a second epoch) and push again with the standalone
    # command: a second revision.
    train_and_evaluate(CONFIGS["tiny"].replace(epochs=2), synthetic_data_dir, workdir)
    result = run([sys.executable, "-m", "train.push", str(workdir), repo], hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("at revision ")[1].split()[0] != first_revision

    # The run as first pushed and as trained on, and pulls by repo id at the first revision
    # and at the latest into a fresh cache: bitwise-identical predictions, revision by revision.
    (_, local_digest), (_, second_local_digest), (folder, first_digest), (_, latest_digest) = predict(
        hub_env, str(as_pushed), str(workdir), f"{repo}@{first_revision}", repo)[0]
    assert second_local_digest != local_digest
    assert first_digest == local_digest
    assert Path(folder).is_relative_to(Path(hub_env["HF_HOME"]))
    assert latest_digest == second_local_digest

    # Offline with a warm cache: the cached copy serves.
    offline = {**hub_env, "HF_HUB_OFFLINE": "1"}
    [(folder, digest)], log = predict(offline, repo)
    assert digest == second_local_digest and "bundled" not in log

    # Offline with a cold cache: the bundled weights serve, and one log line says so.
    cold = {**offline, "HF_HOME": str(tmp_path / "cold")}
    [(folder, _)], log = predict(cold, repo)
    assert Path(folder) == ROOT / "checkpoints"
    assert log.count("serving the bundled weights") == 1

    # No network at all (nothing listens on the endpoint), cold cache: bundled, said once.
    unreachable = {**hub_env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tmp_path / "cold2")}
    [(folder, _)], log = predict(unreachable, repo)
    assert Path(folder) == ROOT / "checkpoints" and log.count("serving the bundled weights") == 1


def test_unknown_repo_and_revision_are_named(hub, hub_env, tmp_path):
    result = run([sys.executable, "-m", "jaxkp", "predict", str(ROOT / "README.md"), "--weights", "user/nothing-here"],
                 hub_env)
    assert result.returncode == 1 and "not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_failed_pushes_say_why_and_leave_the_checkpoint_alone(hub, hub_env, pushed_run, tmp_path):
    workdir = shutil.copytree(pushed_run[1], tmp_path / "run")  # a trained run
    before = file_hashes(workdir)
    no_token = {**hub_env, "HF_TOKEN": "", "HF_HOME": str(tmp_path / "empty_home")}
    result = run([sys.executable, "-m", "train.push", str(workdir), "user/denied"], no_token)
    assert result.returncode == 1 and "no Hugging Face token" in result.stderr and "Traceback" not in result.stderr
    bad_token = {**hub_env, "HF_TOKEN": "hf_wrong"}
    result = run([sys.executable, "-m", "train.push", str(workdir), "user/denied"], bad_token)
    assert result.returncode == 1 and "rejected the token" in result.stderr and "Traceback" not in result.stderr
    result = run([sys.executable, "-m", "train.push", str(tmp_path / "nowhere"), "user/denied"], hub_env)
    assert result.returncode == 1 and "train first" in result.stderr
    assert file_hashes(workdir) == before
    assert "user/denied" not in hub.hub.repos


@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="set HF_TOKEN to run the round trip against the real Hub")
def test_round_trip_against_the_real_hub(synthetic_data_dir, tmp_path):
    from huggingface_hub import HfApi

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_ENDPOINT", None)
    user = HfApi().whoami()["name"]
    repo = f"{user}/jaxkp-test-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / "run"
    try:
        result = run([sys.executable, "-m", "train", "--config", "tiny", "--epochs", "1", "--data-dir",
                      str(synthetic_data_dir), "--workdir", str(workdir), "--push-to-hub", repo, "--private"], env)
        assert result.returncode == 0, result.stderr[-3000:]
        [(_, local_digest), (_, pulled_digest)], _ = predict(env, str(workdir), repo)
        assert pulled_digest == local_digest
    finally:
        HfApi().delete_repo(repo, missing_ok=True)
