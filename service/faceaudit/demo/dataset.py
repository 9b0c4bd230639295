"""Write demo audit datasets (faces as PNG + manifest.csv) for the bundled demo models.

Faces are rendered at the demo models' 64×64 (demo/models/manifest.json), from fresh identities
and nuisances drawn from `numpy.random.default_rng([seed, stream])`, with streams the training
script never uses, so the same seed always writes the same files. Writes only inside `folder`.

- attribute dataset (for attribute.onnx): identities rendered once with and once without the
  planted make-up cue under one nuisance, `class` = 1 with the cue; the group attribute `skin` is
  "light" (the three lightest SKIN_TONES) or "dark" (the other three), set alternately so that
  both groups hold both classes; `region` = the cue mask (where the cue is or would be drawn);
  landmarks = the renderer's exact five points.
- identity dataset (for identity.onnx): faces of the classifier's training identities (the
  manifest's recipe: `default_rng([7, 0])`, the first 20 `sample_identity` draws, class k the k-th)
  under fresh nuisances; the group attribute `skin` as for the attribute dataset (an identity's own
  tone, jittered, decides it by its nearest palette tone). No region: nothing is planted in an identity.
- embedding dataset (for embedding.onnx): inpainting-game quadruplets from doppelganger
  identities, built as `demo.inpainting.quadruplet` does (`doppelganger`, four renders, `swap_part`)
  but with a swapped skin's tone chosen far from the original: `image` = original probe, `mate` = original mate,
  `inpainted_probe`, `inpainted_non_mate` (also the row's `non_mate`), `region` = the swapped
  part's mask in the probe, landmarks of the original probe.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from faceaudit.audit.dataset import LANDMARK_COLUMNS, MANIFEST
from faceaudit.demo.faces import render
from faceaudit.demo.inpainting import swap_part
from faceaudit.demo.params import (
    SKIN_TONES, FaceParams, Part, attribute_cue, doppelganger, sample_identity, sample_nuisance,
)
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import check_int

SIZE = 64  # the demo models' input size
STREAM_ATTRIBUTE, STREAM_EMBEDDING, STREAM_IDENTITY = 100, 101, 102  # beyond the training script's streams 0-6
TRAINING_SEED, IDENTITY_CLASSES = 7, 20  # demo/models/manifest.json: "seed", models.identity.classes
SKIN_GROUPS = {"light": SKIN_TONES[:3], "dark": SKIN_TONES[3:]}
# Swapped parts: the ones whose change turns a face into a non-mate for the demo embedding model
# (cosine to the original ≈ 0.4 for skin, 0.6 for hair; 0.85-0.93 for brows, eyes, nose, mouth,
# which it still matches at any threshold below its genuine ≈ 0.93). A swapped skin takes the
# palette tone farthest from the original's, so that the non-mate is clearly another face.
SWAPPED_PARTS: tuple[Part, ...] = ("skin", "hair")


def write_attribute_dataset(folder: str | Path, *, identities: int = 12, seed: int = 0) -> Path:
    """`identities` × 2 faces (with and without the cue) in folder/faces, cue masks in folder/masks."""
    check_int("identities", identities, 1, 10_000)
    root = _folder(folder)
    rng = np.random.default_rng([seed, STREAM_ATTRIBUTE])
    rows = []
    for k in range(identities):
        group = "light" if k % 2 == 0 else "dark"
        identity = sample_identity(rng)
        tones = SKIN_GROUPS[group]
        tone = tones[int(rng.integers(len(tones)))]
        identity = dataclasses.replace(identity, skin=dataclasses.replace(identity.skin, tone=tone))
        nuisance, noise = sample_nuisance(rng), int(rng.integers(2**31))
        for on in (False, True):
            face = render(FaceParams(attribute_cue(identity, on), nuisance), SIZE, seed=noise)
            stem = f"{k:04d}_{'cue' if on else 'plain'}"
            rows.append({"image": _png(root, f"faces/{stem}.png", face.image), "class": int(on),
                         "identity": f"id{k:04d}", "skin": group,
                         "region": _png(root, f"masks/{stem}.png", face.cue_mask), **_landmarks(face.landmarks5)})
    return _manifest(root, ["image", "class", "identity", "skin", "region", *LANDMARK_COLUMNS], rows)


def write_identity_dataset(folder: str | Path, *, faces: int = 10, seed: int = 0) -> Path:
    """`faces` faces of the identity classifier's classes 0, 1, ... (cycling), each under a fresh nuisance."""
    check_int("faces", faces, 1, 10_000)
    root = _folder(folder)
    classes_rng = np.random.default_rng([TRAINING_SEED, 0])
    identities = [sample_identity(classes_rng) for _ in range(IDENTITY_CLASSES)]
    rng = np.random.default_rng([seed, STREAM_IDENTITY])
    rows = []
    for k in range(faces):
        label = k % IDENTITY_CLASSES
        identity = identities[label]
        nearest = min(SKIN_TONES, key=lambda tone: np.abs(np.subtract(tone, identity.skin.tone)).sum())
        group = next(name for name, tones in SKIN_GROUPS.items() if nearest in tones)
        face = render(FaceParams(identity, sample_nuisance(rng)), SIZE, seed=int(rng.integers(2**31)))
        rows.append({"image": _png(root, f"faces/{k:04d}_class{label:02d}.png", face.image), "class": label,
                     "identity": f"class{label:02d}", "skin": group, **_landmarks(face.landmarks5)})
    return _manifest(root, ["image", "class", "identity", "skin", *LANDMARK_COLUMNS], rows)


