"""Total throughput of 8 concurrent gRPC clients against the raw onnxruntime ceiling.

raw     `session.run_raw(batch)` in a loop on one batch already converted to model input, for
        batch sizes 16, 32 and 64, on a PreparedModel of the same model with the same
        RuntimeOptions: no caller of the runtime can go faster. The best size is the ceiling.
served  8 client threads, started together, each sending `--jobs` occlusion `Explain` calls one
        after the other to a faceaudit server in this process (the model behind its cross-request
        batcher, default ServerConfig). Throughput = forward passes reported in the responses /
        wall time until the last response. The server's telemetry gives the mean runtime batch
        (merging) and queue time.

Raw and served runs alternate for `--rounds` rounds (order reversed every round), so that load
from other processes on a shared machine hits both alike; each round gives a ratio served / raw
best of that round, and the median ratio is reported. The target is >= 0.9. The script only
reports.

    python bench/serve_throughput.py
    python bench/serve_throughput.py --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
from prometheus_client import CollectorRegistry

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.images.preprocess import to_model_input
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc
from serve_overhead import bench_model, explain_request, face, local_model, served_map, start_server, upload

RAW_BATCHES = (16, 32, 64)


def raw_rates(model: PreparedModel, seconds: float) -> dict[int, float]:
    """Images/s of back-to-back run_raw calls per batch size."""
    rng = np.random.default_rng(1)
    rates = {}
    for size in RAW_BATCHES:
        batch = to_model_input(rng.uniform(0, 255, (size, 112, 112, 3)).astype(np.float32), model.spec)
        for _ in range(3):
            model.session.run_raw(batch)
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            model.session.run_raw(batch)
            calls += 1
        rates[size] = calls * size / elapsed
    return rates


def batch_totals(registry: CollectorRegistry) -> tuple[float, float, float, float]:
    """Runtime batches, their images, queue seconds and queued requests of model "bench" so far."""
    names = ("faceaudit_batch_size_count", "faceaudit_batch_size_sum", "faceaudit_queue_seconds_sum",
             "faceaudit_queue_seconds_count")
    return tuple(registry.get_sample_value(name, {"model": "bench"}) or 0.0 for name in names)  # type: ignore[return-value]


def served_rate(stub: rpc.ExplainStub, requests: list[pb.ExplainRequest], jobs: int) -> tuple[int, float]:
    """Forward passes of `jobs` calls per client, all clients at once, and their wall time."""
    start = threading.Barrier(len(requests) + 1)

    def client(request: pb.ExplainRequest) -> int:
        start.wait()
        return sum(served_map(stub, request)[1] for _ in range(jobs))

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client, request) for request in requests]
        start.wait()
        started = time.perf_counter()
        passes = sum(f.result() for f in futures)
        return passes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1, help="Explain calls per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--raw-seconds", type=float, default=1.0, help="per batch size and round")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all CPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    options = RuntimeOptions(provider="cpu", threads=args.threads)
    proto = bench_model()
    local = local_model(proto, options)
    server = start_server(options)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    rounds = []
    try:
        upload(channel, "bench", proto)
        stub = rpc.ExplainStub(channel)
        requests = [explain_request("bench", face(seed), {"patch": args.patch, "stride": args.stride})
                    for seed in range(args.clients)]
        served_map(stub, requests[0])  # warm the session and the channel
        before = batch_totals(server.telemetry.registry)
        for round_ in range(args.rounds):
            measured = {}
            for part in ("raw", "served")[:: 1 if round_ % 2 == 0 else -1]:
                measured[part] = raw_rates(local, args.raw_seconds) if part == "raw" else served_rate(stub, requests, args.jobs)
            raw, (passes, wall) = measured["raw"], measured["served"]
            best = max(raw, key=raw.__getitem__)
            rounds.append({"raw": raw, "raw_best_batch": best, "passes": passes, "wall_s": wall,
                           "served_images_per_s": passes / wall, "ratio": passes / wall / raw[best]})
        batches, images, queue, queued = (a - b for a, b in zip(batch_totals(server.telemetry.registry), before))
    finally:
        channel.close()
        server.stop(0)

    report = {
        "model": "vgg-wide 112x112", "onnxruntime": ort.__version__, "threads": local.session.threads,
        "clients": args.clients, "jobs_per_client": args.jobs, "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "mean_runtime_batch": images / batches, "mean_queue_s": queue / queued,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"vgg-wide 112x112, onnxruntime {ort.__version__} CPU, {report['threads']} threads; "
          f"{args.clients} clients x {args.jobs} occlusion jobs per round")
    for i, r in enumerate(rounds):
        raw = "  ".join(f"b{size}: {rate:.1f}" for size, rate in r["raw"].items())
        print(f"round {i}: raw images/s {raw}; served {r['passes']} passes in {r['wall_s']:.2f} s = "
              f"{r['served_images_per_s']:.1f}/s; ratio {r['ratio']:.2f}")
    print(f"served runs: mean runtime batch {report['mean_runtime_batch']:.1f} images, "
          f"mean queue {report['mean_queue_s'] * 1e3:.0f} ms")
    print(f"median ratio {report['median_ratio']:.2f} of raw best; target >= 0.9")


if __name__ == "__main__":
    main()
