"""Cost of a white-box map against one forward pass of the same model, in the same run, for both engines.

For each model: the time of one forward pass (the prepared session, batch 1) and of one map per
white-box method once the model's instrumented session exists (it is built on the first map and
reused: `whitebox.instrument` caches it on the model), with the backward pass compiled to ONNX
(engine "onnxruntime", whitebox/compiled.py) and with the numpy engine (the same maps with
compilation switched off, on a second copy of the model). Every time is a median over --repeats
calls, and the whole measurement is repeated --rounds times (forward included, so each ratio
compares numbers taken seconds apart); the table shows the medians over rounds. The machine is
shared: single wall-clock timings vary by tens of percent (and by several times when other jobs
load its two cores), medians less; `--threads 1 --clock cpu` measures the process's CPU time with
one onnxruntime thread, which other jobs hardly disturb. Issue 4's target: an EBP map costs at most
2.5× one forward pass.

    python bench/whitebox_cost.py
    python bench/whitebox_cost.py --models vgg --repeats 20 --rounds 5 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
from threadpoolctl import threadpool_limits

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import FaceAuditError
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget, references
from faceaudit.methods.registry import explain
from faceaudit.whitebox import compiled, instrument

sys.path.insert(0, str(Path(__file__).parent))
from scorer_throughput import MODELS, build_prepared  # noqa: E402  (a sibling script)

METHODS = ("gradient", "guided_backprop", "gradcam", "guided_gradcam", "ebp", "cebp", "tcebp", "eebp", "gweebp")
# Maps read at an intermediate layer, as Wang et al. 2025 §4.2.5 read EBP maps: VGG16's eleventh
# convolution (conv5_1, 14×14 at 224 px); label -> (method, options), per model.
LAYER_ROWS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "vgg16": {"ebp@conv5_1": ("ebp", {"layer": "conv5_1"}), "tcebp@conv5_1": ("tcebp", {"layer": "conv5_1"})},
}
SIGNALS = ("gradient", "excitation")  # timed alone too: one run_backward, without the map's own work
ENGINES = ("onnxruntime", "numpy")
TARGETS = 8  # classes of one image in one run_backward call: the row "[excitation] ×8, per map"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def median_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = clock()
        run()
        times.append(clock() - started)
    return statistics.median(times)


def refuse(*args: object, **kwargs: object) -> None:
    raise compiled.NotCompilable("switched off by the benchmark")


def request(model: PreparedModel) -> tuple[np.ndarray, ExplainTarget]:
    spec = model.spec
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (spec.require("height"), spec.require("width"), 3)).astype(np.float32)
    if spec.require("kind") == "classifier":
        return image, ExplainTarget(class_index=0)
    return image, ExplainTarget(mate=rng.uniform(0, 255, image.shape).astype(np.float32),
                                non_mate=rng.uniform(0, 255, image.shape).astype(np.float32))


def bench(name: str, repeats: int, rounds: int, threads: int | None
          ) -> tuple[list[float], dict[tuple[str, str], dict[str, list[float]]]]:
    """Forward times per round, and per (method, engine): first-map time, map times and ratios per round."""
    models = {engine: build_prepared(name, RuntimeOptions(threads=threads)) for engine in ENGINES}
    image, target = request(models["numpy"])
    batch = to_model_input(image[None], models["numpy"].spec)
    session = models["numpy"].session
    session.run_raw(batch)
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    forwards = []
    rows = {method: (method, {}) for method in METHODS} | LAYER_ROWS.get(name, {})
    maps = {}
    for label, (method, options) in rows.items():
        for engine, model in models.items():
            run = (lambda model=model, method=method, options=options:
                   explain(model, method, image=image, target=target, options=options))
            with mock.patch.object(compiled, "compile_backward", refuse) if engine == "numpy" else mock.MagicMock():
                try:
                    first = median_of(1, run)
                except FaceAuditError as exc:  # e.g. EBP losing all mass on a random-weight network
                    print(f"  {name} {label}: {exc}")
                    continue
            maps[(label, engine)] = run
            results[(label, engine)] = {"first": [first], "map": [], "ratio": []}
    signal_runs = {}
    shared = f"[excitation] ×{TARGETS}, per map"
    for engine, model in models.items():
        refs = None if target.class_index is not None else references(model, target)
        wb = instrument(model, references=refs)
        runs = {f"[{signal}]": (lambda model=model, wb=wb, signal=signal:
                                compiled.run_backward(model, wb, batch, signal, target.class_index))
                for signal in SIGNALS}
        if target.class_index is not None:  # TARGETS classes of one image: one forward pass shared
            runs[shared] = (lambda model=model, wb=wb: compiled.run_backward(model, wb, batch, "excitation",
                                                                              np.arange(TARGETS)))
        for label, run in runs.items():
            with mock.patch.object(compiled, "compile_backward", refuse) if engine == "numpy" else mock.MagicMock():
                first = median_of(1, run)
            signal_runs[(label, engine)] = run
            results[(label, engine)] = {"first": [first], "map": [], "ratio": []}
    for _ in range(rounds):
        forward = median_of(max(repeats, 50), lambda: session.run_raw(batch))
        forwards.append(forward)
        for (method, engine), entry in results.items():
            model = models[engine]
            with mock.patch.object(compiled, "compile_backward", refuse) if engine == "numpy" else mock.MagicMock():
                run = signal_runs.get((method, engine)) or maps[(method, engine)]
                seconds = median_of(repeats, run)
            seconds /= TARGETS if method.startswith("[excitation] ×") else 1
            entry["map"].append(seconds)
            entry["ratio"].append(seconds / forward)
    return forwards, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg16,vgg,iresnet", help="comma-separated, from scorer_throughput")
    parser.add_argument("--repeats", type=int, default=10, help="calls per timing (median)")
    parser.add_argument("--rounds", type=int, default=3, help="times the whole measurement is repeated (median)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (with --threads 1: the work itself, "
                             "whatever else the machine runs)")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    with threadpool_limits(1 if args.threads == 1 else None):  # one thread means one: numpy's BLAS too
        report(args)
    return 0


def report(args: argparse.Namespace) -> None:
    for name in args.models.split(","):
        forwards, results = bench(name, args.repeats, args.rounds, args.threads)
        print(f"\n{name}: {MODELS[name].description}")
        print(f"  one forward pass (batch 1): {1000 * statistics.median(forwards):.2f} ms "
              f"(rounds: {', '.join(f'{1000 * f:.2f}' for f in forwards)})")
        print("  method                   engine        first map ms   map ms   map / forward (rounds)")
        for (method, engine), entry in results.items():
            ratios = ", ".join(f"{r:.1f}" for r in entry["ratio"])
            first, seconds = 1000 * entry["first"][0], 1000 * statistics.median(entry["map"])
            print(f"  {method:<24} {engine:<12} {first:>13.1f} {seconds:>8.2f}"
                  f" {statistics.median(entry['ratio']):>8.1f}x ({ratios})")
    print("\n[gradient], [excitation]: one forward + backward run (compiled.run_backward) for the same image,\n"
          "without the method's own work (validation, embedding the mate and non-mate, smoothing, the map);\n"
          f"[excitation] ×{TARGETS}: the signals of {TARGETS} classes of the image from one call (one forward pass), "
          "time per signal")
    print("target (issue 4): an EBP map ≤ 2.5× one forward pass")


if __name__ == "__main__":
    raise SystemExit(main())
