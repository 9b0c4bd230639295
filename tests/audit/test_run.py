"""End-to-end audits on a planted model: audit.json schema, CMS maths per group, restart from the cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

import faceaudit.audit.run as run_module
from faceaudit.audit.run import run_audit
from faceaudit.errors import FaceAuditError, InvalidRequest, UnsupportedModel
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import METHODS, get_method
from faceaudit.metrics.registry import get_game
from faceaudit.metrics.off_session_passes import count_off_session_passes
from faceaudit.testing.zoo import planted_region_classifier, qlinear_classifier
from tests.conftest import prepared

BOX = (8, 16, 20, 28)  # the zoo model's default planted box (top, bottom, left, right)
CMS = {"patch": 4, "stride": 2}
GROUPS = ["a", "b", "a", "b", "a"]


@pytest.fixture(scope="module")
def model():
    return prepared(planted_region_classifier(), {"kind": "classifier", "output_type": "probabilities"})


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "faces").mkdir(parents=True)
    rng = np.random.default_rng(0)
    region = np.zeros((32, 32), np.uint8)
    region[BOX[0]:BOX[1], BOX[2]:BOX[3]] = 255
    Image.fromarray(region).save(folder / "box.png")
    lines = ["image,class,group,region"]
    for i, group in enumerate(GROUPS):
        Image.fromarray(rng.integers(40, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "faces" / f"{i}.png")
        lines.append(f"faces/{i}.png,{i % 3},{group},box.png")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _audit(model, dataset: Path, out: Path, **kwargs) -> dict:
    options = {"cms": CMS, **kwargs.pop("options", {})}
    chosen = {"methods": ["gradient", "occlusion"], "games": ["pointing_game", "hiding_game"], **kwargs}
    path = run_audit(model, dataset, out, options=options, **chosen)
    assert path == out / "audit.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_audit_json_keys_and_files(model, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    audit = _audit(model, dataset, out)
    assert audit["schema"] == "faceaudit.audit/1"
    for key in ("faceaudit_version", "created", "versions", "model", "dataset", "options", "cms", "methods", "games"):
        assert key in audit
    assert set(audit["versions"]) >= {"python", "numpy", "onnx", "onnxruntime"}
    assert set(audit["model"]) >= {"name", "path", "sha256", "kind", "spec"} and audit["model"]["kind"] == "classifier"
    assert audit["model"]["sha256"] == model.loaded.sha256
    data = audit["dataset"]
    assert data["images"] == 5 and data["group_column"] == "group" and data["groups"] == {"a": 3, "b": 2}
    assert len(data["manifest_sha256"]) == 64
    cms = audit["cms"]
    assert cms["overall"] == {"file": "maps/cms.npy", "images": 5}
    assert cms["groups"] == {"a": {"file": "maps/cms_a.npy", "images": 3}, "b": {"file": "maps/cms_b.npy", "images": 2}}
    assert set(cms["group_differences"]) == {"a_vs_b"}
    assert set(cms["group_differences"]["a_vs_b"]) >= {"file", "one_minus_correlation", "l1"}
    for name in ("gradient", "occlusion"):
        assert set(audit["methods"][name]) >= {"images", "forward_passes", "seconds"}
        assert audit["methods"][name]["images"] == 5
    assert audit["methods"]["occlusion"]["forward_passes"] > audit["methods"]["gradient"]["forward_passes"] == 5
    assert set(audit["games"]) == {"pointing_game", "hiding_game"}
    for game in audit["games"].values():
        assert set(game) >= {"game", "x_label", "x", "curves", "summary", "options", "forward_passes", "notes"}
    for image in audit["images"]:
        for files in (v for k, v in image["files"].items() if k != "image"):
            assert (out / files["npy"]).is_file() and (out / files["png"]).is_file()
    assert (out / cms["group_differences"]["a_vs_b"]["file"]).is_file()


def test_cms_per_group_and_differences_as_documented(model, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    audit = _audit(model, dataset, out, games=[])
    # Independent: CIS maps computed here, one per image, averaged by hand.
    maps = []
    for i in range(len(GROUPS)):
        image = np.asarray(Image.open(dataset / "faces" / f"{i}.png"), dtype=np.float32)
        maps.append(cis(model, image=image, target=ExplainTarget(class_index=i % 3), options=CisOptions(**CMS)).values)
    maps = np.array(maps, dtype=np.float64)
    in_a = np.array([g == "a" for g in GROUPS])
    expected = {"cms": maps.mean(0), "cms_a": maps[in_a].mean(0), "cms_b": maps[~in_a].mean(0)}
    for stem, values in expected.items():
        np.testing.assert_allclose(np.load(out / "maps" / f"{stem}.npy"), values, rtol=1e-5, atol=1e-7)
    a, b = expected["cms_a"], expected["cms_b"]
    difference = audit["cms"]["group_differences"]["a_vs_b"]
    np.testing.assert_allclose(np.load(out / difference["file"]), a - b, rtol=1e-5, atol=1e-7)
    assert difference["one_minus_correlation"] == pytest.approx(1 - np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-5)
    pa, pb = np.maximum(a, 0) / np.maximum(a, 0).sum(), np.maximum(b, 0) / np.maximum(b, 0).sum()
    assert difference["l1"] == pytest.approx(np.abs(pa - pb).sum(), rel=1e-5)  # maps are float32
    # Planted ground truth: only pixels in the box move the scores, so every CIS drop is recorded in
    # windows that overlap the box, whose pixels lie less than a patch from it; the gradient is zero outside it.
    box = np.zeros((32, 32), bool)
    box[BOX[0]:BOX[1], BOX[2]:BOX[3]] = True
    near = binary_dilation(box, structure=np.ones((3, 3), bool), iterations=CMS["patch"] - 1)
    assert near.mean() < 0.25
    positive = np.maximum(expected["cms"], 0)
    assert positive[near].sum() == pytest.approx(positive.sum())
    assert audit["methods"]["gradient"]["region_mass"] == pytest.approx(1.0)
    assert audit["cms"]["region_mass"] == pytest.approx(positive[box].sum() / positive.sum())


def test_restart_reuses_cached_images(model, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    calls = {"cis": 0, "explain": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(run_module, "cis", counting("cis", run_module.cis))
    monkeypatch.setattr(run_module, "explain", counting("explain", run_module.explain))
    first = _audit(model, dataset, out, games=[])
    assert calls == {"cis": 5, "explain": 10} and first["cache"] == {"hits": 0, "misses": 15}
    second = _audit(model, dataset, out, games=[])
    assert calls == {"cis": 5, "explain": 10} and second["cache"] == {"hits": 15, "misses": 0}
    np.testing.assert_array_equal(np.load(out / "maps" / "cms.npy"), np.load(out / "maps" / "cms.npy"))
    assert second["methods"] == first["methods"]  # costs of cached maps are their recorded costs
    # A crash after two images: their entries survive, the rest are recomputed.
    entries = sorted((out / "cache").rglob("*.npz"))
    for entry in entries[2:]:
        entry.unlink()
    third = _audit(model, dataset, out, games=[])
    assert third["cache"] == {"hits": 2, "misses": 13} and calls["cis"] + calls["explain"] == 15 + 13
    # Other options are another key: nothing is reused.
    fourth = _audit(model, dataset, out, games=[], options={"methods": {"occlusion": {"patch": 5}}})
    assert fourth["cache"] == {"hits": 10, "misses": 5}


def test_white_box_maps_report_the_passes_they_run_off_the_models_session(model, dataset: Path, tmp_path: Path) -> None:
    """A server counts those through the off-session meter (the batcher counts black-box passes); a
    map the cache holds runs none, though audit.json still records its cost."""
    out = tmp_path / "out"
    counted: list[int] = []
    with count_off_session_passes(counted.append):
        first = _audit(model, dataset, out, games=[])
    assert sum(counted) == first["methods"]["gradient"]["forward_passes"] > 0  # occlusion's went to the session
    counted.clear()
    with count_off_session_passes(counted.append):
        second = _audit(model, dataset, out, games=[])
    assert second["cache"]["misses"] == 0 and counted == []
    assert second["methods"]["gradient"]["forward_passes"] == first["methods"]["gradient"]["forward_passes"]


def test_bad_requests_name_the_field(model, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _audit(model, dataset, tmp_path / "o", games=["inpainting_game"])
    assert caught.value.field == "games"
    with pytest.raises(InvalidRequest) as caught:
        _audit(model, dataset, tmp_path / "o", games=[], options={"nonsense": {}})
    assert caught.value.field == "options"
    with pytest.raises(InvalidRequest) as caught:
        _audit(model, dataset, tmp_path / "o", games=[], options={"methods": {"rise": {}}})
    assert caught.value.field == "options.methods"
    # An option's error names its place in the request (every method's and game's options are there).
    for options, field in (({"methods": {"occlusion": {"patch": -1}}}, "options.methods.occlusion.patch"),
                           ({"methods": {"occlusion": {"pach": 4}}}, "options.methods.occlusion.pach"),
                           ({"cms": {"stride": 0}}, "options.cms.stride"),
                           ({"games": {"hiding_game": {"steps": 0}}}, "options.games.hiding_game.steps")):
        with pytest.raises(InvalidRequest) as caught:
            _audit(model, dataset, tmp_path / "o", games=["hiding_game"], options=options)
        assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")
    # Raised while the maps are made (cis finding no correspondence point for a stride): named too, while
    # an error about something else (the image) keeps its own field.
    for raised, field in (("stride", "options.cms.stride"), ("image", "image")):
        def refuse(*args, raised=raised, **kwargs):
            raise InvalidRequest(raised, "refused")
        with monkeypatch.context() as patch:
            patch.setattr(run_module, "cis", refuse)
            with pytest.raises(InvalidRequest) as caught:
                _audit(model, dataset, tmp_path / "o", games=[])
        assert caught.value.field == field and str(caught.value) == f"{field}: refused"
    with pytest.raises(InvalidRequest) as caught:
        _audit(model, dataset, tmp_path / "o", methods=["xface"], games=[])
    assert caught.value.field == "methods"
    with pytest.raises(InvalidRequest) as caught:
        run_audit(model, dataset, tmp_path / "o", group_column="skin")
    assert caught.value.field == "group_column"


def test_unknown_method_and_game_names_name_the_audits_fields(model, dataset: Path, tmp_path: Path) -> None:
    for chosen, field, message in (({"methods": ["gradient", "nope"]}, "methods", "unknown method 'nope'"),
                                   ({"methods": [3]}, "methods", "3 is not a method name"),
                                   ({"games": ["nope"]}, "games", "unknown game 'nope'"),
                                   ({"games": [None]}, "games", "None is not a game name")):
        with pytest.raises(InvalidRequest) as caught:
            _audit(model, dataset, tmp_path / "o", **chosen)
        assert caught.value.field == field and str(caught.value).startswith(f"{field}: {message}; available: ")
    # The registries keep their own field: Explain and Evaluate (and their CLI flags) take one method, one game.
    for lookup, field in ((get_method, "method"), (get_game, "game")):
        with pytest.raises(InvalidRequest) as caught:
            lookup("nope")
        assert caught.value.field == field


class Stop(Exception):
    """What a cancelled call's progress callback raises."""


