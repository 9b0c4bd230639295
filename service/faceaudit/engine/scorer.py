"""The scoring engine: a stream of perturbed images in, one score per image out.

Every black-box method and metric scores its perturbations here. Images arrive as a stream of
chunks (B_i, H, W, 3), float32 RGB in [0, 255] at the model's input size, of any sizes; they are
converted into reused batch buffers, run in runtime-sized batches, and their scores come back
chunk by chunk in the same sizes. Two buffers alternate: the runtime (which releases the GIL) runs
one batch on a worker thread while the caller's perturbations fill the other, so generation and
preprocessing overlap inference. At most two batches and one chunk are alive at a time, so
scoring a million perturbations needs the same memory as scoring a thousand; a consumer that stops
iterating (a cancelled request) stops the work after the batch in flight.

Scores:
- classifier, `ClassTarget(k)`: the model's output k, or softmax(output)_k when the spec asks for
  softmax; shape (B,).
- embedding, `EmbeddingTarget(refs)`: cosine similarity of the image's embedding to each reference
  row; shape (B,) for one reference, (B, R) for several (probe-to-mate and probe-to-non-mate for
  contrastive methods).
- `OutputTarget()`: the selected output itself, flattened per image to (B, output_size); for
  methods that perturb both faces of a pair and compare the embeddings, and landmark models.
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from faceaudit.engine.phases import PhaseClock, current_clock
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RunStopped
from faceaudit.engine.threads import single_threaded_blas
from faceaudit.errors import FaceAuditError, InvalidRequest, ModelOutputError
from faceaudit.images.preprocess import model_input_shape, to_model_input


@dataclass(frozen=True)
class ClassTarget:
    index: int


@dataclass(frozen=True)
class EmbeddingTarget:
    references: np.ndarray  # (R, D) or (D,) reference embeddings; normalised here


@dataclass(frozen=True)
class OutputTarget:
    """Score = the raw output row (embeddings of perturbed probes and mates alike)."""


Target = ClassTarget | EmbeddingTarget | OutputTarget


@dataclass
class ScoringStats:
    """Counters of one scorer, for progress and for reporting which runtime did the work."""

    images: int = 0
    batches: int = 0
    runtime_seconds: float = 0.0
    provider: str = ""
    batch_sizes: set[int] = field(default_factory=set)  # padded sizes the runtime has seen


class Scorer:
    """Scores images of one prepared model against one target."""

    def __init__(self, model: PreparedModel, target: Target) -> None:
        self.model = model
        self.spec = model.spec
        self._kind = None if isinstance(target, OutputTarget) else self.spec.require("kind")
        self._references = self._check_target(target)
        self._index = int(target.index) if isinstance(target, ClassTarget) else -1
        self._raw = isinstance(target, OutputTarget)
        self._softmax = self._kind == "classifier" and self.spec.softmax
        self._runner = _BatchRunner(model)
        self.stats = self._runner.stats

    def _check_target(self, target: Target) -> np.ndarray | None:
        if isinstance(target, OutputTarget):  # any per-image shape: rows come back flattened
            return None
        self.model.check_vector_output()
        size = self.model.output_size
        if self._kind == "classifier":
            if not isinstance(target, ClassTarget):
                raise InvalidRequest("target", "a classifier needs a class index target")
            if isinstance(target.index, bool) or not isinstance(target.index, (int, np.integer)):
                raise InvalidRequest("target", f"class index {target.index!r} is not an integer")
            if not 0 <= int(target.index) < size:
                raise InvalidRequest("target", f"class index {target.index} is outside 0..{size - 1}")
            return None
        if not isinstance(target, EmbeddingTarget):
            raise InvalidRequest("target", "an embedding model needs reference embeddings (mate, non-mate)")
        refs = np.atleast_2d(np.asarray(target.references, dtype=np.float64))
        if refs.ndim != 2 or refs.shape[1] != size:
            raise InvalidRequest("target", f"reference embeddings must have {size} values each, got shape {refs.shape}")
        norms = np.linalg.norm(refs, axis=1, keepdims=True)
        if not np.isfinite(refs).all() or (norms == 0).any():
            raise InvalidRequest("target", "reference embeddings must be finite and non-zero")
        return refs / norms

    def score(self, chunks: Iterable[np.ndarray]) -> np.ndarray:
        """All scores of a stream of image chunks, concatenated."""
        parts = list(self.stream(chunks))
        return np.concatenate(parts) if parts else np.zeros((0,))

    def stream(self, chunks: Iterable[np.ndarray], *, flush: bool = False) -> Iterator[np.ndarray]:
        """Yield the scores of each chunk, in order, as soon as the chunk is fully scored.

        By default one batch runs while the next fills, so a chunk's scores can wait for the
        following chunk. With `flush`, each chunk is scored completely (a partial last batch is
        padded) and yielded before the next chunk is asked for: a caller that decides after every
        chunk whether to go on (early stopping) then never pays for perturbations it did not want.
        """
        runner = self._runner
        clock = current_clock()
        capacity = len(runner.buffers[0])
        filled = 0
        sizes: deque[int] = deque()  # chunks not yet yielded
        scored: deque[np.ndarray] = deque()  # scores not yet yielded
        ready = 0
        batches = sent = 0  # batches and images of this stream run so far, for error messages
        with single_threaded_blas(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceaudit-runtime") as pool:
            in_flight: Future[np.ndarray] | None = None
            current = 0

            def submit(count: int) -> None:
                nonlocal in_flight, ready, batches, sent, current
                if in_flight is not None:
                    waited = time.perf_counter()
                    scored.append(in_flight.result())
                    clock.inference += time.perf_counter() - waited
                    ready += len(scored[-1])
                # The runtime thread runs in this thread's context: a call's stop (runtime.stopping_with)
                # reaches sessions made for the call (the sanity check's randomised models).
                in_flight = pool.submit(contextvars.copy_context().run, self._score_buffer, current, count, batches,
                                        sent)
                batches, sent, current = batches + 1, sent + count, 1 - current

            for chunk in _timed(chunks, clock):
                _check_chunk(chunk)
                sizes.append(len(chunk))
                start = 0
                while start < len(chunk):
                    take = min(capacity - filled, len(chunk) - start)
                    converting = time.perf_counter()
                    to_model_input(chunk[start : start + take], self.spec, out=runner.buffers[current][filled : filled + take])
                    clock.perturbation += time.perf_counter() - converting
                    filled += take
                    start += take
                    if filled == capacity:
                        submit(filled)
                        filled = 0
                if flush:
                    if filled:
                        submit(filled)
                        filled = 0
                    if in_flight is not None:
                        waited = time.perf_counter()
                        scored.append(in_flight.result())
                        clock.inference += time.perf_counter() - waited
                        ready += len(scored[-1])
                        in_flight = None
                while sizes and ready >= sizes[0]:
                    ready -= sizes[0]
                    handed = time.perf_counter()
                    yield _take(scored, sizes.popleft())
                    clock.aggregation += time.perf_counter() - handed
            waited = time.perf_counter()
            if in_flight is not None:
                scored.append(in_flight.result())
            if filled:
                scored.append(self._score_buffer(current, filled, batches, sent))
            clock.inference += time.perf_counter() - waited
        while sizes:
            handed = time.perf_counter()
            yield _take(scored, sizes.popleft())
            clock.aggregation += time.perf_counter() - handed

    def _score_buffer(self, buffer: int, n: int, batch: int, first: int) -> np.ndarray:
        """Scores of the first n images in a buffer: the stream's `batch`-th batch, from image `first` on."""
        out = self._runner.run(buffer, n, f"batch {batch} (images {first}..{first + n - 1} of this stream)")
        if self._raw:
            return out
        if self._references is None:
            if self._softmax:
                shifted = np.exp(out - out.max(axis=1, keepdims=True), dtype=np.float64)
                return shifted[:, self._index] / shifted.sum(axis=1)
            return out[:, self._index].astype(np.float64)
        emb = out.astype(np.float64)
        norms = np.linalg.norm(emb, axis=1)
        if (norms == 0).any():
            raise ModelOutputError(
                f"the model returned an all-zero embedding for image {first + int(np.argmin(norms))}: cosine undefined"
            )
        cos = (emb @ self._references.T) / norms[:, None]
        # float64: a cosine near 1 that varies in the sixth decimal is signal, not float32 rounding.
        return cos[:, 0] if len(self._references) == 1 else cos


