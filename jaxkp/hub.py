"""Publishing a training run to the Hugging Face Hub, with a generated model card.

Pulling is in `jaxkp.weights` (`resolve_weights("user/name@revision")`).
A push reads the workdir and never writes to it, so a failed push leaves the
local checkpoint exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxkp.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config
from jaxkp.gate import GATE_FILE
from jaxkp.geometry import framing_of

# The proposal gate travels with the weights it was fitted to.
PUSHED_FILES = [WEIGHTS_FILE, CONFIG_FILE, GATE_FILE, "metrics.jsonl", "loss_curve.png"]
REQUIRED_FILES = [WEIGHTS_FILE, CONFIG_FILE]


class PushError(RuntimeError):
    """A push that could not happen; the message says why and what to do."""


DATA_CITATION = """@inproceedings{wolf2011face,
  title     = {Face Recognition in Unconstrained Videos with Matched Background Similarity},
  author    = {Wolf, Lior and Hassner, Tal and Maoz, Itay},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2011}
}"""


IBUG_CITATION = """@article{sagonas2016300,
  title   = {300 Faces In-The-Wild Challenge: database and results},
  author  = {Sagonas, Christos and Antonakos, Epameinondas and Tzimiropoulos, Georgios and Zafeiriou, Stefanos and Pantic, Maja},
  journal = {Image and Vision Computing},
  volume  = {47},
  pages   = {3--18},
  year    = {2016}
}"""  # noqa: E501 (a BibTeX entry, as published)

# Every data set a recipe may name: what it is, how it is cited, and its terms.
DATA_SETS = {
    "youtube-faces-keypoints": (
        "3462 frames of 347 people from the YouTube Faces Dataset, cropped to one face each and labelled with "
        "68 keypoints, as published for Udacity's facial-keypoints project; validation holds out whole people.",
        DATA_CITATION, None),
    "ibug-300w-train": (
        "1675 real photos of the LFPW and HELEN training sets with the 68-point mark-up of the 300-W challenge "
        "(Sagonas et al.), one photo per person; validation holds out whole photos.",
        IBUG_CITATION,
        "The 300-W annotations are released for research only; commercial use is not allowed, the photos belong "
        "to their owners, and these weights, trained on them, carry the same restriction."),
}


def data_section(config: dict[str, Any]) -> str:
    train = config.get("train_config", {})
    names = [source["name"] for source in train.get("datasets") or []] or ["youtube-faces-keypoints"]
    parts = []
    for name in names:
        text, citation, terms = DATA_SETS.get(name, (f"`{name}` (no description recorded).", None, None))
        parts.append(f"- **{name}**: {text}" + (f" **Licence: {terms}**" if terms else ""))
    parts.append(f"\nValidation share {train.get('val_fraction', '?')} of each data set, "
                 f"seed {train.get('seed', '?')}.")
    if config.get("markup"):
        parts.append(f"The network outputs the **{config['markup']}** mark-up; `config.json`'s `markup_offsets` "
                     "hold the learnt per-point offset to each other data set's mark-up.")
    citations = [DATA_SETS[name][1] for name in names if name in DATA_SETS]
    return "\n".join(parts) + "\n\n```bibtex\n" + "\n\n".join(citations) + "\n```"


def research_only(config: dict[str, Any]) -> bool:
    return any(DATA_SETS.get(source["name"], (None, None, None))[2]
               for source in config.get("train_config", {}).get("datasets") or [])


def recipe_summary(train: dict[str, Any]) -> str:
    optimizer = "AdamW" if train.get("weight_decay") else "Adam"
    schedule = "a warmup-cosine schedule" if train.get("schedule") == "cosine" else "a constant learning rate"
    loss = {"mse": "MSE", "l1": "L1 loss", "wing": "Wing loss"}.get(train.get("loss", "mse"), train.get("loss"))
    framing = framing_of(train)
    if framing != "whole-image":
        boxes = ("the Haar detector's own box on each image (a box placed on the keypoints where it found none)"
                 if framing == "haar-box" else "a box placed on the keypoints as the Haar detector places it")
        crop = train.get("crop") or "the training images' framing"
        framing = (f"each face framed by {boxes}, cropped {crop} (left, top, width, height in box units) with "
                   "jitter, horizontal flips with the left/right point permutation, rotations and "
                   "brightness/contrast changes")
    else:
        framing = "a random crop before the rescale to 224x224"
    return f"Optax {optimizer} with {schedule} on the {loss} of keypoints normalised to [-1, 1]; {framing}."


def face_score_section(config: dict[str, Any]) -> str:
    """The face score's description and held-out figures, when the weights carry one."""
    score = config.get("face_score")
    if not score:
        return ""
    val = score.get("figures", {}).get("validation", {})
    figures = (f" On the validation photos' crops ({val['faces']} faces, {val['non_faces']} non-faces) its ROC AUC "
               f"is {val['auc']:.4f}; at the default threshold it keeps {val['face_recall']:.1%} of the faces and "
               f"passes {val['non_face_pass_rate']:.1%} of the non-faces." if val else "")
    second_look = ("\nWith these weights the app reads a face whose eyes lean from the turn it was first shown "
                   "at a second time, levelled and framed from its first keypoints (`second_look` in config.json); "
                   "the first look's score stands.\n" if config.get("second_look") else "")
    return (f"\n## Face score\n\nEach face gets a score in [0, 1]: a logistic regression on the network's own "
            f"evidence ({score.get('evidence', 'heatmap peaks')}), fitted by `python -m train.face_score` on face "
            f"and non-face crops of the training photos. Faces under {score['threshold']:.3f} are left out by "
            f"default.{figures}\n{second_look}")


