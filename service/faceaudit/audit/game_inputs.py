"""What each game is played on in an audit, collected image by image from the dataset's rows.

Built from the manifest:
    items       GameItems: the row's face, target, maps of the audit's methods and `region`
    images      the faces (invariance)
    parts       {"region": every row's region mask}: the face part occluded in every image
                (correspondence; meaningful when the regions mark one part across identities)
    pairs       embedding models: the faces plus each row's mate and non-mate; (face, mate) pairs
                are genuine, (face, non-mate) impostor (layer verification)
    quadruplets InpaintingItems of the rows with inpainted images (inpainting game), played on those
                rows only. Without `tau` or `fpr` in its options, τ is derived from the dataset's
                own impostor scores, cos(face_i, mate_j) for rows i ≠ j of different identities
                (genuine scores, for the TPR: cos(face_i, mate_i)), at FPR INPAINTING_FPR, or at
                1/n, the lowest rate n impostor scores can measure, when there are fewer than 100.
A game applies when the model's kind is one it plays on and every input (and what its items must
carry, e.g. a region on every row) can be built; `why_not` says why not, in words. Holds arrays
in memory (one set per image); touches no files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from faceaudit.audit.dataset import Dataset
from faceaudit.audit.inputs import Face
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import embed
from faceaudit.errors import InvalidRequest
from faceaudit.metrics.common import GameItem
from faceaudit.metrics.inpainting_game import InpaintingGameOptions, InpaintingItem
from faceaudit.metrics.registry import get_game

INPAINTING_FPR = 0.01


class GameInputs:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: list[GameItem] = []
        self._pair_images: list[np.ndarray] = []
        self._pairs: list[tuple[int, int]] = []
        self._genuine: list[bool] = []
        self._quadruplets: list[InpaintingItem] = []
        self._identities: list[str | None] = []

    def add(self, face: Face, maps: dict[str, np.ndarray]) -> None:
        self.items.append(GameItem(image=face.image, target=face.target, maps=maps, region=face.region,
                                   name=face.entry.name))
        if face.inpainted is not None and face.region is not None and face.target.mate is not None:
            self._quadruplets.append(InpaintingItem(
                original_probe=face.image, original_mate=face.target.mate, inpainted_probe=face.inpainted[0],
                inpainted_non_mate=face.inpainted[1], region=face.region, maps=maps, name=face.entry.name))
        if self.kind == "embedding":
            self._identities.append(face.entry.identity)
            probe = len(self._pair_images)
            self._pair_images += [face.image, face.target.mate]
            self._pairs.append((probe, probe + 1))
            self._genuine.append(True)
            if face.target.non_mate is not None:
                self._pair_images.append(face.target.non_mate)
                self._pairs.append((probe, probe + 2))
                self._genuine.append(False)

    def inputs(self, game: str) -> dict[str, Any]:
        """The keyword inputs of `game` (call only for games `why_not` accepts)."""
        built = {"items": self.items, "images": [item.image for item in self.items],
                 "parts": {"region": [item.region for item in self.items]},
                 "pairs": np.array(self._pairs), "genuine": np.array(self._genuine)}
        entry = get_game(game)
        if entry.inputs == {"images", "pairs", "genuine"}:
            built["images"] = self._pair_images
        if "quadruplets" in entry.needs:
            built["items"] = self._quadruplets
        return {name: built[name] for name in entry.inputs}

    def inpainting_options(self, model: PreparedModel, options: InpaintingGameOptions) -> InpaintingGameOptions:
        """`options` with τ derived from the dataset's impostor scores when they give neither tau nor fpr."""
        if options.tau is not None or options.fpr is not None:
            return options
        probes = embed(model, np.stack([item.image for item in self.items]))
        mates = embed(model, np.stack([item.target.mate for item in self.items]))
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        mates /= np.linalg.norm(mates, axis=1, keepdims=True)
        cosines = probes @ mates.T
        n = len(self.items)
        other = np.array([[i != j and (self._identities[i] is None or self._identities[i] != self._identities[j])
                           for j in range(n)] for i in range(n)], dtype=bool)
        impostors = cosines[other]
        if impostors.size < 2:
            raise InvalidRequest("options.games.inpainting_game.tau", f"deriving τ needs at least two impostor pairs "
                                 f"(faces of different identities); the dataset has {impostors.size}: give tau or fpr")
        fpr = max(INPAINTING_FPR, 1.0 / impostors.size)
        return dataclasses.replace(options, fpr=fpr, impostor_scores=tuple(impostors.tolist()),
                                   genuine_scores=tuple(np.diag(cosines).tolist()))


def why_not(game: str, kind: str, data: Dataset) -> str | None:
    """None when `game` can be played in an audit of a `kind` model over `data`, else the reason."""
    entry = get_game(game)
    if kind not in entry.kinds:
        return f"it is played on {' and '.join(sorted(entry.kinds))} models"
    if "region" in entry.needs and any(e.region is None for e in data.entries):
        return "it needs a 'region' mask on every row"
    if "quadruplets" in entry.needs and not any(e.is_quadruplet for e in data.entries):
        return "it needs quadruplet rows (inpainted_probe, inpainted_non_mate, mate, region)"
    if "pairs" in entry.inputs:
        if kind != "embedding":
            return "an audit builds its pairs from mates and non-mates, which only embedding models have"
        if any(e.non_mate is None and e.identity is None for e in data.entries):
            return "it needs impostor pairs: a 'non_mate' or an 'identity' on every row"
    if not entry.inputs <= {"items", "images", "pairs", "genuine", "parts"}:
        return f"it needs {', '.join(sorted(entry.inputs))}, which an audit dataset does not give"
    return None
