#!/usr/bin/env python
"""Train the three demo models of issue 7 on synthetic faces and export them to ONNX.

    pip install -e '.[train]'                # torch==2.13.0 (CPU); CI never runs this script
    python scripts/train_demo_models.py      # writes service/faceaudit/demo/models/

Everything is deterministic from `--seed` (default 7): the identities, nuisances and noise seeds of
every rendered face come from `numpy.random.default_rng([seed, stream])`, torch is seeded from the
same seed and runs deterministic CPU kernels on 2 threads. Faces are rendered by `faceaudit.demo`
at 64×64 (the 112-pixel ArcFace frame scaled down: small enough that the three models train in a
few minutes on 2 cores, large enough that the planted eyelid cue spans ~60 pixels).

Models (all NCHW float32 input "input" of [batch, 3, 64, 64], batch dynamic; opset 17, IR 8):

- identity.onnx: VGG-style (Conv, Relu, MaxPool, Flatten, Gemm) classifier over K=20 identities,
  output "logits" [batch, 20]; class k is the k-th identity drawn by
  `rng = default_rng([seed, 0]); [sample_identity(rng) for _ in range(20)]`. Pixels: RGB, scale 1/255.
- embedding.onnx: IResNet-style (pre-activation BatchNormalization, Conv, PRelu, residual Add)
  network, output "embedding" [batch, 64]; trained with a CosFace margin softmax (s=16, m=0.3) over
  many identities, verification by cosine. Pixels: RGB, scale 1, mean 127.5, std 128 (ArcFace).
- attribute.onnx: MobileFaceNet-style (depthwise Conv, ReLU6 = Clip, global depthwise Conv)
  classifier, output "logits" [batch, 2]; class 1 = the planted make-up cue (`attribute_cue`).
  Trained on pairs that differ only in the cue. Pixels: RGB, scale 1/255, mean 0.5, std 0.5.

Held-out metrics are measured with onnxruntime on the exported files, on faces rendered from
streams never used in training (fresh nuisances; for verification and attribute also fresh
identities), and recorded in manifest.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from faceaudit.demo import FaceParams, attribute_cue, render, sample_identity, sample_nuisance

SIZE = 64
K_IDENTITIES = 20
OUT = Path(__file__).resolve().parents[1] / "service" / "faceaudit" / "demo" / "models"
OPSET, IR_VERSION = 17, 8

# Stream numbers of default_rng([seed, stream]); tests/demo/test_demo_models.py uses its own seed.
STREAM_IDENTITIES, STREAM_ID_TRAIN, STREAM_ID_TEST = 0, 1, 2
STREAM_EMB_TRAIN, STREAM_EMB_TEST = 3, 4
STREAM_ATTR_TRAIN, STREAM_ATTR_TEST = 5, 6

PREPROCESS = {  # model input = (pixel * scale - mean) / std, pixels RGB in [0, 255]
    "identity": {"scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0},
    "embedding": {"scale": 1.0, "mean": 127.5, "std": 128.0},
    "attribute": {"scale": 1.0 / 255.0, "mean": 0.5, "std": 0.5},
}

# ---------------------------------------------------------------------------------------- data


def _render_one(job: tuple[FaceParams, int]) -> np.ndarray:
    params, seed = job
    return render(params, SIZE, seed=seed).image


def render_all(jobs: list[tuple[FaceParams, int]], workers: int) -> np.ndarray:
    """(N, SIZE, SIZE, 3) uint8 images of (params, noise seed) jobs, in order."""
    if workers <= 1:
        return np.stack([_render_one(j) for j in jobs])
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return np.stack(pool.map(_render_one, jobs, chunksize=64))


def demo_identities(seed: int) -> list:
    """The K identities of the identity classifier, class k = element k."""
    rng = np.random.default_rng([seed, STREAM_IDENTITIES])
    return [sample_identity(rng) for _ in range(K_IDENTITIES)]


def identity_jobs(seed: int, stream: int, per_identity: int) -> tuple[list, np.ndarray]:
    identities = demo_identities(seed)
    rng = np.random.default_rng([seed, stream])
    jobs, labels = [], []
    for _ in range(per_identity):
        for k, identity in enumerate(identities):
            jobs.append((FaceParams(identity, sample_nuisance(rng)), int(rng.integers(2**31))))
            labels.append(k)
    return jobs, np.array(labels)


def embedding_jobs(seed: int, stream: int, identities: int, per_identity: int) -> tuple[list, np.ndarray]:
    rng = np.random.default_rng([seed, stream])
    jobs, labels = [], []
    for k in range(identities):
        identity = sample_identity(rng)
        for _ in range(per_identity):
            jobs.append((FaceParams(identity, sample_nuisance(rng)), int(rng.integers(2**31))))
            labels.append(k)
    return jobs, np.array(labels)


def attribute_jobs(seed: int, stream: int, pairs: int) -> tuple[list, np.ndarray]:
    """`pairs` fresh identities, each rendered with and without the cue under one nuisance and noise seed."""
    rng = np.random.default_rng([seed, stream])
    jobs, labels = [], []
    for _ in range(pairs):
        identity, nuisance, noise = sample_identity(rng), sample_nuisance(rng), int(rng.integers(2**31))
        for on in (False, True):
            jobs.append((FaceParams(attribute_cue(identity, on), nuisance), noise))
            labels.append(int(on))
    return jobs, np.array(labels)


def to_input(images: np.ndarray, name: str) -> np.ndarray:
    p = PREPROCESS[name]
    x = (images.astype(np.float32) * np.float32(p["scale"]) - np.float32(p["mean"])) / np.float32(p["std"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def verification_auc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cos = e @ e.T
    i, j = np.triu_indices(len(e), k=1)
    return roc_auc(cos[i, j], labels[i] == labels[j])


# -------------------------------------------------------------------------------------- models


def build_models():  # torch is imported here only: the data helpers above need no torch
    import torch
    from torch import nn

    class VGG(nn.Module):
        def __init__(self, classes: int) -> None:
            super().__init__()

            def conv(i: int, o: int) -> list[nn.Module]:
                return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]

            self.features = nn.Sequential(
                *conv(3, 16), *conv(16, 16), nn.MaxPool2d(2),  # 32
                *conv(16, 32), *conv(32, 32), nn.MaxPool2d(2),  # 16
                *conv(32, 64), nn.MaxPool2d(2),  # 8
                *conv(64, 64), nn.MaxPool2d(2),  # 4
            )
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, classes))

        def forward(self, x):
            return self.head(self.features(x))

    class IBlock(nn.Module):
        """IResNet block: BN, Conv3, BN, PReLU, Conv3 (stride), BN, plus shortcut."""

        def __init__(self, i: int, o: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.BatchNorm2d(i), nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.PReLU(o),
                nn.Conv2d(o, o, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(o),
            )
            self.short = (nn.Sequential(nn.Conv2d(i, o, 1, stride=stride, bias=False), nn.BatchNorm2d(o))
                          if stride != 1 or i != o else nn.Identity())

        def forward(self, x):
            return self.body(x) + self.short(x)

    class IResNet(nn.Module):
        def __init__(self, dim: int = 64) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.PReLU(24))
            self.blocks = nn.Sequential(IBlock(24, 32, 2), IBlock(32, 32, 1), IBlock(32, 64, 2), IBlock(64, 96, 2))  # 32→4
            self.head = nn.Sequential(nn.BatchNorm2d(96), nn.Flatten(), nn.Linear(96 * 16, dim), nn.BatchNorm1d(dim))

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    def cbr(i: int, o: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(i, o, k, stride=s, padding=k // 2 if k == 3 else 0, groups=groups, bias=False), nn.BatchNorm2d(o)]
        return layers + [nn.ReLU6()] if act else layers

    class MobileFaceNet(nn.Module):
        def __init__(self, classes: int = 2) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *cbr(3, 16, 3, 2),  # 32
                *cbr(16, 16, 3, 1, groups=16), *cbr(16, 32),
                *cbr(32, 32, 3, 2, groups=32), *cbr(32, 48),  # 16
                *cbr(48, 48, 3, 2, groups=48), *cbr(48, 64),  # 8
                *cbr(64, 64, 3, 2, groups=64), *cbr(64, 128),  # 4
                *cbr(128, 128, 4, 1, groups=128, act=False),  # global depthwise conv → 1×1
            )
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(128, classes))

        def forward(self, x):
            return self.head(self.features(x))

    class CosFace(nn.Module):
        def __init__(self, dim: int, classes: int, s: float = 16.0, m: float = 0.3) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
            self.s, self.m = s, m

        def forward(self, emb, labels):
            cos = nn.functional.normalize(emb) @ nn.functional.normalize(self.weight).T
            margin = nn.functional.one_hot(labels, cos.shape[1]) * self.m
            return nn.functional.cross_entropy(self.s * (cos - margin), labels)

    return VGG, IResNet, MobileFaceNet, CosFace


def train(model, loss_fn, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int, batch: int = 64,
          extra_params=(), log: str = "") -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    params = list(model.parameters()) + list(extra_params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, started = 0.0, time.perf_counter()
        for start in range(0, len(x), batch):
            idx = perm[start : start + batch]
            xb = xt[idx]
            # light augmentation: a random shift of up to 2 px (roll), same for the whole batch
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"  {log} epoch {epoch + 1}/{epochs} loss {total / len(x):.4f} ({time.perf_counter() - started:.1f}s)", flush=True)
    model.eval()


def export(model, name: str, output: str) -> Path:
    import onnx
    import torch

    path = OUT / f"{name}.onnx"
    dummy = torch.zeros(2, 3, SIZE, SIZE)
    tmp = OUT / f"{name}.tmp.onnx"
    torch.onnx.export(
        model, (dummy,), str(tmp), dynamo=False, opset_version=OPSET, input_names=["input"], output_names=[output],
        dynamic_axes={"input": {0: "batch"}, output: {0: "batch"}}, do_constant_folding=True,
    )
    proto = onnx.load(str(tmp))
    tmp.unlink()
    _constants_to_initializers(proto.graph)  # ReLU6's Clip bounds: initializers, not Constant nodes
    proto.ir_version = IR_VERSION
    proto.producer_name = "faceaudit scripts/train_demo_models.py"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def _constants_to_initializers(graph) -> None:
    from onnx import numpy_helper

    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i : i + 256]})[0] for i in range(0, len(x), 256)])


def write_spec(name: str, kind: str, output: str) -> None:
    p = PREPROCESS[name]
    lines = [
        f"# {name}.onnx: written by scripts/train_demo_models.py (see manifest.json). Fields: faceaudit/models/spec.py",
        "# input, layout, channels and size (64x64) are inferred from the graph; these are the fields it cannot reveal",
        f"kind: {kind}",
        f"output: {output}",
        "channel_order: RGB",
        f"scale: {p['scale']!r}",
        f"mean: [{p['mean']!r}]",
        f"std: [{p['std']!r}]",
    ]
    if kind == "classifier":
        lines += ["output_type: logits", "softmax: false"]
    (OUT / f"{name}.spec.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--only", nargs="*", choices=("identity", "embedding", "attribute"),
                        help="retrain only these models (the manifest keeps the others' entries)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default service/faceaudit/demo/models)")
    args = parser.parse_args()
    global OUT
    OUT = args.out or OUT

    import torch

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True)
    VGG, IResNet, MobileFaceNet, CosFace = build_models()
    seed = args.seed
    OUT.mkdir(parents=True, exist_ok=True)
    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and args.only else {}
    manifest.update({
        "generator": "scripts/train_demo_models.py",
        "seed": seed,
        "input_size": [SIZE, SIZE],
        "layout": "NCHW",
        "torch": torch.__version__,
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "python": platform.python_version(),
        "renderer": "faceaudit.demo.render(FaceParams(identity, nuisance), 64, seed=noise_seed); "
                    "nuisances from sample_nuisance; rng streams numpy.random.default_rng([seed, stream])",
    })
    models = manifest.setdefault("models", {})
    todo = args.only or ["identity", "embedding", "attribute"]

    if "identity" in todo:
        t0 = time.perf_counter()
        jobs, y = identity_jobs(seed, STREAM_ID_TRAIN, per_identity=100)
        x = to_input(render_all(jobs, args.workers), "identity")
        tjobs, ty = identity_jobs(seed, STREAM_ID_TEST, per_identity=25)
        tx = to_input(render_all(tjobs, args.workers), "identity")
        t_render = time.perf_counter() - t0
        torch.manual_seed(seed)
        model = VGG(K_IDENTITIES)
        t1 = time.perf_counter()
        train(model, torch.nn.functional.cross_entropy, x, y, epochs=12, lr=2e-3, seed=seed, log="identity")
        t_train = time.perf_counter() - t1
        path = export(model, "identity", "logits")
        acc = float((run_onnx(path, tx).argmax(1) == ty).mean())
        write_spec("identity", "classifier", "logits")
        models["identity"] = {
            "file": "identity.onnx", "spec": "identity.spec.yaml", "kind": "classifier", "architecture": "VGG-style",
            "output": "logits", "classes": K_IDENTITIES,
            "classes_recipe": f"rng = numpy.random.default_rng([seed, {STREAM_IDENTITIES}]); "
                              f"class k = [sample_identity(rng) for _ in range({K_IDENTITIES})][k]",
            "train": {"stream": STREAM_ID_TRAIN, "images": len(jobs), "per_identity": 100, "epochs": 12},
            "held_out": {"stream": STREAM_ID_TEST, "images": len(tjobs), "per_identity": 25,
                         "what": "the same 20 identities under fresh nuisances and noise"},
            "metric": "top1_accuracy", "value": acc, "target": 0.95,
            "bytes": path.stat().st_size, "render_seconds": round(t_render, 1), "train_seconds": round(t_train, 1),
        }
        print(f"identity: accuracy {acc:.4f}, {path.stat().st_size} bytes, train {t_train:.0f}s", flush=True)

    if "embedding" in todo:
        t0 = time.perf_counter()
        n_ids, per = 500, 8
        jobs, y = embedding_jobs(seed, STREAM_EMB_TRAIN, n_ids, per)
        x = to_input(render_all(jobs, args.workers), "embedding")
        tjobs, ty = embedding_jobs(seed, STREAM_EMB_TEST, 100, 6)
        tx = to_input(render_all(tjobs, args.workers), "embedding")
        t_render = time.perf_counter() - t0
        torch.manual_seed(seed)
        model, head = IResNet(64), CosFace(64, n_ids)
        t1 = time.perf_counter()
        train(model, lambda e, lab: head(e, lab), x, y, epochs=14, lr=3e-3, seed=seed, extra_params=head.parameters(), log="embedding")
        t_train = time.perf_counter() - t1
        path = export(model, "embedding", "embedding")
        auc = verification_auc(run_onnx(path, tx), ty)
        write_spec("embedding", "embedding", "embedding")
        models["embedding"] = {
            "file": "embedding.onnx", "spec": "embedding.spec.yaml", "kind": "embedding", "architecture": "IResNet-style",
            "output": "embedding", "dim": 64, "loss": "CosFace margin softmax s=16 m=0.3 over the training identities",
            "train": {"stream": STREAM_EMB_TRAIN, "identities": n_ids, "per_identity": per, "images": len(jobs), "epochs": 14},
            "held_out": {"stream": STREAM_EMB_TEST, "identities": 100, "per_identity": 6,
                         "what": "fresh identities; all pairs, genuine = same identity, scored by cosine"},
            "metric": "verification_auc", "value": auc, "target": 0.98,
            "bytes": path.stat().st_size, "render_seconds": round(t_render, 1), "train_seconds": round(t_train, 1),
        }
        print(f"embedding: AUC {auc:.4f}, {path.stat().st_size} bytes, train {t_train:.0f}s", flush=True)

    if "attribute" in todo:
        t0 = time.perf_counter()
        jobs, y = attribute_jobs(seed, STREAM_ATTR_TRAIN, pairs=1500)
        x = to_input(render_all(jobs, args.workers), "attribute")
        tjobs, ty = attribute_jobs(seed, STREAM_ATTR_TEST, pairs=300)
        tx = to_input(render_all(tjobs, args.workers), "attribute")
        t_render = time.perf_counter() - t0
        torch.manual_seed(seed)
        model = MobileFaceNet(2)
        t1 = time.perf_counter()
        train(model, torch.nn.functional.cross_entropy, x, y, epochs=12, lr=3e-3, seed=seed, log="attribute")
        t_train = time.perf_counter() - t1
        path = export(model, "attribute", "logits")
        acc = float((run_onnx(path, tx).argmax(1) == ty).mean())
        write_spec("attribute", "classifier", "logits")
        models["attribute"] = {
            "file": "attribute.onnx", "spec": "attribute.spec.yaml", "kind": "classifier", "architecture": "MobileFaceNet-style",
            "output": "logits", "classes": ["no make-up", "make-up (attribute_cue on)"],
            "train": {"stream": STREAM_ATTR_TRAIN, "pairs": 1500, "images": len(jobs), "epochs": 12,
                      "what": "fresh identity per pair, rendered with and without the cue under one nuisance"},
            "held_out": {"stream": STREAM_ATTR_TEST, "pairs": 300, "images": len(tjobs), "what": "fresh identities and nuisances"},
            "metric": "accuracy", "value": acc, "target": 0.95,
            "bytes": path.stat().st_size, "render_seconds": round(t_render, 1), "train_seconds": round(t_train, 1),
        }
        print(f"attribute: accuracy {acc:.4f}, {path.stat().st_size} bytes, train {t_train:.0f}s", flush=True)

    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    failed = [name for name, m in models.items() if m["value"] < m["target"]]
    if failed:
        print(f"below target: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
