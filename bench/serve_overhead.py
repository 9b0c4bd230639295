"""The same explanation in process and over gRPC: what the service adds to a job of about a second.

in process  `methods.registry.explain(prepared, "occlusion", ...)` on a PreparedModel of the model,
            as the CLI runs it: no server, no batcher.
over gRPC   `Explain` on a faceaudit server started in this process (127.0.0.1, no TLS, default
            ServerConfig: the model behind its cross-request batcher, max_queue_delay 2 ms), the
            model uploaded with `Models.Register`. The time covers encoding the request, the
            server decoding it, the batcher's queue and thread hand-offs, encoding the map and
            the client decoding it.

Both run the same method, options, image and target on the same model (each its own onnxruntime
session with the same RuntimeOptions); the served map is checked equal to the local one. Runs
alternate (local, served, local, ...) so drifting machine load hits both alike; medians are
compared. The target is overhead = served / local - 1 <= 5 %. The script only reports.

    python bench/serve_overhead.py                 # vgg-wide 112x112, occlusion 16 px / stride 5: ~1 s
    python bench/serve_overhead.py --repeats 9 --json
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
    parser.add_argument("--repeats", type=int, default=7)
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

        def run_local() -> tuple[np.ndarray, int]:
            result = explain(local, "occlusion", image=image, target=ExplainTarget(class_index=CLASS_INDEX),
                             options=method_options)
            return result.values, result.forward_passes

        for run in (run_local, lambda: served_map(stub, request)):  # warm both sessions and the channel
            run()
        times: dict[str, list[float]] = {"local": [], "served": []}
        for _ in range(args.repeats):
            for name, run in (("local", run_local), ("served", lambda: served_map(stub, request))):
                started = time.perf_counter()
                values, passes = run()
                times[name].append(time.perf_counter() - started)
                if name == "local":
                    reference = values
                elif not np.array_equal(values, reference):
                    raise SystemExit("the served map differs from the local map: the comparison is void")
    finally:
        channel.close()
        server.stop(0)

    local_s, served_s = statistics.median(times["local"]), statistics.median(times["served"])
    report = {
        "model": "vgg-wide 112x112", "method": "occlusion", "options": method_options, "forward_passes": passes,
        "onnxruntime": ort.__version__, "threads": local.session.threads, "repeats": args.repeats,
        "local_s": times["local"], "served_s": times["served"],
        "local_median_s": local_s, "served_median_s": served_s, "overhead": served_s / local_s - 1.0,
        "overhead_min": min(times["served"]) / min(times["local"]) - 1.0,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"occlusion {method_options} on vgg-wide 112x112: {passes} forward passes, "
          f"onnxruntime {ort.__version__} CPU, {report['threads']} threads, {args.repeats} alternating runs each")
    print(f"in process  median {local_s:.3f} s   (min {min(times['local']):.3f} s)")
    print(f"over gRPC   median {served_s:.3f} s   (min {min(times['served']):.3f} s)")
    print(f"overhead    {report['overhead']:+.1%} (medians), {report['overhead_min']:+.1%} (minima); target <= +5%")


if __name__ == "__main__":
    main()
