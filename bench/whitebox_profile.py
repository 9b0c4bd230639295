"""Where an EBP map's time goes: onnxruntime's per-operator profile of the compiled graph against the forward pass.

Issue 4 asks for an EBP map at ≤ 2.5× one forward pass. Per convolution EBP needs W⁺x (a forward
convolution) and W⁺ᵀ(p ⊘ W⁺x) (a transposed one) besides the forward pass's own Wx, so its
convolutions alone cost about three forward passes' convolutions. This script measures that floor:
it builds the compiled EBP graph faceaudit runs for the model (whitebox/compiled.py, read at the
pixels), profiles it and the model's forward pass in the same process with one onnxruntime thread,
and prints each operator type's kernel time per run, then the convolutions' time against the whole
forward pass.

    python bench/whitebox_profile.py                       # vgg16 topology, 112×112
    python bench/whitebox_profile.py --model vgg --runs 50
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort

from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.registry import explain
from faceaudit.whitebox import compiled

sys.path.insert(0, str(Path(__file__).parent))
from scorer_throughput import MODELS, build_prepared  # noqa: E402  (a sibling script)
from whitebox_cost import request  # noqa: E402

CONVOLUTIONS = ("Conv", "ConvTranspose")


def compiled_ebp(name: str) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, np.ndarray], int]:
    """The model, the compiled EBP graph the product builds for it, their shared input and the score width."""
    model = build_prepared(name, RuntimeOptions(threads=1))
    image, target = request(model)
    built: list[onnx.ModelProto] = []
    original = compiled.compile_backward

    def keep(*args: object, **kwargs: object) -> onnx.ModelProto:
        built.append(original(*args, **kwargs))
        return built[-1]

    with mock.patch.object(compiled, "compile_backward", keep):
        saliency = explain(model, "ebp", image=image, target=target, options={})
    if saliency.extra.get("engine") != "onnxruntime" or not built:
        raise SystemExit(f"{name}: EBP did not run on the compiled engine ({saliency.extra.get('engine_fallback')})")
    inputs = {model.spec.require("input_name"): to_model_input(image[None], model.spec)}
    return model.loaded.proto, built[-1], inputs, model.output_size


def profile(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int) -> Counter[str]:
    """Kernel microseconds per run, by operator type, of `runs` profiled runs after a warm-up."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kernels[event["args"]["op_name"]] += event["dur"] / runs
    return kernels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg16", choices=sorted(MODELS))
    parser.add_argument("--runs", type=int, default=30, help="profiled runs of each graph")
    args = parser.parse_args(argv)
    forward_proto, ebp_proto, inputs, classes = compiled_ebp(args.model)
    seed = np.zeros((1, classes), np.float32)
    seed[0, 0] = 1.0
    forward = profile(forward_proto, inputs, args.runs)
    backward = profile(ebp_proto, {**inputs, compiled.SEED: seed}, args.runs)
    total_forward, total_ebp = sum(forward.values()), sum(backward.values())
    print(f"{args.model}: {MODELS[args.model].description}; kernel time per run, one thread")
    print(f"  {'operator':<18} {'forward ms':>10} {'EBP graph ms':>13}")
    for op in sorted(set(forward) | set(backward), key=lambda op: -backward.get(op, 0.0)):
        print(f"  {op:<18} {forward.get(op, 0.0) / 1000:>10.3f} {backward.get(op, 0.0) / 1000:>13.3f}")
    print(f"  {'total':<18} {total_forward / 1000:>10.3f} {total_ebp / 1000:>13.3f}   ({total_ebp / total_forward:.2f}×)")
    convolutions = sum(backward.get(op, 0.0) for op in CONVOLUTIONS)
    print(f"EBP graph's convolutions alone: {convolutions / total_forward:.2f}× the whole forward pass "
          f"({convolutions / max(sum(forward.get(op, 0.0) for op in CONVOLUTIONS), 1e-9):.2f}× its convolutions); "
          "target (issue 4): the whole map ≤ 2.5×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
