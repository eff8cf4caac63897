from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_server import free_port  # noqa: E402
from synthetic import write_dataset  # noqa: E402

# The real data sits beside the checkout (../shared/data/...) unless JAXKP_DATA_DIR says otherwise.
REAL_DATA = Path(os.environ.get("JAXKP_DATA_DIR", ROOT.parent / "shared" / "data" / "youtube-faces-keypoints"))
XLA_CACHE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """One XLA compilation cache for the session, in a fresh folder: the tests and the
    processes they start (which inherit the environment) compile the same networks at the
    same shapes many times over, and a compiled program read back from the cache is the
    one XLA would compile again. The folder goes at the end, so every run starts cold.
    A JAX_COMPILATION_CACHE_DIR already set is used as it is."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="jaxkp-test-xla-cache-")
        config.stash[XLA_CACHE] = folder
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" in sys.modules:  # a plugin imported it before the environment was set
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 0)))


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(XLA_CACHE, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "training_frames_keypoints.csv").is_file():
        pytest.skip(f"real data not found at {REAL_DATA} (set JAXKP_DATA_DIR to its folder)")
    return REAL_DATA


@pytest.fixture(scope="session")
def real_300w_dir() -> Path:
    folder = REAL_DATA.parent / "ibug-300w-train"
    if not (folder / "training_frames_keypoints.csv").is_file():
        pytest.skip(f"300-W photos not found at {folder} (they sit beside the YouTube-Faces folder)")
    return folder


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_run(synthetic_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """The tiny recipe trained for three epochs on the generated data, in float32 on this
    process's one device, once for the session: (its workdir, its per-epoch records). It is
    the uninterrupted run that resuming, mixed precision and several processes are compared
    with. A test that writes into a run copies the folder first."""
    from train.config import CONFIGS
    from train.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("tiny_run")
    records = train_and_evaluate(CONFIGS["tiny"].replace(epochs=3), synthetic_data_dir, workdir)
    assert [record["epoch"] for record in records] == [1, 2, 3]
    return workdir, records


@pytest.fixture(scope="module")
def app_module():
    import app

    yield app
    app.demo.close()


@pytest.fixture(scope="module")
def server(app_module):
    port = free_port()
    app_module.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"

