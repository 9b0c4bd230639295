#!/usr/bin/env python
"""Export tiny random-weight face architectures with torch.onnx: conformance fixtures for the engines.

    pip install -e '.[train]'                  # torch==2.13.0 (CPU); CI never runs this script
    python scripts/export_torch_fixtures.py    # rewrites tests/fixtures/torch_exports/

Users hand faceaudit ONNX files that PyTorch's TorchScript exporter wrote; these fixtures are such
files, as the exporter writes them (Conv+BatchNorm fused by its eval peephole, Constant nodes,
shapes computed with Shape/Gather/Concat where the module calls x.size(), dynamic batch axis),
so tests/whitebox/test_torch_exports.py can check, without torch, that every white-box method runs
on the compiled engine, agrees with the numpy engine and with finite differences.
The only change made after export is the IR version, set to 8 as the zoo and demo models have it.

Models (NCHW float32 input "input", batch dynamic, opset 17). Weights are random but not torch's defaults:
He-initialised convolutions and linear layers (gain 1 for LightCNN, whose max-feature-maps keep the second
moment), BatchNorm scales in [0.6, 1.4] and shifts ~ N(0, 0.1²), PReLU slopes per channel in [0.05, 0.45], and
BatchNorm running statistics measured on a batch of random inputs as training would leave them (means
≠ 0, variances ≠ 1), so that signals neither vanish nor explode with depth and BN folding and PReLU
signs matter:

- iresnet:       ArcFace IResNet (insightface iresnet.py): stem Conv-BN-PReLU, IBasicBlocks
                 BN → Conv → BN → PReLU → Conv(stride) → BN + downsample Conv1x1-BN, residual Add;
                 BN → Flatten → Dropout → Linear → BatchNorm1d. Embedding "embedding" [N, 32], 32×32 RGB.
- mobilefacenet: MobileFaceNet (InsightFace_Pytorch model.py): Conv_block (Conv-BN-PReLU), depthwise
                 Conv_block, Depth_Wise bottlenecks (expand 1×1, depthwise 3×3, project 1×1 + BN)
                 with residual Adds, global depthwise conv (kernel = spatial size), Flatten, Linear
                 without bias, BatchNorm1d. Embedding "embedding" [N, 16], 32×32 RGB.
- lightcnn:      LightCNN-9 (AlfredXiangWu light_cnn.py): max-feature-map by torch.split + torch.max
                 (conv and linear), one group by slicing x[:, :c], x[:, c:]; MaxPool 2×2 ceil_mode on
                 odd sizes (36 → 18 → 9 → 5 → 3); x.view(x.size(0), -1); two outputs (logits, the
                 fc1 features) as the original returns them. Classifier "logits" [N, 10], 36×36 grey.
- vgg_bn:        torchvision-style VGG with BatchNorm: (x − mean) / std inside the graph (ImageNet
                 constants as buffers), Conv-BN-ReLU, MaxPool 2×2, AdaptiveAvgPool2d(2) (exported as
                 AveragePool), Linear-ReLU-Dropout-Linear. Classifier "logits" [N, 10], 32×32 RGB, [0, 1].
- se_resnet:     ResNet basic blocks with squeeze-excitation as senet.pytorch writes it
                 (AdaptiveAvgPool → view(b, c) → Linear → ReLU → Linear → Sigmoid → view(b, c, 1, 1)
                 → x * y.expand_as(x)), stem Conv-BN-ReLU then MaxPool 3×3/2 pad 1 (overlapping
                 windows read the ReLU), downsample Conv1x1-BN, AdaptiveAvgPool(1), Linear,
                 F.normalize. Embedding "embedding" [N, 32], 32×32 RGB, ImageNet mean/std in the spec.

Each model is seeded (torch.manual_seed(SEED + index)); export is deterministic (the script writes
byte-identical files run after run on the same torch version). Each export passes onnx.checker
(full_check) and onnxruntime's output matches torch's within 1e-4 on random inputs, or the script
fails. Writes <name>.onnx and <name>.spec.yaml (the preprocessing no graph reveals).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torch_exports"
OPSET, IR_VERSION = 17, 8
SEED = 20260101
TOLERANCE = 1e-4  # largest |onnxruntime − torch| on outputs of order 1
MAX_BYTES = 300_000

# ----------------------------------------------------------------------------------------- iresnet


class IBasicBlock(nn.Module):
    """insightface's IBasicBlock: pre-activation BN, PReLU between the convolutions, no activation after the Add."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        out += identity
        return out


class IResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (8, 8, 16), size: int = 32, dim: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-05)
        self.prelu = nn.PReLU(widths[0])
        blocks, inplanes = [], widths[0]
        for planes in widths:
            blocks += [IBasicBlock(inplanes, planes, stride=2), IBasicBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.dropout = nn.Dropout(p=0.2)
        spatial = size // 2 ** len(widths)
        self.fc = nn.Linear(inplanes * spatial * spatial, dim)
        self.features = nn.BatchNorm1d(dim, eps=1e-05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.prelu(self.bn1(self.conv1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


# ----------------------------------------------------------------------------------- mobilefacenet


class ConvBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1,
                 activation: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class DepthWise(nn.Module):
    """Expand 1×1, depthwise 3×3 (stride), linear projection 1×1; a residual Add when shapes allow."""

    def __init__(self, in_c: int, out_c: int, groups: int, stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.conv = ConvBlock(in_c, groups)
        self.conv_dw = ConvBlock(groups, groups, 3, stride, 1, groups=groups)
        self.project = ConvBlock(groups, out_c, activation=False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    def __init__(self, size: int = 32, dim: int = 16) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 8, 3, 2, 1)
        self.conv2_dw = ConvBlock(8, 8, 3, 1, 1, groups=8)
        self.conv_23 = DepthWise(8, 8, groups=16, stride=2)
        self.conv_3 = DepthWise(8, 8, groups=16, residual=True)
        self.conv_34 = DepthWise(8, 16, groups=32, stride=2)
        self.conv_4 = DepthWise(16, 16, groups=32, residual=True)
        self.conv_6_sep = ConvBlock(16, 32)
        self.conv_6_dw = ConvBlock(32, 32, size // 8, groups=32, activation=False)  # GDConv: kernel = spatial size
        self.linear = nn.Linear(32, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_4(self.conv_34(self.conv_3(self.conv_23(self.conv2_dw(self.conv1(x))))))
        x = self.conv_6_dw(self.conv_6_sep(x))
        return self.bn(self.linear(torch.flatten(x, 1)))


# ---------------------------------------------------------------------------------------- lightcnn


class MFM(nn.Module):
    """Max-feature-map as light_cnn.py writes it: torch.split into halves, then torch.max."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 3, stride: int = 1, padding: int = 1,
                 linear: bool = False) -> None:
        super().__init__()
        self.out_c = out_c
        self.filter = nn.Linear(in_c, 2 * out_c) if linear else nn.Conv2d(in_c, 2 * out_c, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = torch.split(self.filter(x), self.out_c, 1)
        return torch.max(low, high)


class SlicedMFM(MFM):
    """The same activation written with slices, as other LightCNN ports do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.filter(x)
        return torch.max(y[:, : self.out_c], y[:, self.out_c :])


class Group(nn.Module):
    def __init__(self, in_c: int, out_c: int, mfm: type[MFM] = MFM) -> None:
        super().__init__()
        self.conv_a = mfm(in_c, in_c, 1, 1, 0)
        self.conv = mfm(in_c, out_c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_a(x))


class LightCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        pool = lambda: nn.MaxPool2d(2, 2, ceil_mode=True)  # noqa: E731 - light_cnn.py's pooling
        self.features = nn.Sequential(MFM(1, 8, 5, 1, 2), pool(), Group(8, 12), pool(),
                                      Group(12, 16, SlicedMFM), pool(), Group(16, 16), pool())
        self.fc1 = MFM(16 * 3 * 3, 32, linear=True)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        x = F.dropout(self.fc1(x), training=self.training)
        return self.fc2(x), x


# ------------------------------------------------------------------------------------------ vgg_bn


class VGGBN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        layers: list[nn.Module] = []
        in_c = 3
        for v in (8, 8, "M", 16, "M", 16, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                in_c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(16 * 2 * 2, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features((x - self.mean) / self.std))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------- se_resnet


class SELayer(nn.Module):
    """senet.pytorch's SELayer, shapes read with x.size() as it does."""

    def __init__(self, channel: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SELayer(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.se(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        out += residual
        return self.relu(out)


class SEResNet(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # ResNet's stem pool: overlapping windows
        self.layer1 = SEBasicBlock(8, 8)
        self.layer2 = SEBasicBlock(8, 16, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer2(self.layer1(x)))
        return F.normalize(self.fc(torch.flatten(x, 1)), dim=1)


# ------------------------------------------------------------------------------------------- export


@dataclass(frozen=True)
class Fixture:
    build: Callable[[], nn.Module]
    kind: str  # classifier | embedding
    outputs: tuple[str, ...]  # the first is the one the spec reads
    channels: int
    size: int
    spec: dict[str, object]  # preprocessing: channel_order, scale, mean, std
    low: float  # range of the model input that calibration and the torch/onnxruntime comparison draw from
    high: float
    nonlinearity: str = "relu"  # He initialisation's gain; "linear" keeps the second moment through max-feature-maps


ARCFACE = {"channel_order": "RGB", "scale": 1.0, "mean": [127.5], "std": [128.0]}
UNIT = {"channel_order": "RGB", "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0]}  # [0, 1]; vgg_bn normalises inside
FIXTURES: dict[str, Fixture] = {
    "iresnet": Fixture(IResNet, "embedding", ("embedding",), 3, 32, ARCFACE, -1.0, 1.0),
    "mobilefacenet": Fixture(MobileFaceNet, "embedding", ("embedding",), 3, 32, ARCFACE, -1.0, 1.0),
    "lightcnn": Fixture(LightCNN, "classifier", ("logits", "features"), 1, 36, UNIT, 0.0, 1.0, "linear"),
    "vgg_bn": Fixture(VGGBN, "classifier", ("logits",), 3, 32, UNIT, 0.0, 1.0),
    "se_resnet": Fixture(SEResNet, "embedding", ("embedding",), 3, 32,
                         {"channel_order": "RGB", "scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]}, -2.0, 2.0),
}


def randomise(model: nn.Module, fixture: Fixture, gen: torch.Generator) -> None:
    """He-initialised weights, BatchNorm affine maps and PReLU slopes away from their defaults, and running
    statistics measured on random inputs (as training would leave them: means ≠ 0, variances ≠ 1), so that
    signals neither vanish nor explode through the depth and BN folding and PReLU signs matter."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity=fixture.nonlinearity, generator=gen)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.copy_(0.6 + 0.8 * torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.05 + 0.4 * torch.rand(m.weight.shape, generator=gen))
        model.eval()
        norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        for m in norms:  # one pass in training mode: running statistics = this batch's (momentum None)
            m.reset_running_stats()
            m.momentum = None
            m.train()
        model(model_inputs(fixture, 64, gen))
        for m in norms:
            m.eval()


def model_inputs(fixture: Fixture, count: int, gen: torch.Generator) -> torch.Tensor:
    """Random model inputs in the range the spec's preprocessing gives."""
    x = torch.empty(count, fixture.channels, fixture.size, fixture.size)
    return x.uniform_(fixture.low, fixture.high, generator=gen)


def export(name: str, index: int) -> Path:
    fixture = FIXTURES[name]
    torch.manual_seed(SEED + index)
    model = fixture.build()
    randomise(model, fixture, torch.Generator().manual_seed(SEED + index))
    dummy = torch.zeros(2, fixture.channels, fixture.size, fixture.size)
    buffer = io.BytesIO()
    torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=OPSET, input_names=["input"],
                      output_names=list(fixture.outputs), do_constant_folding=True,
                      dynamic_axes={n: {0: "batch"} for n in ("input", *fixture.outputs)})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    check_against_torch(name, model, proto)
    data = proto.SerializeToString()
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{name}: {len(data):,} bytes, above {MAX_BYTES:,}")
    path = OUT / f"{name}.onnx"
    path.write_bytes(data)
    write_spec(name, fixture)
    return path


def check_against_torch(name: str, model: nn.Module, proto: onnx.ModelProto) -> None:
    fixture = FIXTURES[name]
    x = model_inputs(fixture, 3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    found = session.run(list(fixture.outputs), {"input": x.numpy()})
    for output, want, got in zip(fixture.outputs, expected, found, strict=True):
        error = float(np.abs(want.numpy() - got).max())
        if error > TOLERANCE:
            raise SystemExit(f"{name}: onnxruntime's {output} differs from torch's by {error:.2e} > {TOLERANCE}")
        print(f"  {name}.{output}: shape {tuple(got.shape)}, |onnxruntime − torch| ≤ {error:.1e}")


def write_spec(name: str, fixture: Fixture) -> None:
    lines = [
        f"# {name}.onnx: written by scripts/export_torch_fixtures.py (random weights). "
        "Fields: faceaudit/models/spec.py",
        "# input, layout, channels and size are inferred from the graph; these are the fields it cannot reveal",
        f"kind: {fixture.kind}",
        f"output: {fixture.outputs[0]}",
        *(f"{key}: {value!r}" for key, value in fixture.spec.items()),
    ]
    if fixture.kind == "classifier":
        lines += ["output_type: logits", "softmax: false"]
    (OUT / f"{name}.spec.yaml").write_text("\n".join(lines).replace("'", "") + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(FIXTURES), help="export only these models")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(FIXTURES):
        if args.only and name not in args.only:
            continue
        path = export(name, index)
        print(f"{path.relative_to(OUT.parents[2])}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
