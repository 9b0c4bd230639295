"""The synthetic-face renderer: determinism, exact landmarks, consistent masks, transforms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, label

from faceaudit.alignment.templates import ARCFACE_112
from faceaudit.demo import MASKS, Accessory, FaceParams, Hair, Identity, Nuisance, render, sample_identity, sample_nuisance
from faceaudit.demo.geometry import apply, nuisance_transform
from faceaudit.errors import InvalidRequest

PART_LANDMARKS = {"brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68)}
QUIET = Nuisance(noise_sigma=0.0, light=(0.0, 0.0))


def random_faces(count: int, seed: int = 7) -> list[FaceParams]:
    """Random faces; every third one wears glasses (the accessory that crowds eyes and brows)."""
    rng = np.random.default_rng(seed)
    faces = []
    for i in range(count):
        identity = sample_identity(rng)
        if i % 3 == 0:
            identity = dataclasses.replace(identity, accessory=Accessory("glasses"))
        faces.append(FaceParams(identity, sample_nuisance(rng)))
    return faces


def test_render_returns_image_landmarks_and_masks_of_the_right_shapes() -> None:
    face = render(FaceParams(), 112)
    assert face.image.shape == (112, 112, 3) and face.image.dtype == np.uint8
    assert face.landmarks68.shape == (68, 2) and face.landmarks5.shape == (5, 2)
    assert set(face.masks) == set(MASKS)
    assert all(mask.shape == (112, 112) and mask.dtype == bool for mask in face.masks.values())


def test_same_params_and_seed_give_identical_bytes_and_other_seeds_other_noise() -> None:
    params = random_faces(1)[0]
    params = dataclasses.replace(params, nuisance=dataclasses.replace(params.nuisance, noise_sigma=3.0))
    first, again, other = render(params, seed=5), render(params, seed=5), render(params, seed=6)
    assert first.image.tobytes() == again.image.tobytes()
    assert np.array_equal(first.landmarks68, again.landmarks68)
    assert all(np.array_equal(first.masks[k], again.masks[k]) for k in MASKS)
    assert np.mean(first.image != other.image) > 0.5  # the noise differs almost everywhere
    assert np.array_equal(first.landmarks68, other.landmarks68)  # the seed drives only the noise
    assert all(np.array_equal(first.masks[k], other.masks[k]) for k in MASKS)


def test_without_noise_the_seed_does_not_matter() -> None:
    params = FaceParams(nuisance=QUIET)
    assert render(params, seed=1).image.tobytes() == render(params, seed=2).image.tobytes()


@pytest.mark.parametrize("params", random_faces(30), ids=lambda p: "")
def test_landmarks_fall_inside_their_parts_mask(params: FaceParams) -> None:
    face = render(params)
    for part, indices in PART_LANDMARKS.items():
        mask = face.masks[part]
        if part == "eyes":  # eye corners lie on the eye outline
            mask = binary_dilation(mask, iterations=1)
        x, y = np.rint(face.landmarks68[list(indices)]).astype(int).T
        outside = [i for i, inside in zip(indices, mask[y, x]) if not inside]
        assert not outside, f"landmarks {outside} of {part} fall outside its mask"


@pytest.mark.parametrize("params", random_faces(10, seed=3), ids=lambda p: "")
def test_masks_are_disjoint_and_the_features_are_present(params: FaceParams) -> None:
    face = render(params)
    stack = np.stack([face.masks[k] for k in MASKS])
    assert stack.sum(axis=0).max() <= 1
    for part in ("skin", "brows", "eyes", "nose", "mouth"):
        assert face.masks[part].sum() > 10, part
    assert face.masks["skin"].sum() > face.masks["nose"].sum() > 0
    assert (face.cue_mask & face.masks["eyes"]).sum() < 0.25 * face.cue_mask.sum()  # above the eyes, not on them


def test_hair_and_accessory_masks_follow_the_identity() -> None:
    bald = render(FaceParams(Identity(hair=Hair(style="bald"))))
    long = render(FaceParams(Identity(hair=Hair(style="long"))))
    short = render(FaceParams(Identity(hair=Hair(style="short"))))
    assert not bald.masks["hair"].any()
    assert long.masks["hair"].sum() > short.masks["hair"].sum() > 0
    assert not short.masks["accessory"].any()
    assert render(FaceParams(Identity(accessory=Accessory("glasses")))).masks["accessory"].sum() > 50


def test_neutral_face_sits_on_the_arcface_five_point_layout() -> None:
    face = render(FaceParams(nuisance=QUIET))
    assert np.abs(face.landmarks5 - ARCFACE_112).max() < 2.5


@pytest.mark.parametrize("moved", [
    Nuisance(shift=(3.0, -2.0)),
    Nuisance(rotation_deg=7.0),
    Nuisance(rotation_deg=-5.0, scale=1.04, shift=(1.5, 2.5)),
])
def test_a_rigid_nuisance_moves_landmarks_and_drawing_by_exactly_that_transform(moved: Nuisance) -> None:
    identity = random_faces(1, seed=11)[0].identity
    base, after = render(FaceParams(identity, QUIET)), render(FaceParams(identity, moved))
    relative = nuisance_transform(moved) @ np.linalg.inv(np.vstack([nuisance_transform(QUIET), [0, 0, 1]]))
    assert np.abs(apply(relative, base.landmarks68) - after.landmarks68).max() < 0.5
    # The pixels follow: the centroid of each blob of each part's mask moves by the same transform.
    for part, blobs in (("brows", 2), ("eyes", 2), ("nose", 1), ("mouth", 1)):
        before, after_ = centroids(base.masks[part]), centroids(after.masks[part])
        assert len(before) == len(after_) == blobs, part
        assert np.abs(apply(relative, before) - after_).max() < 0.5, part


def centroids(mask: np.ndarray) -> np.ndarray:
    """(x, y) centroids of the connected components of `mask`, left to right."""
    labels, count = label(mask)
    points = np.array([np.argwhere(labels == k)[:, ::-1].mean(axis=0) for k in range(1, count + 1)])
    return points[np.argsort(points[:, 0])]


def test_an_integer_shift_moves_the_image_pixel_for_pixel() -> None:
    identity = random_faces(1, seed=12)[0].identity
    base = render(FaceParams(identity, QUIET))
    shifted = render(FaceParams(identity, dataclasses.replace(QUIET, shift=(3.0, -2.0))))
    assert np.array_equal(shifted.image[10:100, 13:103], base.image[12:102, 10:100])
    assert np.array_equal(shifted.landmarks68, base.landmarks68 + [3.0, -2.0])


def test_yaw_shifts_the_nose_tip_by_its_value_and_leaves_the_jaw() -> None:
    base, turned = render(FaceParams()), render(FaceParams(nuisance=Nuisance(yaw=2.0)))
    assert turned.landmarks68[30] == pytest.approx(base.landmarks68[30] + [2.0, 0.0])
    assert np.array_equal(turned.landmarks68[:17], base.landmarks68[:17])
    assert turned.masks["nose"][:, :58].sum() < base.masks["nose"][:, :58].sum()  # the nose moved right


def test_positive_rotation_turns_the_face_counter_clockwise_on_screen() -> None:
    turned = render(FaceParams(nuisance=Nuisance(rotation_deg=10.0)))
    left_eye, right_eye = turned.landmarks68[36:42].mean(axis=0), turned.landmarks68[42:48].mean(axis=0)
    assert right_eye[1] < left_eye[1] - 4.0  # the image-right eye rises
    assert turned.masks["eyes"][:, 56:].nonzero()[0].mean() < turned.masks["eyes"][:, :56].nonzero()[0].mean() - 4.0


def test_expression_raises_the_mouth_corners() -> None:
    base, smile = render(FaceParams()), render(FaceParams(nuisance=Nuisance(expression=2.5)))
    assert smile.landmarks68[[48, 54], 1] == pytest.approx(base.landmarks68[[48, 54], 1] - 2.5)


def test_larger_sizes_scale_the_geometry_in_the_pixel_centre_convention() -> None:
    small, large = render(FaceParams(), 112), render(FaceParams(), 224)
    assert large.image.shape == (224, 224, 3)
    assert np.allclose(large.landmarks68, (small.landmarks68 + 0.5) * 2 - 0.5)


def test_render_rejects_a_tiny_size() -> None:
    with pytest.raises(InvalidRequest, match="size"):
        render(FaceParams(), 8)
