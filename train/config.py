"""Training configurations as plain data; `python -m train --config NAME` picks one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    network: str = "reference"
    epochs: int = 35
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    # Share of people (not frames) held out for validation.
    val_fraction: float = 0.1
    # Random crop before the rescale: each side keeps this fraction or more.
    crop_min_fraction: float = 0.9
    eval_batch_size: int = 64
    # Use only the first N images of the CSV (smoke runs); None for all.
    max_images: int | None = None

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CONFIGS: dict[str, Config] = {
    # The reference recipe: 35 epochs, batch 16, Adam 1e-3, MSE.
    "reference": Config(),
    # Seconds on a laptop CPU: checks the whole loop, learns nothing useful.
    "tiny": Config(epochs=2, batch_size=8, eval_batch_size=8, max_images=48, val_fraction=0.25),
}
