"""onnxruntime sessions: execution provider, threads, and shape-stable batched runs.

`Session.run` takes any batch size up to `max_batch` and pads it to a power of two (or to the
model's fixed batch size), so the runtime sees at most log2(max_batch) + 1 distinct shapes. A new
input shape costs onnxruntime fresh allocations (and on CUDA, new kernel plans); a fixed set of
shapes keeps steady-state runs at full speed.

A run can be ended from another thread (`RunStop`: a time budget, a cancelled call). onnxruntime
reads the stop flag between nodes, inside Loop and Scan bodies too, so even a never-ending Loop ends
within one iteration; a single long node still runs to its end. A run given no stop of its own reads
the stop of the work in progress (`stopping_with`, a context variable: a gRPC call sets its own), so
every session made for that work — games' layer sessions, white-box ones — ends with it.
"""

from __future__ import annotations

import contextlib
import copy
import contextvars
import functools
import math
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort

from faceaudit.errors import InvalidRequest, RuntimeUnavailable, UnsupportedModel

Provider = Literal["auto", "cpu", "cuda"]
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class RuntimeOptions:
    """How models are run. `exact` runs one image per call (see `BatchBehaviour.dependent`)."""

    provider: Provider = "auto"
    threads: int | None = None  # intra-op threads; None = the CPUs this process may use
    max_batch: int = 64
    # One input batch stays under this many bytes: onnxruntime's activations grow with the batch,
    # so large inputs (224×224 and up) run in smaller batches to bound peak memory.
    max_batch_bytes: int = 16 << 20
    exact: bool = False
    # Preparation's probe runs (a few forward passes of one to four images) must end within this many
    # seconds together, or the model is refused: a graph that loops without end must not hold a core.
    probe_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.provider not in ("auto", "cpu", "cuda"):
            raise InvalidRequest("provider", f"{self.provider!r} is not one of auto, cpu, cuda")
        if not 1 <= self.max_batch <= 4096:
            raise InvalidRequest("max_batch", f"{self.max_batch} is outside 1..4096")
        if self.max_batch_bytes < 1:
            raise InvalidRequest("max_batch_bytes", f"{self.max_batch_bytes} must be positive")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise InvalidRequest("threads", f"{self.threads} is outside 1..1024")
        if isinstance(self.probe_seconds, bool) or not (
                isinstance(self.probe_seconds, (int, float)) and 0 < self.probe_seconds < math.inf):
            raise InvalidRequest("probe_seconds", f"{self.probe_seconds!r} must be a positive number of seconds")


class RunStopped(Exception):
    """A Session.run ended by its RunStop; the message is the stop's reason (callers translate it)."""


class RunStop:
    """Ends `Session.run` calls from another thread. Once stopped, every run given it fails at once."""

    def __init__(self) -> None:
        self.options = ort.RunOptions()
        self.reason: str | None = None
        self._lock = threading.Lock()

    def stop(self, reason: str) -> None:
        """Ask onnxruntime to end the runs given this RunStop; the first reason is kept."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
                self.options.terminate = True


# The stop of the work this thread (context) does; runs that are given no stop of their own use it.
_current_stop: contextvars.ContextVar[RunStop | None] = contextvars.ContextVar("faceaudit_run_stop", default=None)


@contextlib.contextmanager
def stopping_with(stop: RunStop) -> Iterator[None]:
    """Within the block, every run in this context that is given no stop of its own ends with `stop`."""
    token = _current_stop.set(stop)
    try:
        yield
    finally:
        _current_stop.reset(token)


def run_stoppable(session: ort.InferenceSession, outputs: Sequence[str], feeds: dict[str, np.ndarray],
                  stop: RunStop | None = None) -> list[np.ndarray]:
    """`session.run`, ended by `stop` or else by the stop of the work in progress; RunStopped when it was."""
    stop = stop if stop is not None else _current_stop.get()
    try:
        return session.run(list(outputs), feeds, None if stop is None else stop.options)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's untyped Fail; re-raised unless we stopped it
        if stop is not None and stop.reason is not None:
            raise RunStopped(stop.reason) from exc
        raise


def available_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: affinity mask, bounded by a cgroup v2 CPU quota if one is set."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup_cpu_max.read_text(encoding="ascii").split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def resolve_provider(provider: Provider) -> str:
    available = ort.get_available_providers()
    if provider == "auto":
        name = _PROVIDERS["cuda"] if _PROVIDERS["cuda"] in available else _PROVIDERS["cpu"]
    else:
        name = _PROVIDERS[provider]
        if name not in available:
            raise RuntimeUnavailable(
                f"provider: {provider} was asked for but this onnxruntime ({ort.__version__}) offers only "
                f"{', '.join(available)}; on a CUDA host install onnxruntime-gpu instead of onnxruntime"
            )
    if name == _PROVIDERS["cuda"]:
        load_cuda_libraries()
    return name


@functools.cache
def load_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries that pip installs (onnxruntime-gpu[cuda,cudnn], deploy/Dockerfile.gpu)
    before the first CUDA session: onnxruntime finds only those on the loader path by itself. Once per
    process; onnxruntime prints what it cannot load, sent to stderr here (stdout may carry a command's
    JSON). A CUDA provider that still cannot start is reported by Session."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime ≥ 1.21
    if preload is None:
        return
    with contextlib.redirect_stdout(sys.stderr):
        try:
            preload()
        except Exception:  # noqa: BLE001 - libraries on the default loader path (a CUDA base image) still work
            pass


def bucket(n: int, max_batch: int) -> int:
    """The padded batch size for n images: the next power of two, capped at max_batch."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max_batch)


