"""`faceaudit audit`: a dataset audit through the CLI, its errors, and the no-argument demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from faceaudit.audit.cms_groups import positive_mass
from faceaudit.cli.audit import DEMO_MODELS, DEMO_OPTIONS
from faceaudit.cli.main import main
from faceaudit.demo import FaceParams, Identity, Nuisance, render
from faceaudit.demo.dataset import SIZE, write_attribute_dataset

PATCH = DEMO_OPTIONS["cms"]["patch"]


def _cue_share(cms: np.ndarray) -> tuple[float, float]:
    """Share of the CMS's positive mass near the planted cue, and that region's share of the frame.

    The cue region comes from the renderer: a face under no nuisance is drawn on the ArcFace layout
    the audit aligns to (its five points lie within 1 px of the template), grown by half a CIS patch,
    since each occlusion drop is spread over its whole window.
    """
    cue = render(FaceParams(Identity(makeup=True), Nuisance()), SIZE).cue_mask
    near = binary_dilation(cue, structure=np.ones((3, 3), bool), iterations=PATCH // 2)
    return float(positive_mass(cms)[near].sum()), float(near.mean())


def test_attribute_model_audit_lights_up_the_planted_cue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_attribute_dataset(tmp_path / "data", identities=6)
    code = main(["audit", "--model", str(DEMO_MODELS / "attribute.onnx"), "--dataset", str(tmp_path / "data"),
                 "--group-column", "skin", "--methods", "gradient", "--games", "pointing-game",
                 "--option", f"cms.patch={PATCH}", "--option", f"cms.stride={DEMO_OPTIONS['cms']['stride']}",
                 "--out", str(tmp_path / "out"), "--quiet", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["audits"][0]["report"] == str((tmp_path / "out" / "report.html").resolve())
    audit = json.loads((tmp_path / "out" / "audit.json").read_text(encoding="utf-8"))
    assert audit["dataset"]["groups"] == {"light": 6, "dark": 6}
    assert audit["options"]["cms"]["patch"] == PATCH and list(audit["games"]) == ["pointing_game"]
    share, area = _cue_share(np.load(tmp_path / "out" / audit["cms"]["overall"]["file"]))
    assert share > 0.5 and share > 4 * area
    for group in ("light", "dark"):
        assert (tmp_path / "out" / audit["cms"]["groups"][group]["file"]).is_file()
    assert audit["cms"]["group_differences"]["light_vs_dark"]["l1"] is not None


@pytest.mark.parametrize(("argv", "field"), [
    (["--model", "m.onnx"], "dataset"),
    (["--dataset", "d"], "model"),
    (["--option", "occlusion-patch=3"], "option"),
    (["--option", "nothing.patch=3"], "option"),
])
def test_errors_name_the_field(argv: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--out", str(tmp_path), "--quiet", *argv]) == 2
    assert f"error: {field}:" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_without_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    assert main(["audit", "--quiet"]) == 0
    assert time.perf_counter() - started < 120
    printed = capsys.readouterr().out
    out = tmp_path / "faceaudit-demo"
    for name in ("attribute", "embedding"):
        assert str((out / name / "report.html").resolve()) in printed
        assert (out / name / "report.html").is_file()
    attribute = json.loads((out / "attribute" / "audit.json").read_text(encoding="utf-8"))
    share, area = _cue_share(np.load(out / "attribute" / attribute["cms"]["overall"]["file"]))
    assert share > 0.5 and share > 4 * area
    assert set(attribute["cms"]["groups"]) == {"light", "dark"}
    assert {"hiding_game", "deletion", "insertion", "confidence", "pointing_game", "sanity_check"} <= set(attribute["games"])
    embedding = json.loads((out / "embedding" / "audit.json").read_text(encoding="utf-8"))
    assert {"hiding_game", "inpainting_game"} <= set(embedding["games"]) and not embedding["games_skipped"]
    assert embedding["games"]["hiding_game"]["options"]["fill"] in (None, "non_mate")
    inpainting = embedding["games"]["inpainting_game"]["summary"]
    assert inpainting["oracle"]["sr_at_far_0.05"] == 1.0
