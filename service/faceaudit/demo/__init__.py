"""The bundled demo world: synthetic faces with planted ground truth (issue 7).

`render(FaceParams(identity, nuisance))` draws a face with exact landmarks (68 and five points) and
disjoint part masks; `doppelganger` and `quadruplet` give inpainting-game quadruplets with exact
region masks; `attribute_cue` plants a binary attribute in the upper eyelids only.
"""

from faceaudit.demo.faces import MASKS, Rendered, render
from faceaudit.demo.geometry import nuisance_transform
from faceaudit.demo.inpainting import Quadruplet, quadruplet, swap_part, swap_region
from faceaudit.demo.params import (
    PARTS, Accessory, Brows, Eyes, FaceParams, Hair, Identity, Mouth, Nose, Nuisance, Part, Skin,
    attribute_cue, doppelganger, sample_identity, sample_nuisance,
)

__all__ = [
    "MASKS", "PARTS", "Accessory", "Brows", "Eyes", "FaceParams", "Hair", "Identity", "Mouth", "Nose",
    "Nuisance", "Part", "Quadruplet", "Rendered", "Skin", "attribute_cue", "doppelganger", "nuisance_transform",
    "quadruplet", "render", "sample_identity", "sample_nuisance", "swap_part", "swap_region",
]