def _check_chunk(chunk: np.ndarray) -> None:
    if not isinstance(chunk, np.ndarray) or chunk.ndim != 4:
        raise InvalidRequest("images", f"each chunk must be a (B, H, W, 3) array, got {getattr(chunk, 'shape', type(chunk))}")
    # A sum is NaN or infinite if any element is, and costs no temporary array (pixels are ≤ 255).
    if chunk.dtype.kind == "f" and not np.isfinite(np.add.reduce(chunk, axis=None, dtype=np.float64)):
        raise InvalidRequest("images", "a chunk contains NaN or infinite pixel values")


class _BatchRunner:
    """One reusable input buffer of runtime batch size, run through the model's session."""

    def __init__(self, model: PreparedModel) -> None:
        self._session = model.session
        self._output_index = self._session.output_names.index(model.spec.require("output_name"))
        shape = model_input_shape(model.spec, self._session.max_batch)
        self.buffers = (np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32))
        self.stats = ScoringStats(provider=self._session.provider)

    def run(self, buffer_index: int, n: int, where: str) -> np.ndarray:
        """Run the first n images of the buffer; the selected output as (n, output_size).

        `where` names the batch in an error message.
        """
        size = self._session.padded_size(n)
        buffer = self.buffers[buffer_index]
        buffer[n:size] = 0.0  # stale rows would make a batch-dependent model's result depend on history
        started = time.perf_counter()
        try:
            raw = self._session.run(buffer[:size])[self._output_index][:n]
        except (FaceAuditError, RunStopped):  # a stopped run is the caller's ending, not the model's failure
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's untyped runtime errors
            raise ModelOutputError(f"the model failed on {where}: {str(exc).strip().splitlines()[0]}") from exc
        self.stats.runtime_seconds += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.images += n
        self.stats.batch_sizes.add(size)
        out = raw.reshape(n, -1)
        if not np.isfinite(out).all():
            bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise ModelOutputError(f"the model returned NaN or infinite values in {where}; first bad row {bad}")
        return out


