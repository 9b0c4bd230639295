"""Telemetry: exposition parses, names follow Prometheus conventions, counters move, /metrics serves."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faceaudit.engine.batcher import Batcher
from faceaudit.server.telemetry import PHASES, Telemetry
from faceaudit.testing import zoo
from tests.conftest import prepared

ALLOWED_LABELS = {"rpc", "method", "code", "phase", "model", "le"}


def families(telemetry: Telemetry) -> dict:
    """Parsed families, without the *_created timestamps the text format shows as separate gauges."""
    parsed = text_string_to_metric_families(telemetry.exposition().decode())
    return {f.name: f for f in parsed if not f.name.endswith("_created")}


def value(telemetry: Telemetry, name: str, **labels: str) -> float | None:
    return telemetry.registry.get_sample_value(name, labels)


def busy() -> Telemetry:
    t = Telemetry(rpcs=["Explain", "ListModels"])
    t.model_loaded("arcface", 1234)
    t.observe_request("Explain", "rise", "OK", 0.3)
    t.observe_phases({"perturbation": 0.1, "inference": 0.15, "aggregation": 0.05})
    t.observe_batch("arcface", 48, [0.001, 0.002, 0.0005], 0.02)
    t.set_queue_depth("arcface", 16)
    return t


def test_exposition_parses_and_names_follow_conventions() -> None:
    found = families(busy())
    expected = {
        "faceaudit_requests": "counter", "faceaudit_request_duration_seconds": "histogram",
        "faceaudit_phase_seconds": "histogram", "faceaudit_forward_passes": "counter",
        "faceaudit_batch_size": "histogram", "faceaudit_batch_run_seconds": "histogram",
        "faceaudit_queue_depth": "gauge", "faceaudit_queue_seconds": "histogram",
        "faceaudit_models_loaded": "gauge", "faceaudit_model_size_bytes": "gauge", "faceaudit_jobs_in_flight": "gauge",
    }
    assert {name: f.type for name, f in found.items()} == expected
    for name, family in found.items():
        assert family.documentation, name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (name, sample.labels)
            if family.type == "counter":
                assert sample.name == name + "_total"
        if family.type == "histogram" and name != "faceaudit_batch_size":
            assert name.endswith("_seconds"), name  # latencies in base units
    per_model = [n for n, f in found.items() if any("model" in s.labels for s in f.samples)]
    assert set(per_model) == {"faceaudit_forward_passes", "faceaudit_batch_size", "faceaudit_batch_run_seconds",
                              "faceaudit_queue_depth", "faceaudit_queue_seconds", "faceaudit_model_size_bytes"}


def test_counters_histograms_and_gauges_move() -> None:
    t = Telemetry()
    assert value(t, "faceaudit_requests_total", rpc="Explain", method="rise", code="OK") is None
    t.observe_request("Explain", "rise", "OK", 0.3)
    t.observe_request("Explain", "rise", "OK", 2.0)
    t.observe_request("Explain", "rise", "INVALID_ARGUMENT", 0.001)
    assert value(t, "faceaudit_requests_total", rpc="Explain", method="rise", code="OK") == 2
    assert value(t, "faceaudit_requests_total", rpc="Explain", method="rise", code="INVALID_ARGUMENT") == 1
    assert value(t, "faceaudit_request_duration_seconds_count", rpc="Explain", method="rise") == 3
    assert value(t, "faceaudit_request_duration_seconds_sum", rpc="Explain", method="rise") == pytest.approx(2.301)
    assert value(t, "faceaudit_request_duration_seconds_bucket", rpc="Explain", method="rise", le="0.5") == 2

    t.observe_batch("m", 5, [0.001, 0.003], 0.01)
    t.observe_batch("m", 64, [0.0], 0.2)
    t.count_forward_passes("m", 7)
    assert value(t, "faceaudit_forward_passes_total", model="m") == 5 + 64 + 7
    assert value(t, "faceaudit_batch_size_count", model="m") == 2
    assert value(t, "faceaudit_batch_size_sum", model="m") == 69
    assert value(t, "faceaudit_batch_size_bucket", model="m", le="8.0") == 1
    assert value(t, "faceaudit_queue_seconds_count", model="m") == 3
    assert value(t, "faceaudit_queue_seconds_sum", model="m") == pytest.approx(0.004)
    assert value(t, "faceaudit_batch_run_seconds_sum", model="m") == pytest.approx(0.21)
    t.set_queue_depth("m", 12)
    assert value(t, "faceaudit_queue_depth", model="m") == 12

    t.observe_phases({"perturbation": 0.5, "inference": 1.5})
    assert value(t, "faceaudit_phase_seconds_sum", phase="inference") == 1.5
    assert value(t, "faceaudit_phase_seconds_count", phase="aggregation") == 0  # pre-initialised, not observed
    with pytest.raises(ValueError, match="queue"):
        t.observe_phases({"queue": 1.0})
    assert set(PHASES) == {"perturbation", "inference", "aggregation"}


def test_in_flight_counts_while_running_even_on_error() -> None:
    t = Telemetry(rpcs=["Explain"])
    assert value(t, "faceaudit_jobs_in_flight", rpc="Explain") == 0
    with t.in_flight("Explain"), t.in_flight("Explain"):
        assert value(t, "faceaudit_jobs_in_flight", rpc="Explain") == 2
    with pytest.raises(RuntimeError), t.in_flight("Explain"):
        raise RuntimeError("boom")
    assert value(t, "faceaudit_jobs_in_flight", rpc="Explain") == 0


def test_models_loaded_and_unloaded_series_removed() -> None:
    t = Telemetry()
    t.model_loaded("a", 100)
    t.model_loaded("b", 200)
    t.model_loaded("a", 100)  # re-registering a name is not a second model
    assert value(t, "faceaudit_models_loaded") == 2
    assert value(t, "faceaudit_model_size_bytes", model="b") == 200
    assert value(t, "faceaudit_forward_passes_total", model="b") == 0  # shown at once
    t.observe_batch("b", 3, [0.0], 0.01)
    t.model_unloaded("b")
    t.model_unloaded("never-loaded")
    assert value(t, "faceaudit_models_loaded") == 1
    assert all('model="b"' not in line for line in t.exposition().decode().splitlines())


def test_two_instances_do_not_share_metrics() -> None:
    a, b = Telemetry(), Telemetry()  # would raise "Duplicated timeseries" on a shared registry
    a.observe_request("Explain", "", "OK", 1.0)
    assert value(b, "faceaudit_requests_total", rpc="Explain", method="", code="OK") is None


def test_http_endpoint_serves_metrics_then_closes() -> None:
    t = busy()
    server = t.serve_http(0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        server.close()
    served = {f.name: f for f in text_string_to_metric_families(body)}
    forward = [s for s in served["faceaudit_forward_passes"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in forward] == [({"model": "arcface"}, 48.0)]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_a_batcher_reports_into_the_telemetry(rng) -> None:
    t = Telemetry()
    model = prepared(zoo.linear_classifier(), max_batch=8)
    batcher = Batcher(model.session, model="linear", max_queue_delay=0.0, observer=t)
    try:
        for n in (3, 8):
            batcher.submit(rng.uniform(0, 1, (n, 3, 8, 8)).astype(np.float32)).result(5)
    finally:
        batcher.close()
    assert value(t, "faceaudit_forward_passes_total", model="linear") == 11
    assert value(t, "faceaudit_batch_size_count", model="linear") == 2
    assert value(t, "faceaudit_batch_size_bucket", model="linear", le="4.0") == 1
    assert value(t, "faceaudit_queue_seconds_count", model="linear") == 2
    assert value(t, "faceaudit_queue_depth", model="linear") == 0