def gate_section(config: dict[str, Any]) -> str:
    """The proposal gate's description and held-out figures, when the weights carry one."""
    gate = config.get("face_gate")
    if not gate:
        return ""
    val = gate.get("figures", {}).get("validation", {})
    figures = (f" On the validation photos' crops ({val['faces']} faces, {val['non_faces']} non-faces) it passes "
               f"{val['face_recall']:.1%} of the faces and {val['non_face_pass_rate']:.1%} of the non-faces "
               f"(of the detector's own proposals: {val['proposed_face_recall']:.1%} and "
               f"{val['proposed_non_face_pass_rate']:.1%})." if val else "")
    return (f"\n## Proposal gate\n\n`{GATE_FILE}` is a small network that glances at each face proposal at "
            f"{gate['input_size']}x{gate['input_size']} pixels before the full read, and lets through those at "
            f"{gate['threshold']:.3f} or more; trained by `python -m train.face_gate` on the face score's crops. "
            f"It only saves time: the face score decides.{figures}\n")


def uncertainty_section(config: dict[str, Any]) -> str:
    """The per-point uncertainty's description and calibration figures, when the weights carry one."""
    uncertainty = config.get("uncertainty")
    if not uncertainty:
        return ""
    rows = "\n".join(
        f"| {name} | {figures['faces']} | " + " | ".join(
            f"{figures[kind][key]:.3f}" for kind in ("in_sample", "cross_fitted")
            for key in ("uncertainty_ratio", "uncertainty_spearman", "uncertainty_worst_auc")) + " |"
        for name, figures in uncertainty.get("figures", {}).items())
    table = ("\n\n| data set | faces | ratio | Spearman | worst-10% AUC | ratio (cross-fitted) "
             "| Spearman (cross-fitted) | AUC (cross-fitted) |\n|" + " --- |" * 8 + "\n" + rows) if rows else ""
    return (f"\n## Uncertainty\n\nEach face also carries 68 floats, `uncertainty`: each point's expected error in "
            f"the photo's pixels, read from how widely the network's heatmap for that point spreads by a "
            f"log-linear model fitted by `python -m train.uncertainty` on the validation faces. Ratio: mean "
            f"predicted over mean actual point error; Spearman: rank correlation of predicted and actual point "
            f"errors (both over the inter-ocular distance); AUC: how well a face's mean uncertainty finds its data "
            f"set's worst tenth of faces by NME. Cross-fitted: each half of the people scored by the model fitted "
            f"on the other half.{table}\n")


