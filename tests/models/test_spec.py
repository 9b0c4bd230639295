"""ModelSpec inference from real-export quirks, user values, spec files and ambiguity errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest, SpecAmbiguous
from faceaudit.models import load_model, resolve_spec
from faceaudit.models.inference import infer_spec
from faceaudit.models.spec import ModelSpec, spec_file_for
from faceaudit.testing import zoo

from tests.models.test_compat import _old_exporter_model


def _fields(spec: ModelSpec, *names: str) -> dict:
    return {n: (getattr(spec, n), spec.source(n)) for n in names}


def test_nchw_classifier_fields_are_inferred_and_pixel_fields_assumed():
    spec = infer_spec(zoo.vgg_classifier(height=32, width=24))
    assert _fields(spec, "input_name", "layout", "channels", "height", "width", "output_name") == {
        "input_name": ("input", "inferred"), "layout": ("NCHW", "inferred"), "channels": (3, "inferred"),
        "height": (32, "inferred"), "width": (24, "inferred"), "output_name": ("logits", "inferred"),
    }
    assert set(spec.assumed_fields()) == {"channel_order", "scale", "mean", "std", "softmax", "output_type"}
    assert spec.kind is None and spec.source("kind") == "unknown"  # a Gemm head reveals nothing


def test_softmax_head_is_a_classifier_with_probabilities():
    spec = infer_spec(zoo.vgg_classifier(softmax=True))
    assert _fields(spec, "kind", "output_type") == {
        "kind": ("classifier", "inferred"), "output_type": ("probabilities", "inferred")}


def test_l2_normalised_head_is_an_embedding():
    assert _fields(infer_spec(zoo.iresnet_embedding(normalize=True)), "kind") == {"kind": ("embedding", "inferred")}
    assert infer_spec(zoo.iresnet_embedding()).kind is None


def test_channels_last_and_tf_names():
    spec = infer_spec(zoo.tf_style_classifier(height=16, width=20))
    assert _fields(spec, "input_name", "layout", "height", "width", "output_name") == {
        "input_name": ("input_1:0", "inferred"), "layout": ("NHWC", "inferred"), "height": (16, "inferred"),
        "width": (20, "inferred"), "output_name": ("516", "inferred"),
    }


def test_greyscale_input():
    spec = infer_spec(zoo.vgg_classifier(channels=1))
    assert (spec.channels, spec.layout) == (1, "NCHW")


def test_transpose_reveals_nhwc_when_dims_are_symbolic():
    proto = zoo.vgg_classifier(layout="NHWC")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((1, "h"), (2, "w"), (3, "c")):
        dims[axis].Clear()
        dims[axis].dim_param = name
    spec = infer_spec(proto)
    assert (spec.layout, spec.height, spec.channels) == ("NHWC", None, None)
    with pytest.raises(SpecAmbiguous, match=r"height.*--size"):
        spec.require("height")


def test_initializers_listed_as_inputs_are_not_inputs():
    spec = infer_spec(load_model(_old_exporter_model().SerializeToString()).proto)
    assert spec.input_name == "input"


def test_two_outputs_leave_the_output_unknown_and_the_error_names_the_flag():
    spec = infer_spec(zoo.two_output_model())
    with pytest.raises(SpecAmbiguous) as info:
        spec.require("output_name")
    assert info.value.field == "output_name" and "--output" in str(info.value)
    assert spec.with_values({"output": "517"}).output_name == "517"


def test_given_values_are_marked_and_validated():
    spec = infer_spec(zoo.vgg_classifier()).with_values(
        {"kind": "classifier", "channel_order": "bgr", "mean": [0.5, 0.4, 0.3], "std": 0.25, "scale": 1}
    )
    assert _fields(spec, "kind", "channel_order", "mean", "std") == {
        "kind": ("classifier", "given"), "channel_order": ("BGR", "given"),
        "mean": ((0.5, 0.4, 0.3), "given"), "std": ((0.25,), "given"),
    }
    np.testing.assert_allclose(spec.pixel_affine, ((4.0, 4.0, 4.0), (2.0, 1.6, 1.2)))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"kind": "detector"}, "kind"),
        ({"layout": "CHW"}, "layout"),
        ({"channels": 2}, "channels"),
        ({"height": 0}, "height"),
        ({"height": "12.5"}, "height"),
        ({"scale": -1}, "scale"),
        ({"mean": [1, 2]}, "mean"),
        ({"std": [1, 0, 1]}, "std"),
        ({"std": float("nan")}, "std"),
        ({"softmax": "yes"}, "softmax"),
        ({"colour": "RGB"}, "colour"),
    ],
)
def test_bad_values_name_their_field(values, field):
    with pytest.raises(InvalidRequest) as info:
        infer_spec(zoo.vgg_classifier()).with_values(values)
    assert info.value.field == field


def test_values_contradicting_the_graph_are_refused():
    with pytest.raises(InvalidRequest, match="height: given 96 but the model graph fixes it to 32"):
        infer_spec(zoo.vgg_classifier()).with_values({"height": 96})
    with pytest.raises(InvalidRequest, match="layout"):
        infer_spec(zoo.vgg_classifier()).with_values({"layout": "NHWC"})


def test_mean_length_must_match_channels_and_softmax_needs_logits():
    with pytest.raises(InvalidRequest, match="mean: has 3 values for a 1-channel input"):
        infer_spec(zoo.vgg_classifier(channels=1)).with_values({"mean": [1, 2, 3]})
    with pytest.raises(InvalidRequest, match="softmax"):
        infer_spec(zoo.vgg_classifier(softmax=True)).with_values({"softmax": True})


def test_spec_file_next_to_the_model_then_explicit_values_win(tmp_path):
    path = tmp_path / "face.onnx"
    path.write_bytes(zoo.vgg_classifier().SerializeToString())
    (tmp_path / "face.spec.yaml").write_text("kind: classifier\nchannel_order: BGR\nmean: [1, 2, 3]\n")
    assert spec_file_for(path) == tmp_path / "face.spec.yaml"
    spec = resolve_spec(load_model(path))
    assert (spec.kind, spec.channel_order, spec.mean) == ("classifier", "BGR", (1.0, 2.0, 3.0))
    spec = resolve_spec(load_model(path), {"channel_order": "RGB"})
    assert (spec.channel_order, spec.source("channel_order")) == ("RGB", "given")


def test_json_spec_file_and_bad_spec_files(tmp_path):
    path = tmp_path / "face.onnx"
    path.write_bytes(zoo.vgg_classifier().SerializeToString())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "embedding", "output": "logits"}))
    assert resolve_spec(load_model(path), spec_file=other).kind == "embedding"
    other.write_text("{not json")
    with pytest.raises(InvalidRequest, match="spec_file"):
        resolve_spec(load_model(path), spec_file=other)
    other.write_text("[1, 2]")
    with pytest.raises(InvalidRequest, match="spec_file"):
        resolve_spec(load_model(path), spec_file=other)


def test_to_dict_reports_every_field_with_its_source():
    report = infer_spec(zoo.vgg_classifier()).to_dict()
    assert report["scale"] == {"value": pytest.approx(1 / 255), "source": "assumed"}
    assert report["kind"] == {"value": None, "source": "unknown"}
    assert report["mean"] == {"value": [0.0], "source": "assumed"}


def test_bad_spec_files_are_invalid_requests(tmp_path):
    loaded = load_model(zoo.vgg_classifier().SerializeToString())
    binary = tmp_path / "face.png"
    binary.write_bytes(b"\x89PNG\xff\xfe\x00")
    overflow = tmp_path / "big.json"
    overflow.write_text('{"height": 1e999}')
    for path in (tmp_path / "absent.yaml", tmp_path, binary, overflow):
        with pytest.raises(InvalidRequest):
            resolve_spec(loaded, spec_file=path)


def test_caller_values_override_the_file_whatever_alias_each_uses(tmp_path):
    path = tmp_path / "two.onnx"
    path.write_bytes(zoo.two_output_model().SerializeToString())
    (tmp_path / "two.spec.yaml").write_text('output_name: "516"\n')
    assert resolve_spec(load_model(path), {"output": "517"}).output_name == "517"
    with pytest.raises(InvalidRequest, match="given twice"):
        resolve_spec(load_model(path), {"output": "517", "output_name": "516"})


def test_spec_built_directly_is_validated():
    with pytest.raises(InvalidRequest) as info:
        ModelSpec(layout="nchw")
    assert info.value.field == "layout"


def test_classifier_only_fields_are_not_applicable_to_embeddings():
    spec = infer_spec(zoo.iresnet_embedding(normalize=True))
    assert spec.source("output_type") == spec.source("softmax") == "not applicable"
    assert "output_type" not in spec.unknown_fields() and "softmax" not in spec.assumed_fields()


def _grey_ramp_input(spec: ModelSpec) -> np.ndarray:
    """The model input of the 256 grey levels, by the real preprocessing (no spec validation involved)."""
    from faceaudit.images.preprocess import to_model_input

    ramp = np.repeat(np.arange(256, dtype=np.float32)[None, :, None], 3, axis=2)[None]  # (1, 1, 256, 3)
    with np.errstate(over="ignore", invalid="ignore"):
        return to_model_input(ramp, replace(spec, height=1, width=256))


@pytest.mark.parametrize(("values", "field"), [
    ({"mean": [1e308]}, "mean"),  # the fuzz review's four (repro_spec_float32_overflow.py)
    ({"std": [1e-300]}, "std"),
    ({"scale": 1e300}, "scale"),
    ({"std": [1e300]}, "std"),
    ({"mean": 1e10}, "mean"),  # every grey level lands on one float32
    ({"mean": [0, 1e6, 0]}, "mean"),  # one channel keeps 17 of 256 levels
    ({"scale": 1e38}, "scale"),  # 255 · 1e38 overflows
    ({"scale": 1e20, "std": 1e-20}, "std"),  # each fits float32, their ratio does not
    ({"std": 1e37}, "std"),  # subnormal inputs, zero where the runtime flushes them
])
def test_spec_numbers_whose_float32_model_input_overflows_or_is_constant_are_refused(values, field):
    base = infer_spec(zoo.vgg_classifier())
    with pytest.raises(InvalidRequest) as info:
        base.with_values(values)
    assert info.value.field == field
    unchecked = replace(base, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    levels = _grey_ramp_input(unchecked)  # what the model would have been fed
    finite = np.isfinite(levels).all()
    tiny = np.finfo(np.float32).tiny
    assert not finite or ((levels != 0) & (np.abs(levels) < tiny)).any() or min(
        len(np.unique(levels[0, c])) for c in range(3)) < 256


@pytest.mark.parametrize("values", [
    {"mean": 127.5, "std": 128, "scale": 1},  # ArcFace / InsightFace
    {"mean": [93.59, 104.76, 129.19], "scale": 1, "channel_order": "BGR"},  # VGGFace
    {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},  # ImageNet
    {"mean": 1e4, "scale": 1},  # large but every grey level still distinct
    {"scale": 1e-30},  # tiny but normal float32 inputs
])
def test_usual_and_unusual_but_usable_pixel_numbers_are_accepted(values):
    spec = infer_spec(zoo.vgg_classifier()).with_values(values)
    levels = _grey_ramp_input(spec)
    assert np.isfinite(levels).all() and all(len(np.unique(levels[0, c])) == 256 for c in range(3))
