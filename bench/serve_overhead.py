"""The same explanation in process and over gRPC: what the service adds to a job of about a second.

in process  `methods.registry.explain(prepared, "occlusion", ...)` on a PreparedModel of the model,
            as the CLI runs it: no server, no batcher.
over gRPC   `Explain` on a faceaudit server started in this process (127.0.0.1, no TLS, default
            ServerConfig: the model behind its cross-request batcher, max_queue_delay 2 ms), the
            model uploaded with `Models.Register`. The time covers encoding the request, the
            server decoding it, the batcher's queue and thread hand-offs, encoding the map and
            the client decoding it.
batched     `explain` in process on the server's own registered model (its session behind the
            batcher), no gRPC: splits the overhead into batcher and gRPC parts.

All run the same method, options, image and target on the same model (local: its own onnxruntime
session with the same RuntimeOptions); every map is checked equal to the local one. Each round runs
the three once, in an order reversed every round, so drifting load on a shared machine hits them
alike. Reported: the median over rounds of each round's served / local ratio, and the ratio of the
fastest runs. The target is overhead = served / local - 1 <= 5 %. The script only reports.

    python bench/serve_overhead.py                 # vgg-wide 112x112, occlusion 16 px / stride 5: ~1 s
    python bench/serve_overhead.py --repeats 11 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import grpc
import numpy as np
import onnx
import onnxruntime as ort

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import explain
from faceaudit.models import load_model, resolve_spec
from faceaudit.server.app import FaceAuditServer, ServerConfig
from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc

SPEC = {"kind": "classifier"}
CLASS_INDEX = 3


def bench_model() -> onnx.ModelProto:
    """vgg-wide of bench/scorer_throughput.py: 112x112, ~0.15 GMAC/image (the cost class of MobileFaceNet)."""
    return zoo.vgg_classifier(height=112, width=112, width_mult=48, classes=100)


def local_model(proto: onnx.ModelProto, options: RuntimeOptions) -> PreparedModel:
    loaded = load_model(proto.SerializeToString())
    return prepare(loaded, resolve_spec(loaded, SPEC), options)


def start_server(options: RuntimeOptions) -> FaceAuditServer:
    return FaceAuditServer(ServerConfig(host="127.0.0.1", port=0, runtime=options)).start()


def upload(channel: grpc.Channel, name: str, proto: onnx.ModelProto, chunk: int = 1 << 20) -> pb.ModelInfo:
    data = proto.SerializeToString()
    chunks = [pb.RegisterChunk(data=data[i : i + chunk]) for i in range(0, len(data), chunk)]
    chunks[0].name = name
    chunks[0].spec.update(SPEC)
    return rpc.ModelsStub(channel).Register(iter(chunks))


def face(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 255.0, (112, 112, 3)).astype(np.float32)


def explain_request(model: str, image: np.ndarray, options: dict[str, Any]) -> pb.ExplainRequest:
    values = np.ascontiguousarray(image, dtype="<f4")
    message = pb.ExplainRequest(
        model=model, method="occlusion",
        images=[pb.Image(pixels=pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=values.shape, data=values.tobytes()))],
        targets=[pb.Target(class_index=CLASS_INDEX)],
    )
    message.options.update(options)
    return message


def served_map(stub: rpc.ExplainStub, request: pb.ExplainRequest) -> tuple[np.ndarray, int]:
    """The map (decoded) and its forward passes."""
    (only,) = stub.Explain(request).maps
    return np.frombuffer(only.values.data, dtype="<f4").reshape(tuple(only.values.shape)), only.forward_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7, help="rounds")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all CPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    options = RuntimeOptions(provider="cpu", threads=args.threads)
    proto, image = bench_model(), face()
    method_options = {"patch": args.patch, "stride": args.stride}
    local = local_model(proto, options)
    server = start_server(options)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        upload(channel, "bench", proto)
        stub = rpc.ExplainStub(channel)
        request = explain_request("bench", image, method_options)

        batched = server.store.get("bench").model

        def run_in_process(model: PreparedModel) -> tuple[np.ndarray, int]:
            result = explain(model, "occlusion", image=image, target=ExplainTarget(class_index=CLASS_INDEX),
                             options=method_options)
            return result.values, result.forward_passes

        runs = {"local": lambda: run_in_process(local), "batched": lambda: run_in_process(batched),
                "served": lambda: served_map(stub, request)}
        reference, passes = runs["local"]()
        for run in runs.values():  # warm every session and the channel
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.repeats):
            for name in list(runs)[:: 1 if round_ % 2 == 0 else -1]:
                started = time.perf_counter()
                values, _ = runs[name]()
                times[name].append(time.perf_counter() - started)
                if not np.array_equal(values, reference):
                    raise SystemExit(f"the {name} map differs from the local map: the comparison is void")
    finally:
        channel.close()
        server.stop(0)

    def overhead(name: str) -> dict[str, float]:
        paired = [t / base for t, base in zip(times[name], times["local"])]
        return {"median_paired": statistics.median(paired) - 1.0, "fastest": min(times[name]) / min(times["local"]) - 1.0}

    report = {
        "model": "vgg-wide 112x112", "method": "occlusion", "options": method_options, "forward_passes": passes,
        "onnxruntime": ort.__version__, "threads": local.session.threads, "rounds": args.repeats,
        "seconds": times, "overhead": {name: overhead(name) for name in ("batched", "served")},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"occlusion {method_options} on vgg-wide 112x112: {passes} forward passes, "
          f"onnxruntime {ort.__version__} CPU, {report['threads']} threads, {args.repeats} rounds")
    for name, label in (("local", "in process"), ("batched", "in process, batcher"), ("served", "over gRPC")):
        line = f"{label:20s} median {statistics.median(times[name]):.3f} s  fastest {min(times[name]):.3f} s"
        if name != "local":
            cost = report["overhead"][name]
            line += f"  overhead {cost['median_paired']:+.1%} (median of rounds), {cost['fastest']:+.1%} (fastest)"
        print(line)
    print("target: over gRPC <= +5%")

if __name__ == "__main__":
    main()
