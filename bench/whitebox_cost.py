"""Cost of a white-box map against one forward pass of the same model, in the same run.

For each model: the time of one forward pass (the prepared session, batch 1, best of many), the
time of one map per white-box method once the model's instrumented session exists (it is built
on the first map and reused: `whitebox.instrument` caches it on the model), and the first map's
time including that build. Issue 4's target: an EBP map costs at most 2.5× one forward pass.

    python bench/whitebox_cost.py
    python bench/whitebox_cost.py --models vgg --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import FaceAuditError
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import explain

sys.path.insert(0, str(Path(__file__).parent))
from scorer_throughput import MODELS, build_prepared  # noqa: E402  (a sibling script)

METHODS = ("gradient", "guided_backprop", "gradcam", "ebp", "cebp", "tcebp")


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def forward_seconds(model: PreparedModel, image: np.ndarray, repeats: int) -> float:
    batch = to_model_input(image[None], model.spec)
    model.session.run_raw(batch)
    return best_of(max(repeats, 20), lambda: model.session.run_raw(batch))


def bench(name: str, repeats: int) -> list[tuple[str, float, float, float]]:
    model = build_prepared(name, RuntimeOptions())
    spec = model.spec
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (spec.require("height"), spec.require("width"), 3)).astype(np.float32)
    if spec.require("kind") == "classifier":
        target = ExplainTarget(class_index=0)
    else:
        target = ExplainTarget(mate=rng.uniform(0, 255, image.shape).astype(np.float32),
                               non_mate=rng.uniform(0, 255, image.shape).astype(np.float32))
    forward = forward_seconds(model, image, repeats)
    rows = []
    for method in METHODS:
        run = lambda method=method: explain(model, method, image=image, target=target)  # noqa: E731
        try:
            first = best_of(1, run)
        except FaceAuditError as exc:  # e.g. EBP losing all mass on a random-weight network
            print(f"  {name} {method}: {exc}")
            continue
        rows.append((method, forward, first, best_of(repeats, run)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg,vgg-wide,iresnet", help="comma-separated, from scorer_throughput")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        rows = bench(name, args.repeats)
        print(f"\n{name}: {MODELS[name].description}")
        print(f"  one forward pass (batch 1): {1000 * rows[0][1]:.2f} ms")
        print("  method            first map ms   map ms (cached session)   map / forward")
        for method, forward, first, cached in rows:
            print(f"  {method:<16} {1000 * first:>12.1f} {1000 * cached:>24.1f} {cached / forward:>15.1f}x")
    print("\ntarget (issue 4): an EBP map ≤ 2.5× one forward pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
