"""What each game is played on in an audit, collected image by image from the dataset's rows.

Built from the manifest:
    items       GameItems: the row's face, target, maps of the audit's methods and `region`
    images      the faces (invariance)
    pairs       embedding models: the faces plus each row's mate and non-mate; (face, mate) pairs
                are genuine, (face, non-mate) impostor (layer verification)
A game applies when the model's kind is one it plays on and every input (and what its items must
carry, e.g. a region on every row) can be built; `why_not` says why not, in words. Holds arrays
in memory (one set per image); touches no files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceaudit.audit.dataset import Dataset
from faceaudit.audit.inputs import Face
from faceaudit.metrics.common import GameItem
from faceaudit.metrics.registry import get_game


class GameInputs:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: list[GameItem] = []
        self._pair_images: list[np.ndarray] = []
        self._pairs: list[tuple[int, int]] = []
        self._genuine: list[bool] = []

    def add(self, face: Face, maps: dict[str, np.ndarray]) -> None:
        self.items.append(GameItem(image=face.image, target=face.target, maps=maps, region=face.region,
                                   name=face.entry.name))
        if self.kind == "embedding":
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
                 "pairs": np.array(self._pairs), "genuine": np.array(self._genuine)}
        if get_game(game).inputs == {"images", "pairs", "genuine"}:
            built["images"] = self._pair_images
        return {name: built[name] for name in get_game(game).inputs}


def why_not(game: str, kind: str, data: Dataset) -> str | None:
    """None when `game` can be played in an audit of a `kind` model over `data`, else the reason."""
    entry = get_game(game)
    if kind not in entry.kinds:
        return f"it is played on {' and '.join(sorted(entry.kinds))} models"
    if "region" in entry.needs and any(e.region is None for e in data.entries):
        return "it needs a 'region' mask on every row"
    if "pairs" in entry.inputs:
        if kind != "embedding":
            return "an audit builds its pairs from mates and non-mates, which only embedding models have"
        if any(e.non_mate is None and e.identity is None for e in data.entries):
            return "it needs impostor pairs: a 'non_mate' or an 'identity' on every row"
    if not entry.inputs <= {"items", "images", "pairs", "genuine"}:
        return f"it needs {', '.join(sorted(entry.inputs))}, which an audit dataset does not give"
    return None
