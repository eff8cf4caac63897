"""The proposal gate: a glance at 48x48 before the keypoint network's full read.

The Haar cascades propose many boxes that are no face (on textured photos a
dozen or more), and each costs a 224-px read of the keypoint network before its
face score rejects it. The gate is a network of four strided conv blocks that
reads each proposal at 48x48 (the same region and turn the keypoint network
would see), all of a photo's proposals in one call for about a millisecond, and
lets through only those that may be faces. Its threshold is set to pass
essentially every face (`python -m train.face_gate` measures how many), so it
saves time and leaves the decision to the face score.

It lives beside the keypoint weights it was fitted to (`gate.safetensors`,
described by config.json's "face_gate"); weights without one read every proposal.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from jaxkp.checkpoint import WeightsError, built_from_arrays, model_arrays, write_atomic
from jaxkp.geometry import Region, box_framing_matrix, warp_to_input
from jaxkp.model import INPUT_SIZE, ConvBlock

GATE_SIZE = 48
GATE_FILE = "gate.safetensors"
# A call reads the smallest of these that holds a photo's proposals (padded), so few
# shapes are compiled; a photo's proposals are at most inference.MAX_PROPOSALS = 32.
GATE_BATCHES = (2, 4, 8, 16, 32)


class GateNet(nnx.Module):
    """48x48x1 -> 24x24x16 -> 12x12x32 -> 6x6x64 -> 3x3x64 (3x3 conv blocks, stride 2)
    -> one logit. About 1.7 million multiply-adds a patch (the keypoint network: 700)."""

    def __init__(self, rngs: nnx.Rngs, widths: tuple[int, ...] = (16, 32, 64, 64)):
        channels = [1, *widths]
        self.blocks = nnx.List([ConvBlock(a, b, 2, rngs) for a, b in zip(channels, channels[1:])])
        side = GATE_SIZE // 2 ** len(widths)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(side * side * widths[-1], 1, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        """(B, 48, 48, 1) in [-1, 1] -> (B,) logits (face: positive)."""
        x = images
        for block in self.blocks:
            x = block(x)
        return self.out(self.drop(x.reshape(x.shape[0], -1)))[:, 0]


class ShrunkCopies:
    """A gray photo and its INTER_AREA copies at 1/2, 1/4, ... made on first use, so that
    many small warps from one large photo each start from a copy at most twice their
    scale (not aliased) without each shrinking the whole photo."""

    def __init__(self, gray: np.ndarray):
        self.copies = {1: gray}

    def warp(self, matrix: np.ndarray, size: int) -> np.ndarray:
        """The (size, size) patch that `matrix` (photo -> patch pixels) frames."""
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        factor = 1
        while scale * factor < 0.5 and min(self.copies[1].shape) // (factor * 2) >= size // 4:
            factor *= 2
        if factor not in self.copies:
            gray = self.copies[1]
            self.copies[factor] = cv2.resize(gray, (max(1, gray.shape[1] // factor), max(1, gray.shape[0] // factor)),
                                             interpolation=cv2.INTER_AREA)
        copy = self.copies[factor]
        actual = np.array([copy.shape[1] / self.copies[1].shape[1], copy.shape[0] / self.copies[1].shape[0]])
        shrunk = matrix.copy()
        shrunk[:, :2] = matrix[:, :2] / actual[None, :]
        # warp_to_input's own shrink does not fire: the copy is at most twice the scale.
        return warp_to_input(copy, shrunk, size)


def gate_patches(gray: np.ndarray, boxes: np.ndarray, angles: np.ndarray, crop: Region,
                 size: int = GATE_SIZE) -> np.ndarray:
    """(N, size, size) uint8: what the keypoint network would see of each box (its crop,
    turned upright by its angle), at `size` pixels."""
    copies = ShrunkCopies(gray)
    to_size = np.diag([size / INPUT_SIZE, size / INPUT_SIZE, 1.0])
    patches = [copies.warp((to_size @ np.vstack([box_framing_matrix(box, crop, angle), [0, 0, 1]]))[:2], size)
               for box, angle in zip(boxes, angles)]
    return np.stack(patches) if patches else np.zeros((0, size, size), np.uint8)


def _logits(graph: nnx.GraphDef, state: nnx.State, patches: jax.Array) -> jax.Array:
    return nnx.merge(graph, state)(patches.astype(jnp.float32)[..., None] / 127.5 - 1.0)


class ProposalGate:
    """A trained GateNet, the region it reads (the keypoint network's crop) and the
    probability a proposal needs to be read in full."""

    def __init__(self, net: GateNet, crop: Region, threshold: float, info: dict[str, Any] | None = None):
        net.eval()
        self.graph, self.state = nnx.split(net)
        self.crop = tuple(crop)
        self.threshold = float(threshold)
        self.info = info or {}
        self._logits = jax.jit(functools.partial(_logits, self.graph))

    def compile(self) -> None:
        """Every batch shape compiled now (FaceKeypointPipeline.compile)."""
        for size in GATE_BATCHES:
            self.probabilities(np.zeros((size, GATE_SIZE, GATE_SIZE), np.uint8))

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 patches -> (N,) probability of a face."""
        logits = []
        for start in range(0, len(patches), GATE_BATCHES[-1]):
            chunk = patches[start : start + GATE_BATCHES[-1]]
            size = next(size for size in GATE_BATCHES if size >= len(chunk))
            padded = np.zeros((size, GATE_SIZE, GATE_SIZE), np.uint8)
            padded[: len(chunk)] = chunk
            logits.append(np.asarray(self._logits(self.state, padded))[: len(chunk)])
        if not logits:
            return np.zeros(0, np.float32)
        return 1.0 / (1.0 + np.exp(-np.clip(np.concatenate(logits), -50, 50)))

    def passing(self, gray: np.ndarray, boxes: np.ndarray, angles: np.ndarray) -> np.ndarray:
        """Indices of the boxes (in order) that may be faces and are worth a full read."""
        if not len(boxes):
            return np.zeros(0, int)
        scores = self.probabilities(gate_patches(gray, boxes, angles, self.crop))
        return np.flatnonzero(scores >= self.threshold)

    def save(self, directory: Path | str) -> dict[str, Any]:
        """Writes gate.safetensors into `directory`; returns config.json's "face_gate" entry."""
        arrays = model_arrays(nnx.merge(self.graph, self.state))
        write_atomic(Path(directory) / GATE_FILE, save(arrays, metadata={"format": "jaxkp-gate"}))
        return {**self.info, "file": GATE_FILE, "input_size": GATE_SIZE, "crop": list(self.crop),
                "threshold": self.threshold}

    @classmethod
    def load(cls, directory: Path | str, entry: dict[str, Any]) -> ProposalGate:
        """The gate config.json's "face_gate" entry describes, from `directory`."""
        path = Path(directory) / GATE_FILE  # never a name from the config: it may come from the Hub
        if entry.get("input_size") != GATE_SIZE:
            raise WeightsError(f"the face gate reads {entry.get('input_size')} px patches; jaxkp's reads {GATE_SIZE}")
        try:
            arrays = load_file(path)
        except FileNotFoundError:
            raise WeightsError(f"config.json names a face gate but there is no {path.name}") from None
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(f"{path.name} is corrupt or truncated ({error})") from None
        net = built_from_arrays(lambda: GateNet(nnx.Rngs(0)), arrays, path, "the face gate")
        info = {key: value for key, value in entry.items() if key not in ("file", "input_size", "crop", "threshold")}
        return cls(net, entry["crop"], entry["threshold"], info)
