"""Which weights serve: one setting for the app, the CLI and the Python API.

The setting (flag `--weights` or environment variable JAXKP_WEIGHTS) is a
local folder holding model.safetensors + config.json, or a Hugging Face Hub
repo id with an optional revision (`user/name` or `user/name@revision`).
Unset, the bundled weights serve: the repository's `checkpoints/` folder in a
checkout, which pip installs inside the package as `jaxkp/checkpoints/`. Hub
weights land in the standard huggingface_hub cache; offline, a cached copy
serves, and with no cached copy the bundled weights serve and one log line
says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from jaxkp.checkpoint import CONFIG_FILE, WEIGHTS_FILE, WeightsError, load_weights
from jaxkp.gate import GATE_FILE, ProposalGate
from jaxkp.inference import KeypointModel

ENV_VAR = "JAXKP_WEIGHTS"


def bundled_weights() -> Path:
    """The bundled weights' folder: inside the installed package (pyproject.toml maps the
    repository's checkpoints/ onto jaxkp/checkpoints/), else beside the package in a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "checkpoints"
    return installed if installed.is_dir() else package.parent / "checkpoints"


BUNDLED_WEIGHTS = bundled_weights()
HUB_FILES = [WEIGHTS_FILE, CONFIG_FILE, GATE_FILE]  # the gate where the weights have one

log = logging.getLogger("jaxkp")


def parse_hub_id(source: str) -> tuple[str, str | None]:
    repo_id, _, revision = source.partition("@")
    return repo_id, revision or None


def pull_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Downloads (or finds in the cache) a Hub checkpoint; returns its local folder."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES))


def resolve_weights(source: str | Path | None = None) -> Path:
    """The local folder for a weights setting (see module doc)."""
    source = source or os.environ.get(ENV_VAR) or None
    if source is None:
        return BUNDLED_WEIGHTS
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise WeightsError(f"weights must be a folder with {WEIGHTS_FILE} and {CONFIG_FILE}, not a file: {path}")
        return path
    source = str(source)
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise WeightsError(f"weights {source!r}: no such folder, and not a Hub repo id (user/name[@revision])")
    repo_id, revision = parse_hub_id(source)
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return pull_from_hub(repo_id, revision)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise WeightsError(f"Hub weights {source!r} not found: {error}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        log.warning("jaxkp: cannot reach the Hub for %s and no cached copy (%s); serving the bundled weights in %s",
                    source, type(error).__name__, BUNDLED_WEIGHTS)
        return BUNDLED_WEIGHTS


def load_model(source: str | Path | None = None, markup: str | None = None) -> KeypointModel:
    """A ready-to-call network for a weights setting (see module doc), answering in its
    own mark-up or, for weights that learnt several, in `markup`'s."""
    folder = resolve_weights(source)
    model, config = load_weights(folder)
    try:
        keypoint_model = KeypointModel(model, config, markup)
    except ValueError as error:
        raise WeightsError(str(error)) from None
    if config.get("face_gate"):
        keypoint_model.gate = ProposalGate.load(folder, config["face_gate"])
    return keypoint_model
