"""Total throughput of 8 concurrent gRPC clients against the raw onnxruntime ceiling.

raw     `session.run_raw(batch)` in a loop on one batch already converted to model input, for
        batch sizes 16, 32 and 64, on a PreparedModel of the same model with the same
        RuntimeOptions: no caller of the runtime can go faster. Measured before and after the
        served run; the better of each size's two rates counts, and the best size is the ceiling.
served  8 client threads, started together, each sending `--jobs` occlusion `Explain` calls one
        after the other to a faceaudit server in this process (the model behind its cross-request
        batcher, default ServerConfig). Throughput = forward passes reported in the responses /
        wall time until the last response. The server's telemetry gives the mean runtime batch
        (merging) and queue time.

The target is served / raw >= 0.9. The script only reports.

    python bench/serve_throughput.py
    python bench/serve_throughput.py --clients 8 --jobs 3 --json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.images.preprocess import to_model_input
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="Explain calls per client")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--raw-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all CPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    options = RuntimeOptions(provider="cpu", threads=args.threads)
    proto = bench_model()
    local = local_model(proto, options)
    raw_before = raw_rates(local, args.raw_seconds)

    server = start_server(options)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        upload(channel, "bench", proto)
        stub = rpc.ExplainStub(channel)
        requests = [explain_request("bench", face(seed), {"patch": args.patch, "stride": args.stride})
                    for seed in range(args.clients)]
        served_map(stub, requests[0])  # warm the session and the channel
        telemetry = server.telemetry.registry
        batches_before = telemetry.get_sample_value("faceaudit_batch_size_count", {"model": "bench"}) or 0.0
        images_before = telemetry.get_sample_value("faceaudit_batch_size_sum", {"model": "bench"}) or 0.0
        queue_before = telemetry.get_sample_value("faceaudit_queue_seconds_sum", {"model": "bench"}) or 0.0
        queued_before = telemetry.get_sample_value("faceaudit_queue_seconds_count", {"model": "bench"}) or 0.0
        start = threading.Barrier(args.clients + 1)

        def client(i: int) -> int:
            start.wait()
            return sum(served_map(stub, requests[i])[1] for _ in range(args.jobs))

        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(client, i) for i in range(args.clients)]
            start.wait()
            started = time.perf_counter()
            passes = sum(f.result() for f in futures)
            wall = time.perf_counter() - started
        batches = telemetry.get_sample_value("faceaudit_batch_size_count", {"model": "bench"}) - batches_before
        images = telemetry.get_sample_value("faceaudit_batch_size_sum", {"model": "bench"}) - images_before
        queue = telemetry.get_sample_value("faceaudit_queue_seconds_sum", {"model": "bench"}) - queue_before
        queued = telemetry.get_sample_value("faceaudit_queue_seconds_count", {"model": "bench"}) - queued_before
    finally:
        channel.close()
        server.stop(0)
    raw_after = raw_rates(local, args.raw_seconds)

    raw = {size: max(raw_before[size], raw_after[size]) for size in RAW_BATCHES}
    best_batch = max(raw, key=raw.__getitem__)
    served = passes / wall
    report = {
        "model": "vgg-wide 112x112", "onnxruntime": ort.__version__, "threads": local.session.threads,
        "clients": args.clients, "jobs_per_client": args.jobs, "forward_passes": passes, "wall_s": wall,
        "served_images_per_s": served, "raw_before": raw_before, "raw_after": raw_after,
        "raw_best": {"batch": best_batch, "images_per_s": raw[best_batch]}, "ratio": served / raw[best_batch],
        "mean_runtime_batch": images / batches, "mean_queue_s": queue / queued,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"vgg-wide 112x112, onnxruntime {ort.__version__} CPU, {report['threads']} threads")
    print("raw images/s   " + "  ".join(f"b{s}: {raw_before[s]:.1f} / {raw_after[s]:.1f}" for s in RAW_BATCHES)
          + "  (before / after the served run)")
    print(f"served         {args.clients} clients x {args.jobs} occlusion jobs: {passes} passes in {wall:.2f} s "
          f"= {served:.1f} images/s; mean runtime batch {report['mean_runtime_batch']:.1f}, "
          f"mean queue {report['mean_queue_s'] * 1e3:.1f} ms")
    print(f"ratio          {report['ratio']:.2f} of raw best (batch {best_batch}: {raw[best_batch]:.1f}/s); target >= 0.9")


if __name__ == "__main__":
    main()