def embed(model: PreparedModel, images: np.ndarray) -> np.ndarray:
    """The selected output (B, output_size) for a batch of images, e.g. reference embeddings."""
    _check_chunk(images)
    runner = _BatchRunner(model)
    capacity = len(runner.buffers[0])
    rows = []
    for start in range(0, len(images), capacity):
        part = images[start : start + capacity]
        to_model_input(part, model.spec, out=runner.buffers[0][: len(part)])
        rows.append(runner.run(0, len(part), f"images {start}..{start + len(part) - 1}"))
    return np.concatenate(rows) if rows else np.zeros((0, model.output_size), dtype=np.float32)


def _timed(chunks: Iterable[np.ndarray], clock: PhaseClock) -> Iterator[np.ndarray]:
    """The chunks, with the time spent making each one added to the clock's perturbation phase."""
    iterator = iter(chunks)
    while True:
        started = time.perf_counter()
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            clock.perturbation += time.perf_counter() - started
        yield chunk


def _take(scored: deque[np.ndarray], n: int) -> np.ndarray:
    """Pop exactly n leading scores off the queue of scored batches."""
    parts = []
    while n:
        head = scored[0]
        if len(head) <= n:
            parts.append(scored.popleft())
            n -= len(head)
        else:
            parts.append(head[:n])
            scored[0] = head[n:]
            n = 0
    if not parts:
        return np.zeros((0,) + scored[0].shape[1:] if scored else (0,))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
