"""Black-box methods against the raw onnxruntime ceiling, on one model and one session.

For occlusion, RISE and CMS (a dataset of CIS maps) this prints forward passes per second next to
the best raw batched throughput of the same session measured in the same run (see
scorer_throughput.py for the raw measurement), the cost curve of each method (wall time against
windows, masks and dataset size: it should be a straight line, so time per unit stays flat), and
the peak resident memory of RISE at N=8000 on a 224×224 model above the idle process, measured in
a fresh subprocess so that nothing else in this run sets the peak.

    python bench/methods_throughput.py                 # vgg-wide, 112×112
    python bench/methods_throughput.py --model vgg --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.engine.scorer import ClassTarget, Scorer
from faceaudit.methods.cis import CisOptions
from faceaudit.methods.cms import cms
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.occlusion import OcclusionOptions, occlusion
from faceaudit.methods.rise import RiseOptions, rise
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo

sys.path.insert(0, str(Path(__file__).parent))
from scorer_throughput import MODELS, build_prepared, raw_table  # noqa: E402  (a sibling script)


def face(model: PreparedModel, seed: int = 2) -> np.ndarray:
    spec = model.spec
    return np.random.default_rng(seed).uniform(0, 255, (spec.require("height"), spec.require("width"), 3)).astype(np.float32)


def timed(run: Callable[[], object]) -> tuple[float, int]:
    """Wall seconds and forward passes of one method run."""
    started = time.perf_counter()
    result = run()
    passes = sum(m.forward_passes for m in result) if isinstance(result, list) else result.forward_passes  # type: ignore[attr-defined]
    return time.perf_counter() - started, passes


def method_runs(model: PreparedModel, quick: bool) -> dict[str, dict[int, tuple[float, int]]]:
    """For each method, size of the job → (seconds, forward passes)."""
    image, target = face(model), ExplainTarget(class_index=0)
    strides = (8, 4) if quick else (8, 4, 2)
    masks = (500, 1000) if quick else (1000, 2000, 4000)
    dataset = (2, 4) if quick else (2, 4, 8)
    return {
        "occlusion (stride → windows)": {
            s: timed(lambda s=s: occlusion(model, image=image, target=target, options=OcclusionOptions(stride=s)))
            for s in strides
        },
        "rise (masks)": {
            n: timed(lambda n=n: rise(model, image=image, target=target, options=RiseOptions(masks=n)))
            for n in masks
        },
        "cms (images, CIS stride 4)": {
            k: timed(lambda k=k: cms(model, images=[face(model, i) for i in range(k)],
                                     targets=[target] * k, options=CisOptions()))
            for k in dataset
        },
    }


def rss_probe(masks: int, warm: bool) -> dict[str, float]:
    """Run in a subprocess: peak RSS of RISE above the idle process with the model loaded.

    Cold: idle right after loading. Warm: idle after one runtime batch, so onnxruntime's arena
    already holds a batch's activations and the difference is what RISE itself adds.
    """
    loaded = load_model(zoo.vgg_classifier(height=224, width=224, width_mult=8, classes=10).SerializeToString())
    model = prepare(loaded, resolve_spec(loaded, {"kind": "classifier"}))
    image = face(model)
    if warm:
        Scorer(model, ClassTarget(0)).score([np.repeat(image[None], model.session.max_batch, axis=0)])
    idle = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    started = time.perf_counter()
    rise(model, image=image, target=ExplainTarget(class_index=0), options=RiseOptions(masks=masks))
    return {"masks": masks, "warm": warm, "batch": model.session.max_batch, "idle_mib": idle / 1024,
            "peak_above_idle_mib": (_status_kib("VmHWM") - idle) / 1024, "seconds": time.perf_counter() - started}


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vgg-wide")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller runs")
    parser.add_argument("--rss-masks", type=int, default=8000, help="RISE masks for the memory probe (default 8000)")
    parser.add_argument("--rss-probe", choices=["cold", "warm"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_masks, args.rss_probe == "warm")))
        return 0

    model = build_prepared(args.model, RuntimeOptions())
    raw = raw_table(model, [16, 32, 64], 0.5 if args.quick else 1.0, 3)
    best = max(raw.values())
    runs = method_runs(model, args.quick)
    memory = [
        json.loads(subprocess.run([sys.executable, __file__, "--rss-probe", state, "--rss-masks", str(args.rss_masks)],
                                  capture_output=True, text=True, check=True).stdout)
        for state in ("cold", "warm")
    ]
    if args.json:
        print(json.dumps({"model": args.model, "raw": raw, "runs": runs, "rise_memory": memory}, indent=2))
        return 0
    print(f"model  {args.model}: {MODELS[args.model].description}; {model.session.provider}, {model.session.threads} threads")
    print("raw    " + ", ".join(f"batch {b}: {r:.1f}/s" for b, r in raw.items()) + f"  (best {best:.1f}/s)")
    for name, curve in runs.items():
        print(f"\n{name}")
        print("   size   passes   seconds   passes/s   ratio to raw   ms per pass")
        for size, (seconds, passes) in curve.items():
            rate = passes / seconds
            print(f"  {size:>5}  {passes:>7}  {seconds:>8.2f}  {rate:>9.1f}  {rate / best:>13.3f}  {1000 * seconds / passes:>11.3f}")
    for probe in memory:
        state = "warm (arena sized)" if probe["warm"] else "cold (just loaded)"
        print(f"\nrise memory  N={probe['masks']} at 224x224, batch {probe['batch']}: peak {probe['peak_above_idle_mib']:.1f} MiB "
              f"above the {state} idle process ({probe['idle_mib']:.0f} MiB), {probe['seconds']:.1f} s  (target < 400 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
