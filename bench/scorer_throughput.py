"""Scorer throughput against the raw onnxruntime ceiling, on one model and one session.

Two numbers are measured in the same process, on the same `PreparedModel` and therefore the same
onnxruntime session:

raw     `prepared.session.run_raw(batch)` called in a loop on one batch that was converted to the
        model input tensor once, for several batch sizes. Nothing else happens per image: no
        perturbation, no preprocessing, no padding, no score extraction. No caller of this session
        can go faster, so the best of these rates is the ceiling for the scorer.
scorer  `Scorer(prepared, target).stream(chunks)` over N perturbed copies of one face-sized image
        (a square occlusion patch at a different position per image), generated chunk by chunk as
        a saliency method would. The time covers perturbation generation, `to_model_input`,
        batching, the runtime calls and score extraction.
scorer, pre-generated chunks
        the same, cycling through a few chunks made up front: the scorer's own cost without the
        cost of making perturbations (which belongs to the method that makes them).

The ratio scorer / best raw says how much of the runtime's capacity the scoring pipeline keeps;
the target is 0.9 or more. The scorer also records how long it spent inside the runtime, which
splits the gap into runtime time and per-image Python/numpy work. The script only reports.

    python bench/scorer_throughput.py --model vgg
    python bench/scorer_throughput.py --model tiny --seconds 0.5 --json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer, Target, embed
from faceaudit.images.preprocess import model_input_shape, to_model_input
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo


@dataclass(frozen=True)
class BenchModel:
    kind: str  # "classifier" | "embedding"
    description: str
    build: Callable[[], onnx.ModelProto]


MODELS: dict[str, BenchModel] = {
    "vgg": BenchModel(
        "classifier", "VGG-style classifier (2 conv stages, width_mult 16, 100 classes)",
        lambda: zoo.vgg_classifier(height=112, width=112, width_mult=16, classes=100),
    ),
    "vgg-wide": BenchModel(
        "classifier", "VGG-style classifier (width_mult 48, ~0.15 GMAC/image: the cost class of MobileFaceNet)",
        lambda: zoo.vgg_classifier(height=112, width=112, width_mult=48, classes=100),
    ),
    "vgg16": BenchModel(
        "classifier", "VGG16 topology (13 convs, VGG-Face's layout, channels / 4, ~0.24 GMAC/image): convolution-bound",
        lambda: zoo.vgg16_classifier(height=112, width=112, classes=100),
    ),
    "iresnet": BenchModel(
        "embedding", "IResNet-style embedder (8 channels, 1 residual block, dim 128), cosine to its own embedding",
        lambda: zoo.iresnet_embedding(height=112, width=112, dim=128),
    ),
    "tiny": BenchModel(
        "classifier", "tiny VGG-style classifier (width_mult 8, 10 classes): shows per-batch overhead",
        lambda: zoo.vgg_classifier(height=32, width=32),
    ),
}


@dataclass(frozen=True)
class ScorerResult:
    images_per_s: float
    runtime_share: float  # fraction of the stream's wall time spent inside session.run


@dataclass(frozen=True)
class Report:
    model: str
    description: str
    model_bytes: int
    input_shape: list[int]  # model input of one image, in the model's layout
    layout: str
    onnxruntime: str
    provider: str
    threads: int
    scorer_batch: int  # the session's max_batch: the batch size the scorer runs
    seconds: float
    repeats: int
    images: int
    chunk: int
    raw_images_per_s: dict[int, float]
    scorer: ScorerResult
    scorer_pregenerated: ScorerResult

    @property
    def best_raw(self) -> tuple[int, float]:
        return max(self.raw_images_per_s.items(), key=lambda item: item[1])

    @property
    def ratio(self) -> float:
        return self.scorer.images_per_s / self.best_raw[1]

    @property
    def ratio_pregenerated(self) -> float:
        return self.scorer_pregenerated.images_per_s / self.best_raw[1]

    @property
    def ratio_same_batch(self) -> float | None:
        """Scorer / raw at the scorer's own batch size, where that size was measured."""
        raw = self.raw_images_per_s.get(self.scorer_batch)
        return self.scorer.images_per_s / raw if raw else None

    def to_dict(self) -> dict[str, object]:
        best_batch, best = self.best_raw
        return {
            **asdict(self), "best_raw": {"batch": best_batch, "images_per_s": best},
            "ratio": self.ratio, "ratio_pregenerated": self.ratio_pregenerated,
            "ratio_same_batch": self.ratio_same_batch,
        }