def model_card(config: dict[str, Any], records: list[dict[str, Any]], repo_id: str) -> str:
    """README.md for the Hub: metadata, data and citation, recipe, figures, use and limits."""
    train = config.get("train_config", {})
    last = records[-1] if records else config.get("validation", {})
    sources = [source["name"] for source in train.get("datasets") or []]
    prefixes = [f"{name}/" for name in sources] if len(sources) > 1 else [""]
    rows = [("nme_mean", "NME, mean"), ("nme_median", "NME, median"),
            ("failure_rate_0.08", "failure rate (NME > 0.08)"), ("failure_rate_0.10", "failure rate (NME > 0.10)"),
            ("rmse_px", "RMS point error (pixels)"), ("val_loss", "MSE (normalised coordinates)")]
    header = ("| metric | " + " | ".join(p.rstrip("/") or "value" for p in prefixes) + " |\n|"
              + " --- |" * (1 + len(prefixes)))
    figures = "\n".join(
        f"| {label} | " + " | ".join(f"{last[p + key]:.4f}" if p + key in last else "" for p in prefixes) + " |"
        for key, label in rows if any(p + key in last for p in prefixes)
    ) or "| (no validation figures recorded) | |"
    figures = header + "\n" + figures
    recipe = ", ".join(f"{key} {value}" for key, value in train.items()) or "not recorded"
    if framing_of(train) == "whole-image":
        evaluated_on = "whole validation images"
    elif framing_of(train) == "haar-box":
        evaluated_on = ("validation faces framed by their Haar boxes as the app frames them (the few the "
                        "detector misses by a box placed on their keypoints)")
    else:
        evaluated_on = "validation faces framed by the median Haar box placed on their keypoints"
    research = research_only(config)
    licence = "license: other\nlicense_name: research-only (300-W annotations)\n" if research else ""
    web_photos = ", and web photos" if research else ""
    research_note = "\n\n**Research only**: " + DATA_SETS["ibug-300w-train"][2] if research else ""
    return f"""---
library_name: jaxkp
pipeline_tag: keypoint-detection
tags:
- jax
- flax
- facial-landmarks
- face-alignment
- keypoint-detection
- 68-points
{licence}---

# {repo_id}

A `{config['network']}` network from jaxkp that predicts the 68 facial keypoints
of the iBUG/300-W scheme (jaw, brows, nose, eyes, mouth) on a {config['input_size']}x{config['input_size']}
grayscale face crop. `model.safetensors` holds the parameters and BatchNorm statistics; `config.json`
names the network.

```python
import jaxkp
pipeline = jaxkp.load_pipeline("{repo_id}")   # OpenCV Haar face detector + this network
result = pipeline("photo.jpg")                # {{"image": {{...}}, "faces": [{{"box": ..., "keypoints": ...}}]}}
```

## Training data

{data_section(config)}

## Recipe

Trained with jaxkp's `python -m train` for {config.get('epochs_done', '?')} epochs: {recipe}.
{recipe_summary(train)}

## Validation figures (held-out people or photos, after the last epoch)

NME is the mean point-to-point error divided by the distance between the outer eye corners
(points 36 and 45), computed on {evaluated_on}.

{figures}
{face_score_section(config)}{gate_section(config)}{uncertainty_section(config)}
## Intended use and limits

For research, teaching and demos of facial-landmark detection on roughly frontal faces. It was trained
on mostly frontal, adult faces (YouTube frames of public figures{web_photos}); expect larger errors
on profile views, strong occlusion, extreme lighting, children, and faces the Haar detector frames
differently from the training crops. It is not meant for identifying people, for biometric decisions,
or for any use where an error harms someone.{research_note}
"""


def read_records(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def release_files(workdir: Path, repo_id: str) -> dict[str, Path | bytes]:
    """What a release of a run holds: {name: file in the workdir, or bytes of the generated card}."""
    missing = [name for name in REQUIRED_FILES if not (workdir / name).is_file()]
    if missing:
        raise PushError(f"{workdir} has no {', '.join(missing)}: train first, or point at a finished run")
    files: dict[str, Path | bytes] = {name: workdir / name for name in PUSHED_FILES if (workdir / name).is_file()}
    files["README.md"] = model_card(read_config(workdir), read_records(workdir), repo_id).encode()
    return files


def push_to_hub(workdir: Path | str, repo_id: str, private: bool = False, token: str | None = None,
                revision: str | None = None) -> str:
    """Creates `repo_id` if needed and uploads the run's weights, config, metrics, plot and card.

    Returns the commit id. Raises PushError with a clear message for a missing
    or rejected token, a bad repo id or an incomplete workdir.
    """
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_token

    workdir = Path(workdir)
    files = release_files(workdir, repo_id)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"repo id {repo_id!r} must look like USER/NAME")
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then push again")
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=name,
                                     path_or_fileobj=content if isinstance(content, bytes) else str(content))
                  for name, content in files.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations, commit_message=f"jaxkp: push {workdir.name}",
                                   revision=revision)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PushError(f"the Hub rejected the token for {repo_id} (HTTP {status}): "
                            "check HF_TOKEN or `hf auth login`, and that it may write to this namespace") from None
        raise PushError(f"push to {repo_id} failed: {error}") from None
    except httpx2.TransportError as error:
        raise PushError(f"cannot reach the Hub to push {repo_id}: {error}") from None
    except ValueError as error:  # e.g. the Hub refused the model card's metadata
        raise PushError(f"push to {repo_id} failed: {error}") from None
    return commit.oid
