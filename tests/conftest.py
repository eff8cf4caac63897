from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_server import free_port  # noqa: E402
from synthetic import write_dataset  # noqa: E402

# The real data sits beside the checkout (../shared/data/...) unless JAXKP_DATA_DIR says otherwise.
REAL_DATA = Path(os.environ.get("JAXKP_DATA_DIR", ROOT.parent / "shared" / "data" / "youtube-faces-keypoints"))


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

