"""Training configurations as plain data; `python -m train --config NAME` picks one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from jaxkp.geometry import FRAMINGS, framing_of
from train.data import Augmentation


@dataclass(frozen=True)
class DataSource:
    """One data set of a recipe: its folder's name, how its validation is held out, and
    how many times per epoch each of its training examples is drawn (fractions draw a
    random share)."""

    name: str
    holdout: str = "person"  # "person" (video frames, <First_Last>_<n>) or "photo" (one photo, one person)
    sampling_weight: float = 1.0


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
    # "mse" (reference), "l1", or "wing" (Feng et al. 2018, in input pixels).
    loss: str = "mse"
    # "constant" (reference) or "cosine" decay to zero, each after a linear warmup of
    # `warmup_epochs` (none by default).
    schedule: str = "constant"
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    # What the network is shown of each face (jaxkp.geometry.FRAMINGS): "whole-image"
    # (the reference's random crop of the whole image), "keypoint-box" (the crop around
    # a box placed on the keypoints as the Haar detector places it) or "haar-box" (the
    # crop around the Haar box found on each face, detected once per run). Validation
    # frames the same way without jitter.
    framing: str = "whole-image"
    # The box framings' jitter, flip, rotation and photometric changes; None: none.
    augmentation: Augmentation | None = None
    # The region around a Haar box the network sees (left, top, width, height in
    # units of the box); None: the training images' own framing (TRAINING_IMAGE_CROP).
    crop: tuple[float, float, float, float] | None = None
    # The data sets, matched by folder name to the --data-dir folders. Empty: each
    # folder given is one data set, held out by person. With several, the first
    # one's mark-up is the one the network learns to output; each other gets a
    # learnt per-point offset (its convention), recorded in config.json.
    datasets: tuple[DataSource, ...] = ()
    # Start from these weights (a folder or Hub id) instead of a fresh initialisation.
    init_from: str | None = None
    # "float32", or "bfloat16": convolutions and matrix products in bfloat16 (mixed
    # precision, for GPUs and TPUs), parameters, optimizer state and loss in float32.
    compute_dtype: str = "float32"
    # Heatmap networks only: add this weight times the divergence of each keypoint's
    # spatial softmax from a Gaussian on its true place (train.train.heatmap_loss) to
    # the coordinate loss; 0: the coordinate loss alone.
    heatmap_loss_weight: float = 0.0
    # That Gaussian's standard deviation, in cells of the heatmap.
    heatmap_sigma: float = 1.0
    # 0: serve and validate the weights as trained. Else an exponential moving average
    # of them (parameters and BatchNorm statistics) over the steps, each step keeping
    # this share of the average: it averages out the last steps' noise (about
    # 1 / (1 - ema_decay) steps), as annealing the rate to zero does, while the rate
    # stays high enough to move. Validation logs the trained weights' NME too.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"unknown framing {self.framing!r}; choose one of {', '.join(FRAMINGS)}")
        if self.heatmap_loss_weight < 0 or self.heatmap_sigma <= 0:
            raise ValueError(f"heatmap_loss_weight must be >= 0 and heatmap_sigma > 0; got "
                             f"{self.heatmap_loss_weight} and {self.heatmap_sigma}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        values = dict(values)
        values["framing"] = framing_of(values)  # configs saved before the field existed
        values.pop("haar_boxes", None)
        if values.get("augmentation") is not None:
            values["augmentation"] = Augmentation(**values["augmentation"])
        if values.get("crop") is not None:
            values["crop"] = tuple(values["crop"])
        values["datasets"] = tuple(DataSource(**source) for source in values.get("datasets", ()))
        return cls(**values)


# "improved-haar" on the deeper residual network, trained longer (45 epochs: val NME 0.069, 65: 0.064).
RESIDUAL_HAAR = Config(
    network="residual", epochs=65, batch_size=32, learning_rate=2e-3, loss="wing", schedule="cosine",
    warmup_epochs=2, weight_decay=1e-4, framing="haar-box", crop=(-0.25, -0.1, 1.5, 1.5),
    augmentation=Augmentation(flip=True, max_rotation_degrees=15, framing_jitter=0.5, brightness=0.2, contrast=0.3),
)

# heatmap-haar fine-tuned on the 300-W photos and the video frames together, the
# 300-W mark-up served; stronger augmentation for real photos (blur, JPEG, occlusion).
HEATMAP_300W = RESIDUAL_HAAR.replace(
    network="heatmap", epochs=16, learning_rate=1e-3, warmup_epochs=1, init_from="runs/heatmap-haar",
    datasets=(DataSource("ibug-300w-train", holdout="photo", sampling_weight=2.0),
              DataSource("youtube-faces-keypoints", holdout="person", sampling_weight=1.0)),
    augmentation=dataclasses.replace(RESIDUAL_HAAR.augmentation, blur=0.2, jpeg=0.2, occlusion=0.2),
)

CONFIGS: dict[str, Config] = {
    # The reference recipe: 35 epochs, batch 16, Adam 1e-3, MSE.
    "reference": Config(),
    # Issue 5's recipe: a stronger network, keypoint-consistent augmentation that
    # frames faces as the Haar detector does, Wing loss and a cosine schedule.
    "improved": Config(
        network="compact", epochs=60, batch_size=32, learning_rate=2e-3, loss="wing", schedule="cosine",
        warmup_epochs=2, weight_decay=1e-4, framing="keypoint-box",
        augmentation=Augmentation(flip=True, max_rotation_degrees=15, framing_jitter=1.0, brightness=0.2,
                                  contrast=0.3),
    ),
    # "improved", framed by the Haar detector's own boxes (the app's faces come from
    # it), on a tighter square crop that gives the face more of the input's pixels.
    "improved-haar": Config(
        network="compact", epochs=45, batch_size=32, learning_rate=2e-3, loss="wing", schedule="cosine",
        warmup_epochs=2, weight_decay=1e-4, framing="haar-box", crop=(-0.25, -0.1, 1.5, 1.5),
        augmentation=Augmentation(flip=True, max_rotation_degrees=15, framing_jitter=0.5, brightness=0.2,
                                  contrast=0.3),
    ),
    "residual-haar": RESIDUAL_HAAR,
    # "residual-haar" with 28x28 heatmaps read out by soft-argmax instead of a dense head
    # (shipped; end-to-end validation NME 0.048, residual-haar 0.064).
    "heatmap-haar": RESIDUAL_HAAR.replace(network="heatmap"),
    "heatmap-300w": HEATMAP_300W,
    # heatmap-300w continued for 16 more epochs at half its peak rate (a warm restart of
    # its cosine schedule: its validation error was still falling when the rate reached 0).
    "heatmap-300w-long": HEATMAP_300W.replace(epochs=16, learning_rate=5e-4, init_from="runs/heatmap-300w"),
    # heatmap-300w-long continued the same way once more: 12 epochs at half its rate (its
    # validation error had levelled off as its cosine schedule reached zero, at 0.0370).
    "heatmap-300w-longer": HEATMAP_300W.replace(epochs=12, learning_rate=2.5e-4,
                                                init_from="runs/heatmap-300w-long"),
    # heatmap-300w-long's network with 56x56 heatmaps (issue 22), started from its weights
    # (the new level starts at zero, so the first keypoints are the shipped ones) for 6
    # epochs (under an hour of this 2-core CPU beside other work) at heatmap-300w-long's rate,
    # plus the heatmap loss (a Gaussian of 1 cell, 4 input pixels). Its weight 2: at the
    # start, on real batches of this recipe, the Wing loss is 5.6 and the heatmap term (a
    # KL divergence, 0 for a perfect map) 0.83, so the weighted term is about a third of
    # the Wing loss (its gradient about a seventh).
    "heatmap56-300w": HEATMAP_300W.replace(network="heatmap56", epochs=6, learning_rate=5e-4,
                                           init_from="runs/heatmap-300w-long", heatmap_loss_weight=2.0),
    # heatmap-300w-long's network grown where the points are placed (heatmap-deep: one more
    # residual block at 28x28 and at 14x14 and one after the decoder, each starting as the
    # identity, so the first keypoints are the shipped ones), trained on at heatmap-300w's
    # peak rate so the new blocks learn: heatmap-300w-long underfits (its error on its own
    # training photos, 0.033 framed, is near its validation error, 0.037). 22 epochs took
    # about an hour of this 2-core CPU.
    "heatmap-deep-300w": HEATMAP_300W.replace(network="heatmap-deep", epochs=22, init_from="runs/heatmap-300w-long"),
    # heatmap-deep-300w continued as heatmap-300w-long continued heatmap-300w: 8 more epochs
    # at half its peak rate (its validation error was still falling as its rate reached 0).
    "heatmap-deep-300w-long": HEATMAP_300W.replace(network="heatmap-deep", epochs=8, learning_rate=5e-4,
                                                   init_from="runs/heatmap-deep-300w"),
    # heatmap-deep-300w trained on at a constant third of its peak rate, serving the moving
    # average of its weights (about the last 1000 steps, 5 epochs) instead of annealing the
    # rate: averaging weights along the path can find a wider, flatter minimum than
    # annealing to its end (Izmailov et al. 2018, stochastic weight averaging). Measured
    # (55 minutes of this CPU): within noise of heatmap-deep-300w, not shipped
    # (docs/results.md).
    "heatmap-deep-300w-ema": HEATMAP_300W.replace(network="heatmap-deep", epochs=16, schedule="constant",
                                                  learning_rate=3e-4, ema_decay=0.999,
                                                  init_from="runs/heatmap-deep-300w"),
    # Seconds on a laptop CPU: checks the whole loop, learns nothing useful.
    "tiny": Config(epochs=2, batch_size=8, eval_batch_size=8, max_images=48, val_fraction=0.25),
}
