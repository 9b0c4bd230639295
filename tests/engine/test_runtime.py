"""Sessions: provider choice, threads, and the padded batch sizes the runtime sees."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from faceaudit.engine import runtime
from faceaudit.engine.runtime import (
    RunStop, RunStopped, RuntimeOptions, Session, available_cpus, bucket, resolve_provider, stopping_with,
)
from faceaudit.errors import InvalidRequest, RuntimeUnavailable
from faceaudit.testing import zoo
from tests.engine.hostile_graphs import endless_loop_classifier


@pytest.mark.parametrize(("n", "max_batch", "expected"), [(1, 64, 1), (3, 64, 4), (33, 64, 64), (64, 64, 64), (5, 6, 6), (7, 1, 1)])
def test_bucket_is_the_next_power_of_two_capped_at_max_batch(n, max_batch, expected):
    assert bucket(n, max_batch) == expected


def test_auto_uses_cuda_only_when_the_runtime_offers_it(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_provider("auto") == "CUDAExecutionProvider"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_provider("auto") == "CPUExecutionProvider"
    with pytest.raises(RuntimeUnavailable, match="onnxruntime-gpu"):
        resolve_provider("cuda")


def test_cuda_libraries_are_preloaded_once_before_a_cuda_session_with_messages_on_stderr(monkeypatch, capsys):
    calls = []

    def preload() -> None:
        calls.append(1)
        print("Failed to load libcudart.so.13")  # what onnxruntime prints: never onto a command's stdout
        raise RuntimeError("no such directory")  # a failure leaves the default loader paths to CUDA

    runtime.load_cuda_libraries.cache_clear()
    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_provider("auto") == "CPUExecutionProvider" and calls == []  # a CPU build loads nothing
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    try:
        assert resolve_provider("auto") == resolve_provider("cuda") == "CUDAExecutionProvider"
        assert calls == [1]
        out, err = capsys.readouterr()
        assert out == "" and "libcudart" in err
    finally:
        runtime.load_cuda_libraries.cache_clear()


def test_session_reports_the_provider_that_ran_and_its_threads():
    session = Session(zoo.linear_classifier(), "input", ["logits"], RuntimeOptions(provider="cpu", threads=1))
    assert session.provider == "CPUExecutionProvider" and session.threads == 1
    assert Session(zoo.linear_classifier(), "input", ["logits"], RuntimeOptions()).threads == available_cpus() >= 1


def test_cgroup_quota_bounds_the_cpu_count(monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert available_cpus(quota) == 1
    quota.write_text("max 100000\n")
    assert available_cpus(quota) == 8
    assert available_cpus(tmp_path / "absent") == 8


def test_run_pads_partial_batches_and_returns_only_real_rows(rng):
    session = Session(zoo.linear_classifier(), "input", ["logits"], RuntimeOptions(max_batch=8))
    seen = []
    real_run = session._session.run
    session._session = type("Spy", (), {"run": lambda self, names, feed, options=None: seen.append(len(feed["input"])) or real_run(names, feed, options)})()
    x = rng.uniform(size=(3, 3, 8, 8)).astype(np.float32)
    out = session.run(x)[0]
    assert seen == [4] and out.shape == (3, 5)
    np.testing.assert_array_equal(out, real_run(None, {"input": x})[0])


@pytest.mark.parametrize(("options", "field"), [
    ({"provider": "tpu"}, "provider"), ({"max_batch": 0}, "max_batch"), ({"threads": 0}, "threads"),
    ({"probe_seconds": 0}, "probe_seconds"), ({"probe_seconds": float("inf")}, "probe_seconds"),
    ({"probe_seconds": float("nan")}, "probe_seconds"), ({"probe_seconds": True}, "probe_seconds"),
])
def test_bad_runtime_options_name_the_field(options, field):
    with pytest.raises(InvalidRequest) as info:
        RuntimeOptions(**options)
    assert info.value.field == field


def test_a_run_stop_ends_a_never_ending_loop_from_another_thread_and_every_later_run(rng):
    session = Session(endless_loop_classifier(), "input", ["logits"], RuntimeOptions(threads=1))
    stop = RunStop()
    timer = threading.Timer(0.2, stop.stop, args=("budget spent",))
    timer.start()
    started = time.perf_counter()
    with pytest.raises(RunStopped, match="budget spent"):
        session.run(rng.uniform(size=(1, 3, 16, 16)).astype(np.float32), stop)
    assert time.perf_counter() - started < 5  # within the Loop's iterations, not after 2^40 of them
    stop.stop("a second reason")  # the first reason stays
    linear = Session(zoo.linear_classifier(), "input", ["logits"], RuntimeOptions(threads=1))
    x = rng.uniform(size=(2, 3, 8, 8)).astype(np.float32)
    with pytest.raises(RunStopped, match="budget spent"):
        linear.run(x, stop)
    assert linear.run(x)[0].shape == (2, 5)  # without a stop, or with a fresh one, runs go on
    assert linear.run(x, RunStop())[0].shape == (2, 5)


def test_runs_given_no_stop_end_with_the_stop_of_the_work_in_progress(rng):
    # A game's or a white-box session is made and run deep inside a call's work: it reads the call's stop.
    session = Session(endless_loop_classifier(), "input", ["logits"], RuntimeOptions(threads=1))
    linear = Session(zoo.linear_classifier(), "input", ["logits"], RuntimeOptions(threads=1))
    x = rng.uniform(size=(2, 3, 8, 8)).astype(np.float32)
    call = RunStop()
    threading.Timer(0.2, call.stop, args=("the call ended",)).start()
    started = time.perf_counter()
    with stopping_with(call):
        with pytest.raises(RunStopped, match="the call ended"):
            session.run(rng.uniform(size=(1, 3, 16, 16)).astype(np.float32))
        assert time.perf_counter() - started < 5
        assert linear.run(x, RunStop())[0].shape == (2, 5)  # a run's own stop comes first
    assert linear.run(x)[0].shape == (2, 5)  # outside the block the call's stop no longer applies