def test_a_raising_progress_stops_a_long_white_box_map_within_one_batch(
        model, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SmoothGrad, 400 samples in batches of 8, on the first image: the audit's callback, raising on its third
    call from inside the map (what a cancelled Audit call's does), stops it after its third batch."""
    seen = {"inside": False, "samples": 0}
    real = METHODS["smoothgrad"]

    def counted(*args, progress=None, **kwargs):
        seen["inside"] = True

        def forward(done: int, total: int, phase: str) -> None:
            seen["samples"] = done
            progress(done, total, phase)

        return real.run(*args, progress=None if progress is None else forward, **kwargs)

    monkeypatch.setitem(METHODS, "smoothgrad", dataclasses.replace(real, run=counted))
    calls: list[tuple[int, int, str, bool]] = []

    def progress(done: int, total: int, phase: str) -> None:
        calls.append((done, total, phase, seen["inside"]))
        if sum(inside for *_, inside in calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        _audit(model, dataset, tmp_path / "o", methods=["smoothgrad"], games=[], progress=progress,
               options={"methods": {"smoothgrad": {"samples": 400, "chunk": 8}}})
    assert seen["samples"] == 3 * 8
    assert {call[:3] for call in calls} == {(0, 5, "cms and maps")}  # told again: no image is done yet


def test_the_cis_map_reports_through_the_audits_progress(
        model, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped_inside: list[bool] = []

    def watched(*args, **kwargs):
        try:
            return cis(*args, **kwargs)
        except Stop:
            stopped_inside.append(True)
            raise

    def progress(done: int, total: int, phase: str) -> None:
        raise Stop

    monkeypatch.setattr(run_module, "cis", watched)
    with pytest.raises(Stop):
        _audit(model, dataset, tmp_path / "o", games=[], progress=progress)
    assert stopped_inside == [True]


def test_quantised_models_get_black_box_methods(dataset: Path, tmp_path: Path) -> None:
    quantised = prepared(qlinear_classifier(), {"kind": "classifier"})
    with pytest.raises(UnsupportedModel, match="gradient needs float operators"):
        run_audit(quantised, dataset, tmp_path / "o", methods=["gradient"], games=[])
    path = run_audit(quantised, dataset, tmp_path / "o", games=[], options={"cms": CMS})
    assert list(json.loads(path.read_text(encoding="utf-8"))["methods"]) == ["occlusion"]


def test_another_spec_of_the_same_file_is_not_served_from_the_cache(model, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _audit(model, dataset, out, games=[])
    rescaled = prepared(planted_region_classifier(), {"kind": "classifier", "output_type": "probabilities", "scale": 0.002})
    assert rescaled.loaded.sha256 == model.loaded.sha256
    assert _audit(rescaled, dataset, out, games=[])["cache"] == {"hits": 0, "misses": 15}


def test_bad_landmarks_name_the_row(model, tmp_path: Path) -> None:
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 90 + i, np.uint8)).save(tmp_path / f"{i}.png")
    good = "10,12,22,12,16,18,11,24,21,24"
    flipped = "22,12,10,12,16,18,21,24,11,24"  # eyes and mouth corners swapped: flipped triangles
    header = "image,class,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5"
    (tmp_path / "manifest.csv").write_text(f"{header}\n0.png,0,{good}\n1.png,0,{flipped}\n", encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        run_audit(model, tmp_path, tmp_path / "out", methods=["gradient"], games=[], options={"cms": CMS})
    assert caught.value.field == "manifest.csv[row 2].x1..y5" and "flipped" in str(caught.value)


def test_all_methods_leave_out_those_that_refuse(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import faceaudit.methods.registry as registry

    kept = {name: registry.METHODS[name] for name in ("gradient", "gradcam", "xface")}
    monkeypatch.setattr(run_module, "METHODS", kept)  # a short catalogue: gradcam refuses this model
    quantised_free = prepared(planted_region_classifier(), {"kind": "classifier", "output_type": "probabilities"})
    path = run_audit(quantised_free, dataset, tmp_path / "out", methods=["all"], games=["sanity_check"],
                     options={"cms": CMS})
    audit = json.loads(path.read_text(encoding="utf-8"))
    assert list(audit["methods"]) == ["gradient"]  # xface explains embedding models only
    assert set(audit["methods_skipped"]) == {"gradcam"}
    assert audit["games"]["sanity_check"]["options"]["methods"] == ["gradient"]
    with pytest.raises(FaceAuditError):
        run_audit(quantised_free, dataset, tmp_path / "out2", methods=["gradient", "gradcam"], games=[],
                  options={"cms": CMS})


def test_cms_named_among_the_methods_joins_the_map_games(model, dataset: Path, tmp_path: Path) -> None:
    """John et al.'s comparison: the CMS projected onto each face is one more series of every map game."""
    out = tmp_path / "out"
    audit = _audit(model, dataset, out, methods=["cms", "gradient", "occlusion"], games=["confidence", "pointing_game"],
                   options={"games": {"pointing_game": {"tolerance_px": 0}}})
    confidence = audit["games"]["confidence"]["summary"]
    assert {"cms", "gradient", "occlusion"} <= confidence.keys()
    assert sum(confidence[m]["win_pct"] for m in ("cms", "gradient", "occlusion")) == pytest.approx(100.0)
    assert "cms" not in audit["methods"]  # a model-level map, not a per-image method
    # No landmarks: the canonical frame is the input frame, so every face gets the CMS itself.
    cms = np.load(out / audit["cms"]["overall"]["file"])
    peak = cms == cms.max()
    inside = np.zeros_like(peak)
    inside[BOX[0]:BOX[1], BOX[2]:BOX[3]] = True
    expected = (peak & inside).sum() / peak.sum()  # the pointing game's default: the share of tied maxima inside
    assert audit["games"]["pointing_game"]["summary"]["cms"]["hit_rate"] == pytest.approx(expected)


def test_the_cms_alone_plays_the_map_games_without_the_sanity_check(model, dataset: Path, tmp_path: Path) -> None:
    path = run_audit(model, dataset, tmp_path / "out", methods=["cms"], options={"cms": CMS})
    audit = json.loads(path.read_text(encoding="utf-8"))
    assert "sanity_check" not in audit["games"] and audit["methods"] == {}
    assert set(audit["games"]["pointing_game"]["summary"]) == {"cms", "random"}
    with pytest.raises(InvalidRequest) as info:
        run_audit(model, dataset, tmp_path / "again", methods=["cms"], games=["sanity_check"], options={"cms": CMS})
    assert info.value.field == "games"