class Session:
    """One onnxruntime session reading one output of a model.

    `fixed_batch` is set for models that only run at one batch size (a graph that hard-codes it);
    every call is then padded to exactly that size.
    """

    def __init__(
        self, model: onnx.ModelProto, input_name: str, output_names: list[str], options: RuntimeOptions,
        *, fixed_batch: int | None = None,
    ) -> None:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.threads or available_cpus()
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Failures surface as exceptions with their message; onnxruntime's own log would repeat them.
        session_options.log_severity_level = 4
        provider = resolve_provider(options.provider)
        providers = [provider] if provider == _PROVIDERS["cpu"] else [provider, _PROVIDERS["cpu"]]
        try:
            self._session = ort.InferenceSession(model.SerializeToString(), session_options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped Fail/InvalidGraph/NotImplemented
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UnsupportedModel(f"onnxruntime {ort.__version__} cannot load the model: {first}") from exc
        self.provider = self._session.get_providers()[0]
        if options.provider == "cuda" and self.provider != _PROVIDERS["cuda"]:
            raise RuntimeUnavailable("provider: cuda was asked for but onnxruntime could not start it (CUDA/cuDNN libraries?)")
        self.input_name = input_name
        self.output_names = output_names
        self.fixed_batch = fixed_batch
        self.max_batch = fixed_batch or options.max_batch
        self.threads = session_options.intra_op_num_threads

    def with_max_batch(self, max_batch: int) -> Session:
        """The same onnxruntime session, called with at most `max_batch` images at a time."""
        if self.fixed_batch is not None:
            raise ValueError(f"this session only runs at batch {self.fixed_batch}")
        limited = copy.copy(self)
        limited.max_batch = min(self.max_batch, max_batch)
        return limited

    def padded_size(self, n: int) -> int:
        return self.fixed_batch or bucket(n, self.max_batch)

    def run(self, batch: np.ndarray, stop: RunStop | None = None) -> list[np.ndarray]:
        """Outputs for a batch of model inputs (len ≤ max_batch); padding rows are cut off again.

        RunStopped when `stop` (without it: the stop of the work in progress, `stopping_with`) ended the run.
        """
        n = len(batch)
        size = self.padded_size(n)
        if n < size:
            padded = np.zeros((size, *batch.shape[1:]), dtype=batch.dtype)
            padded[:n] = batch
            batch = padded
        outputs = run_stoppable(self._session, self.output_names, {self.input_name: batch}, stop)
        for name, value in zip(self.output_names, outputs):
            if value.ndim == 0 or value.shape[0] != size:
                raise UnsupportedModel(
                    f"output {name!r} has shape {list(value.shape)} for a batch of {size}: it has no batch "
                    "dimension, so faceaudit cannot tell which image a value belongs to"
                )
        return [o[:n] for o in outputs]

    def run_raw(self, batch: np.ndarray) -> list[np.ndarray]:
        """One unpadded runtime call, as a caller of onnxruntime would make it (benchmarks, probes)."""
        return self._session.run(self.output_names, {self.input_name: batch})
