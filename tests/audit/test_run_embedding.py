"""Embedding-model audits: mates and non-mates from the manifest, quadruplets for the inpainting game."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceaudit.audit.run import run_audit
from faceaudit.errors import InvalidRequest
from faceaudit.testing.zoo import planted_region_embedding
from tests.conftest import prepared

BOX = (8, 16, 20, 28)  # the zoo model's planted box (top, bottom, left, right): the embedding sees only it
ROWS = 4


@pytest.fixture(scope="module")
def model():
    # Centred inputs, so that random faces give unrelated embeddings (cosines near 0).
    return prepared(planted_region_embedding(), {"kind": "embedding", "mean": [0.5], "std": [0.25]})


@pytest.fixture
def quadruplets(tmp_path: Path) -> Path:
    """OP random, OM = OP plus mild noise, IP / IN = OP / OM with the box taken from another face."""
    rng = np.random.default_rng(0)
    box = np.zeros((32, 32), bool)
    box[BOX[0]:BOX[1], BOX[2]:BOX[3]] = True
    Image.fromarray(box.astype(np.uint8) * 255).save(tmp_path / "box.png")
    lines = ["image,identity,mate,inpainted_probe,inpainted_non_mate,region"]
    for i in range(ROWS):
        probe = rng.integers(30, 225, (32, 32, 3))
        mate = np.clip(probe + rng.integers(-6, 7, probe.shape), 0, 255)
        other = rng.integers(30, 225, (32, 32, 3))
        faces = {"op": probe, "om": mate, "ip": np.where(box[..., None], other, probe),
                 "in": np.where(box[..., None], other, mate)}
        for name, pixels in faces.items():
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / f"{i}_{name}.png")
        lines.append(f"{i}_op.png,p{i},{i}_om.png,{i}_ip.png,{i}_in.png,box.png")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_quadruplets_play_the_inpainting_game(model, quadruplets: Path, tmp_path: Path) -> None:
    path = run_audit(model, quadruplets, tmp_path / "out", methods=["gradient"],
                     games=["inpainting_game", "layer_verification"],
                     options={"cms": {"patch": 4, "stride": 4}, "games": {"inpainting_game": {"tau": 0.5, "steps": 10},
                                                                        "layer_verification": {"folds": 1}}})
    audit = json.loads(path.read_text(encoding="utf-8"))
    game = audit["games"]["inpainting_game"]
    assert game["summary"]["quadruplets"]["kept"] == ROWS  # every quadruplet meets eqs. 7-8: built right
    assert game["summary"]["oracle"]["sr_at_far_0.01"] == 1.0
    assert max(game["curves"]["oracle"]["far"]) == 0.0
    # The planted model sees only the box, so the gradient map lies in it and plays like the oracle.
    assert audit["methods"]["gradient"]["region_mass"] == pytest.approx(1.0)
    assert game["summary"]["gradient"]["sr_at_far_0.01"] == 1.0
    # Layer verification on (probe, mate) genuine and (probe, inpainted non-mate) impostor pairs.
    verification = audit["games"]["layer_verification"]
    assert verification["summary"]["embedding"]["auc"] == pytest.approx(1.0)
    assert audit["cms"]["target"].startswith("cosine to each row's mate")


def test_games_that_need_quadruplets_are_refused_without_them(model, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "manifest.csv").write_text("image,identity\n0.png,a\n1.png,a\n2.png,b\n3.png,b\n", encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        run_audit(model, tmp_path, tmp_path / "out", methods=["gradient"], games=["inpainting_game"])
    assert caught.value.field == "games" and "quadruplet" in str(caught.value)
    path = run_audit(model, tmp_path, tmp_path / "out", methods=["gradient"], games=[],
                     options={"cms": {"patch": 4, "stride": 4}})
    audit = json.loads(path.read_text(encoding="utf-8"))
    assert audit["dataset"]["images"] == 4 and audit["cms"]["groups"] == {} and "region_mass" not in audit["cms"]


def test_without_tau_the_threshold_comes_from_the_datasets_impostors(model, quadruplets: Path, tmp_path: Path) -> None:
    """ROWS rows give ROWS·(ROWS − 1) impostor scores; τ is taken at FPR 1/that count (below 100 scores)."""
    path = run_audit(model, quadruplets, tmp_path / "out", methods=["gradient"], games=["inpainting_game"],
                     options={"cms": {"patch": 4, "stride": 4}, "games": {"inpainting_game": {"steps": 10}}})
    options = json.loads(path.read_text(encoding="utf-8"))["games"]["inpainting_game"]["options"]
    impostors = ROWS * (ROWS - 1)
    assert options["fpr"] == pytest.approx(max(0.01, 1 / impostors))
