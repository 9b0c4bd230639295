"""Inpainting-game quadruplets from doppelganger identities, with exact region masks.

The inpainting game (Williford, May, Byrne, ECCV 2020) needs, per probe: the original probe (OP),
a mate of the same identity (OM), the probe with one face part inpainted so that it shows another
identity (IP), and the mate inpainted the same way, the non-mate (IN). Here the "inpainting" is a
second render of a doppelganger identity (`doppelganger`: one part differs) under the same
nuisance and noise seed, pasted inside the part's region: the result equals that render
exactly, and differs from the original only inside the region mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faceaudit.demo.faces import LABELS, SUPERSAMPLE, Rendered, render
from faceaudit.demo.params import PARTS, FaceParams, Identity, Nuisance, Part, doppelganger
from faceaudit.errors import InvalidRequest

# The masks a part's pixels can fall in besides its own: the nose is shaded from the skin tone.
_ALSO = {"skin": ("nose",)}


def swap_region(a: Rendered, b: Rendered, part: Part) -> np.ndarray:
    """Boolean (size, size) mask of the pixels where renders `a` and `b`, identical but in `part`,
    can differ: those with a supersample that the part covers in either render (the nose too for
    skin, the eyelid cue for eyes when the make-up is on) or whose label changes between them.
    A pixel is the mean of its own supersamples only, so no pixel outside can change."""
    _check_pair(a, b, part)
    fine = a.fine_labels != b.fine_labels
    for name in (part, *_ALSO.get(part, ())):
        fine |= (a.fine_labels == LABELS.index(name)) | (b.fine_labels == LABELS.index(name))
    region = fine.reshape(a.size, SUPERSAMPLE, a.size, SUPERSAMPLE).any(axis=(1, 3))
    if part == "eyes" and a.params.identity.makeup:
        region |= a.cue_mask | b.cue_mask
    return region


def swap_part(a: Rendered, b: Rendered, part: Part) -> tuple[np.ndarray, np.ndarray]:
    """(`a`'s image with `part` taken from `b`, the region mask): pixels inside `swap_region`
    come from `b`, all others from `a`."""
    region = swap_region(a, b, part)
    return np.where(region[..., None], b.image, a.image), region


@dataclass(frozen=True, eq=False)
class Quadruplet:
    """OP, OM, IP, IN (uint8 RGB) and the ground truth: `probe_region` where IP differs from OP
    (`mate_region` likewise for IN and OM); `part` names the swapped part."""

    original_probe: np.ndarray
    mate: np.ndarray
    inpainted_probe: np.ndarray
    inpainted_non_mate: np.ndarray
    probe_region: np.ndarray
    mate_region: np.ndarray
    part: Part
    identity: Identity
    non_mate_identity: Identity


def quadruplet(identity: Identity, part: Part, probe: Nuisance, mate: Nuisance, rng: np.random.Generator,
               *, size: int = 112, seeds: tuple[int, int] = (0, 1)) -> Quadruplet:
    """An inpainting-game quadruplet for `identity` with a doppelganger differing in `part`;
    the probe images use nuisance `probe` and noise seed `seeds[0]`, the mate images `mate` and `seeds[1]`."""
    other = doppelganger(identity, part, rng)
    op, ip_render = (render(FaceParams(who, probe), size, seed=seeds[0]) for who in (identity, other))
    om, in_render = (render(FaceParams(who, mate), size, seed=seeds[1]) for who in (identity, other))
    inpainted_probe, probe_region = swap_part(op, ip_render, part)
    inpainted_non_mate, mate_region = swap_part(om, in_render, part)
    return Quadruplet(op.image, om.image, inpainted_probe, inpainted_non_mate, probe_region, mate_region, part, identity, other)


def _check_pair(a: Rendered, b: Rendered, part: Part) -> None:
    if part not in PARTS:
        raise InvalidRequest("part", f"{part!r} is not one of {', '.join(PARTS)}")
    if a.params.nuisance != b.params.nuisance or a.seed != b.seed or a.size != b.size:
        raise InvalidRequest("rendered_b", "must share the nuisance, the noise seed and the size of rendered_a")
