"""Doppelgangers, inpainting-game quadruplets and the planted attribute."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from faceaudit.demo import (
    PARTS, FaceParams, Nuisance, attribute_cue, doppelganger, quadruplet, render, sample_identity,
    sample_nuisance, swap_part,
)
from faceaudit.demo.params import _visible
from faceaudit.errors import InvalidRequest

LOCAL_PARTS = ("brows", "eyes", "nose", "mouth", "accessory")


@pytest.mark.parametrize("part", PARTS)
def test_a_doppelganger_differs_in_exactly_one_part(part: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        identity = sample_identity(rng)
        other = doppelganger(identity, part, rng)  # type: ignore[arg-type]
        changed = [f.name for f in dataclasses.fields(identity) if getattr(identity, f.name) != getattr(other, f.name)]
        assert changed == [part]
        assert _visible(getattr(identity, part)) != _visible(getattr(other, part))  # and the change shows


@pytest.mark.parametrize("part", PARTS)
def test_quadruplet_images_differ_only_inside_the_region_and_equal_the_doppelganger(part: str) -> None:
    rng = np.random.default_rng(PARTS.index(part))
    identity = attribute_cue(sample_identity(rng), on=part == "eyes")  # the eye swap must carry the make-up
    probe = dataclasses.replace(sample_nuisance(rng), noise_sigma=3.0)
    mate = dataclasses.replace(sample_nuisance(rng), noise_sigma=3.0)
    quad = quadruplet(identity, part, probe, mate, rng, seeds=(10, 11))  # type: ignore[arg-type]
    assert np.array_equal(quad.original_probe, render(FaceParams(identity, probe), seed=10).image)
    assert np.array_equal(quad.mate, render(FaceParams(identity, mate), seed=11).image)
    # The region catches every pixel the other part changes: the pasted image is the doppelganger's render.
    assert np.array_equal(quad.inpainted_probe, render(FaceParams(quad.non_mate_identity, probe), seed=10).image)
    assert np.array_equal(quad.inpainted_non_mate, render(FaceParams(quad.non_mate_identity, mate), seed=11).image)
    for original, inpainted, region in ((quad.original_probe, quad.inpainted_probe, quad.probe_region),
                                        (quad.mate, quad.inpainted_non_mate, quad.mate_region)):
        changed = (original != inpainted).any(axis=2)
        assert changed.any()
        assert not (changed & ~region).any()
        if part in LOCAL_PARTS:  # a face part, not the whole head
            assert region.mean() < 0.15


@pytest.mark.parametrize("part", PARTS)
def test_the_region_holds_the_parts_masks_of_both_renders(part: str) -> None:
    rng = np.random.default_rng(20 + PARTS.index(part))
    identity, nuisance = sample_identity(rng), sample_nuisance(rng)
    a = render(FaceParams(identity, nuisance))
    b = render(FaceParams(doppelganger(identity, part, rng), nuisance))  # type: ignore[arg-type]
    _, region = swap_part(a, b, part)  # type: ignore[arg-type]
    assert not ((a.masks[part] | b.masks[part]) & ~region).any()


def test_swap_part_needs_renders_under_one_nuisance_and_seed() -> None:
    identity = sample_identity(np.random.default_rng(0))
    a = render(FaceParams(identity, Nuisance()))
    with pytest.raises(InvalidRequest, match="rendered_b"):
        swap_part(a, render(FaceParams(identity, Nuisance(yaw=1.0))), "nose")
    with pytest.raises(InvalidRequest, match="rendered_b"):
        swap_part(a, render(FaceParams(identity, Nuisance()), seed=3), "nose")
    with pytest.raises(InvalidRequest, match="part"):
        swap_part(a, a, "ears")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="part"):
        doppelganger(identity, "ears", np.random.default_rng(0))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_the_attribute_cue_changes_pixels_only_inside_its_small_region(seed: int) -> None:
    rng = np.random.default_rng(seed)
    identity, nuisance = sample_identity(rng), dataclasses.replace(sample_nuisance(rng), noise_sigma=2.0)
    off = render(FaceParams(attribute_cue(identity, on=False), nuisance), seed=seed)
    on = render(FaceParams(attribute_cue(identity, on=True), nuisance), seed=seed)
    changed = (off.image != on.image).any(axis=2)
    assert changed.sum() > 10
    assert not (changed & ~on.cue_mask).any()
    assert np.array_equal(on.cue_mask, off.cue_mask)
    assert 0 < on.cue_mask.mean() < 0.03
    assert not (on.cue_mask & (on.masks["nose"] | on.masks["mouth"] | on.masks["hair"])).any()


def test_the_planted_attribute_is_the_only_field_attribute_cue_sets() -> None:
    identity = sample_identity(np.random.default_rng(1))
    assert not identity.makeup
    assert attribute_cue(identity, on=True) == dataclasses.replace(identity, makeup=True)
    assert attribute_cue(attribute_cue(identity, on=True), on=False) == identity


def test_samplers_are_deterministic_for_a_generator_seed() -> None:
    first = (sample_identity(np.random.default_rng(9)), sample_nuisance(np.random.default_rng(9)))
    again = (sample_identity(np.random.default_rng(9)), sample_nuisance(np.random.default_rng(9)))
    assert first == again
    assert sample_identity(np.random.default_rng(9)) != sample_identity(np.random.default_rng(10))