def build_prepared(name: str, options: RuntimeOptions) -> PreparedModel:
    loaded = load_model(MODELS[name].build().SerializeToString())
    return prepare(loaded, resolve_spec(loaded, {"kind": MODELS[name].kind}), options)


def face_image(prepared: PreparedModel, rng: np.random.Generator) -> np.ndarray:
    """One RGB image (H, W, 3) in [0, 255] at the model's input size."""
    spec = prepared.spec
    return rng.uniform(0.0, 255.0, (spec.require("height"), spec.require("width"), 3)).astype(np.float32)


def target_for(prepared: PreparedModel, image: np.ndarray) -> Target:
    if prepared.spec.require("kind") == "classifier":
        return ClassTarget(0)
    return EmbeddingTarget(embed(prepared, image[None])[0])


def occlusions(image: np.ndarray, count: int, chunk: int) -> Iterator[np.ndarray]:
    """`count` copies of `image`, each with a grey square patch at the next grid position, in chunks."""
    h, w, _ = image.shape
    patch = max(1, min(h, w) // 4)
    stride = max(1, patch // 2)
    positions = [(y, x) for y in range(0, h - patch + 1, stride) for x in range(0, w - patch + 1, stride)]
    fill = float(image.mean())
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        batch = np.repeat(image[None], n, axis=0)
        for i in range(n):
            y, x = positions[(start + i) % len(positions)]
            batch[i, y : y + patch, x : x + patch] = fill
        yield batch


def raw_throughput(prepared: PreparedModel, batch: np.ndarray, seconds: float, repeats: int) -> float:
    """Best images/s over `repeats` loops of run_raw on one pre-converted batch, each >= `seconds`."""
    session = prepared.session
    for _ in range(3):
        session.run_raw(batch)
    best = 0.0
    for _ in range(repeats):
        calls = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            session.run_raw(batch)
            calls += 1
        best = max(best, calls * len(batch) / elapsed)
    return best


def raw_table(prepared: PreparedModel, sizes: list[int], seconds: float, repeats: int) -> dict[int, float]:
    """Raw images/s per batch size, each on one random batch converted to model input up front."""
    rng = np.random.default_rng(1)
    rates = {}
    for size in sizes:
        images = np.stack([face_image(prepared, rng) for _ in range(size)])
        rates[size] = raw_throughput(prepared, to_model_input(images, prepared.spec), seconds, repeats)
    return rates


def cycled(chunks: list[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """`count` images' worth of the given chunks, repeated in turn."""
    done = 0
    while done < count:
        for chunk in chunks:
            if done >= count:
                return
            yield chunk[: count - done]
            done += len(chunk[: count - done])


def scorer_throughput(
    prepared: PreparedModel, images: int, chunk: int, repeats: int, *, pregenerated: bool = False
) -> ScorerResult:
    """Best images/s of a full occlusion stream through the scorer (generation included unless pregenerated)."""
    image = face_image(prepared, np.random.default_rng(2))
    scorer = Scorer(prepared, target_for(prepared, image))
    made = list(occlusions(image, 8 * chunk, chunk)) if pregenerated else []

    def stream() -> Iterator[np.ndarray]:
        return cycled(made, images) if pregenerated else occlusions(image, images, chunk)

    for _ in scorer.stream(occlusions(image, prepared.session.max_batch, chunk)):
        pass  # warm-up: first runs at the scorer's batch size
    best = ScorerResult(0.0, 0.0)
    for _ in range(repeats):
        runtime_before = scorer.stats.runtime_seconds
        started = time.perf_counter()
        scored = sum(len(scores) for scores in scorer.stream(stream()))
        elapsed = time.perf_counter() - started
        if scored / elapsed > best.images_per_s:
            best = ScorerResult(scored / elapsed, (scorer.stats.runtime_seconds - runtime_before) / elapsed)
    return best


def run(args: argparse.Namespace) -> Report:
    options = RuntimeOptions(provider=args.provider, threads=args.threads, max_batch=args.max_batch)
    prepared = build_prepared(args.model, options)
    session = prepared.session
    raw = raw_table(prepared, args.batch_sizes, args.seconds, args.repeats)
    scorer = scorer_throughput(prepared, args.images, args.chunk, args.repeats)
    pregenerated = scorer_throughput(prepared, args.images, args.chunk, args.repeats, pregenerated=True)
    return Report(
        model=args.model, description=MODELS[args.model].description,
        model_bytes=prepared.loaded.size_bytes,
        input_shape=list(model_input_shape(prepared.spec, 1)[1:]),
        layout=prepared.spec.require("layout"), onnxruntime=ort.__version__, provider=session.provider,
        threads=session.threads, scorer_batch=session.max_batch, seconds=args.seconds, repeats=args.repeats,
        images=args.images, chunk=args.chunk, raw_images_per_s=raw, scorer=scorer,
        scorer_pregenerated=pregenerated,
    )


def format_report(report: Report) -> str:
    best_batch, best = report.best_raw
    shape = "x".join(map(str, report.input_shape))
    lines = [
        f"model       {report.model}: {report.description}",
        f"            input {shape} {report.layout}, {report.model_bytes / 1e6:.2f} MB",
        f"runtime     onnxruntime {report.onnxruntime}, {report.provider}, {report.threads} intra-op threads",
        "",
        f"raw session.run_raw, pre-converted batch (best of {report.repeats}, >= {report.seconds:g} s each)",
        "  batch    images/s",
        *(f"  {size:>5}  {rate:>10.1f}" for size, rate in report.raw_images_per_s.items()),
        "",
        f"scorer      {report.images} occlusions in chunks of {report.chunk}, runtime batch {report.scorer_batch} "
        f"(best of {report.repeats})",
        f"  images/s  {report.scorer.images_per_s:.1f}   ({report.scorer.runtime_share:.0%} of the time inside session.run)",
        "scorer      the same, cycling 8 pre-generated chunks (no perturbation cost)",
        f"  images/s  {report.scorer_pregenerated.images_per_s:.1f}   "
        f"({report.scorer_pregenerated.runtime_share:.0%} of the time inside session.run)",
        "",
        f"ratio       scorer / best raw (batch {best_batch}, {best:.1f}/s) = {report.ratio:.3f}   (target >= 0.9)",
        f"            pre-generated scorer / best raw = {report.ratio_pregenerated:.3f}",
    ]
    if report.ratio_same_batch is not None and best_batch != report.scorer_batch:
        lines.append(f"            scorer / raw at batch {report.scorer_batch} = {report.ratio_same_batch:.3f}")
    return "\n".join(lines)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vgg")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 8, 16, 32, 64], metavar="B",
                        help="raw batch sizes (default: 1 8 16 32 64)")
    parser.add_argument("--images", type=positive_int, default=4096, help="perturbations scored per repeat (default 4096)")
    parser.add_argument("--chunk", type=positive_int, default=100, help="perturbations per generated chunk (default 100)")
    parser.add_argument("--seconds", type=positive_float, default=1.0, help="minimum time per raw timing loop (default 1.0)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timing repeats; the best is kept (default 3)")
    parser.add_argument("--max-batch", type=positive_int, default=64, help="RuntimeOptions.max_batch (default 64)")
    parser.add_argument("--threads", type=positive_int, default=None, help="intra-op threads (default: available CPUs)")
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
