"""`faceaudit audit`: a dataset audit through the CLI, its errors, and the no-argument demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from faceaudit.audit.cms_groups import positive_mass
from faceaudit.audit.dataset import load_dataset
from faceaudit.audit.demo import DEMO_MODELS, FULL
from faceaudit.audit.inputs import Inputs
from faceaudit.cli.main import main
from faceaudit.demo import FaceParams, Identity, Nuisance, render
from faceaudit.demo.dataset import SIZE, write_attribute_dataset
from faceaudit.engine.prepare import prepare
from faceaudit.methods.registry import METHODS, explain
from faceaudit.models import load_model, resolve_spec

PATCH = FULL.cms["patch"]
POLICY = Path(__file__).resolve().parents[2] / "deploy" / "gate-policy.example.yaml"


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
                 "--option", f"cms.patch={PATCH}", "--option", f"cms.stride={FULL.cms['stride']}",
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


def test_fast_demo_goes_through_the_service_and_tables_every_method(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["audit", "--fast", "--quiet", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str((out / "report.html").resolve()) and (out / "report.png").is_file()
    index = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    for name, kind in (("attribute", "classifier"), ("embedding", "embedding")):
        audit = json.loads((out / index["audits"][name]).read_text(encoding="utf-8"))
        rows = {row["method"]: row for row in index["ground_truth"][name]}
        # Every registered method of the model's kind has a row: numbers, or the reason it was skipped.
        assert {m for m, entry in METHODS.items() if kind in entry.kinds} <= set(rows)
        for method, row in rows.items():
            if row["skipped"] is None and method in METHODS:
                assert 0.0 <= row["region_mass"] <= 1.0 and 0.0 <= row["pointing_hit_rate"] <= 1.0
                assert method in (out / name / "report.html").read_text(encoding="utf-8")
            assert (row["inpainting_sr"] is not None) == (kind == "embedding" and row["skipped"] is None)
        # The map files came back from the server (Audit RPC, return_maps): each is the map the method gives
        # locally for the audit's target, and every face has them.
        assert all(image["files"] for image in audit["images"])
        assert (out / name / audit["cms"]["overall"]["file"]).is_file()
        sample = audit["images"][-1]
        loaded = load_model(DEMO_MODELS / f"{name}.onnx")
        inputs = Inputs(prepare(loaded, resolve_spec(loaded, {})), load_dataset(out / "data" / name))
        entry = next(e for e in inputs.dataset.entries if e.row == sample["row"])
        face = inputs.face(inputs.dataset.entries.index(entry), entry)
        local = explain(inputs.model, "gradient", image=face.image, target=face.target)
        fetched = np.load(out / name / sample["files"]["gradient"]["npy"])
        np.testing.assert_allclose(fetched, local.values, rtol=1e-4, atol=1e-6 * np.abs(local.values).max())
    embedding = json.loads((out / index["audits"]["embedding"]).read_text(encoding="utf-8"))
    assert "pairwise_sim" in embedding["methods_skipped"]  # the demo embedding model has no global average pooling
    # deploy/ci-gate.md: the example policy passes an audit against itself.
    capsys.readouterr()
    assert main(["gate", "--baseline", str(out / "attribute"), "--candidate", str(out / "attribute" / "audit.json"),
                 "--policy", str(POLICY)]) == 0
    assert "| fail |" not in capsys.readouterr().out


@pytest.mark.slow
def test_demo_without_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    assert main(["audit", "--quiet"]) == 0
    assert time.perf_counter() - started < 600
    printed = capsys.readouterr().out
    out = tmp_path / "faceaudit-report"
    assert str((out / "report.html").resolve()) in printed and (out / "report.png").is_file()
    for name in ("attribute", "identity", "embedding"):  # the CMS of each demo model
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