def write_embedding_dataset(folder: str | Path, *, quadruplets: int = 12, seed: int = 0) -> Path:
    """`quadruplets` rows of inpainting-game quadruplets; the swapped part cycles over SWAPPED_PARTS."""
    check_int("quadruplets", quadruplets, 1, 10_000)
    root = _folder(folder)
    rng = np.random.default_rng([seed, STREAM_EMBEDDING])
    rows = []
    for k in range(quadruplets):
        identity, part = sample_identity(rng), SWAPPED_PARTS[k % len(SWAPPED_PARTS)]
        probe, mate = sample_nuisance(rng), sample_nuisance(rng)
        seeds = (int(rng.integers(2**31)), int(rng.integers(2**31)))
        other = doppelganger(identity, part, rng)
        if part == "skin":
            far = max(SKIN_TONES, key=lambda tone: np.abs(np.subtract(tone, identity.skin.tone)).sum())
            other = dataclasses.replace(other, skin=dataclasses.replace(other.skin, tone=far))
        op, ip = (render(FaceParams(who, probe), SIZE, seed=seeds[0]) for who in (identity, other))
        om, in_ = (render(FaceParams(who, mate), SIZE, seed=seeds[1]) for who in (identity, other))
        inpainted_probe, region = swap_part(op, ip, part)
        stem = f"{k:04d}_{part}"
        inpainted_non_mate = _png(root, f"inpainted/{stem}_non_mate.png", swap_part(om, in_, part)[0])
        rows.append({"image": _png(root, f"faces/{stem}_probe.png", op.image), "identity": f"id{k:04d}",
                     "part": part, "mate": _png(root, f"faces/{stem}_mate.png", om.image),
                     "non_mate": inpainted_non_mate,
                     "inpainted_probe": _png(root, f"inpainted/{stem}_probe.png", inpainted_probe),
                     "inpainted_non_mate": inpainted_non_mate,
                     "region": _png(root, f"masks/{stem}.png", region), **_landmarks(op.landmarks5)})
    columns = ["image", "identity", "part", "mate", "non_mate", "inpainted_probe", "inpainted_non_mate", "region",
               *LANDMARK_COLUMNS]
    return _manifest(root, columns, rows)


def _folder(folder: str | Path) -> Path:
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise InvalidRequest("folder", f"{root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _png(root: Path, relative: str, pixels: np.ndarray) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pixels.astype(np.uint8) * 255 if pixels.dtype == bool else pixels
    Image.fromarray(data).save(path)
    return relative


def _landmarks(points: np.ndarray) -> dict[str, str]:
    return {column: f"{value:.4f}" for column, value in zip(LANDMARK_COLUMNS, np.asarray(points).ravel())}


def _manifest(root: Path, columns: list[str], rows: list[dict[str, object]]) -> Path:
    path = root / MANIFEST
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
